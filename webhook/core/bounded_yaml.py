"""YAML from people the webhook does not trust, parsed within bounds.

An override annotation is written by whoever may edit a Deployment, and a policy
ConfigMap reaches the ``/validate`` webhook before anyone has checked it. Plain
``yaml.safe_load`` builds anchors and aliases into shared objects: a few hundred bytes of
nested aliases stand for billions of nodes once anything walks or copies the result
(the merge with the environment's block, the validator, the JSON copy of the Rollout),
and deep nesting exhausts the recursion limit. So this loader refuses anchors, aliases
and merge keys outright (nothing a Kubernetes manifest needs: JSON has none), caps the
text's size and the nesting depth, and raises a ``yaml.MarkedYAMLError`` naming the line,
which the callers already turn into a message for the user.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import Composer
from yaml.error import Mark
from yaml.events import AliasEvent, CollectionStartEvent, ScalarEvent
from yaml.nodes import Node

from webhook.core.nesting import exceeds_bracket_depth

MAX_DEPTH = 64
"""Far deeper than any policy or rollout block (about 8 levels) or Kubernetes object (about
20); shallow enough that nothing downstream comes near Python's recursion limit."""


class YAMLRefused(yaml.MarkedYAMLError):
    """Valid YAML that this loader will not build: anchors, aliases, too deep, too large."""


class _BoundedLoader(yaml.SafeLoader):
    max_depth = MAX_DEPTH

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, AliasEvent):
            raise YAMLRefused(
                problem="aliases (*name) are not accepted: write the value out",
                problem_mark=_mark(event),
            )
        if isinstance(event, ScalarEvent | CollectionStartEvent) and event.anchor is not None:
            raise YAMLRefused(
                problem="anchors (&name) are not accepted: write the value out",
                problem_mark=_mark(event),
            )
        if isinstance(event, CollectionStartEvent):
            self._depth += 1
            if self._depth > self.max_depth:
                raise YAMLRefused(
                    problem=f"nested deeper than {self.max_depth} levels",
                    problem_mark=_mark(event),
                )
            try:
                return Composer.compose_node(self, parent, index)
            finally:
                self._depth -= 1
        return Composer.compose_node(self, parent, index)


def _mark(event: Any) -> Mark:
    mark: Mark = event.start_mark
    return mark


def load_bounded(text: str, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """One YAML document as plain data, refusing anchors, aliases, merge keys (``<<``
    needs an alias), more than ``max_bytes`` of text and nesting past ``max_depth``.

    Raises ``yaml.YAMLError`` (``YAMLRefused`` for what is refused here)."""
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) > max_bytes:
        raise YAMLRefused(problem=f"{len(encoded)} bytes, over the limit of {max_bytes}")
    # PyYAML's scanner keeps a possible simple key per open flow collection and looks at
    # all of them for every token: its time grows with the square of the flow nesting
    # (20,000 brackets take seconds) before the composer, which counts depth, sees an event.
    if exceeds_bracket_depth(encoded, max_depth):
        raise YAMLRefused(problem=f"nested deeper than {max_depth} levels")
    loader = _BoundedLoader(text)
    loader.max_depth = max_depth
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
