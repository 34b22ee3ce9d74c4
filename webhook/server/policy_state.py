"""The policy in force, and its reload from the watched ConfigMap.

A valid new policy replaces the old one at once (admission reads ``current`` on every
request). An invalid one is refused: logged with every error, counted, and the last good
policy stays in force. A deleted ConfigMap brings back the built-in policy, the same
policy the product runs with when there never was a ConfigMap.

Whoever must act on a new policy (the reconciler: every opted-in service may have to
follow it) registers a listener; it is called on the watch thread after each change of
the policy in force, never for a refused one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from webhook.core.errors import PolicyInvalid
from webhook.core.policy import Policy, builtin_policy, policy_from_configmap

log = logging.getLogger(__name__)


class PolicyState:
    """Thread-safe holder: the watch thread writes, the event loop reads."""

    def __init__(
        self,
        initial: Policy | None = None,
        *,
        on_reload: Callable[[str], None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._policy = initial
        self._on_reload = on_reload
        self.last_error: PolicyInvalid | None = None
        self.listeners: list[Callable[[Policy], None]] = []

    @property
    def current(self) -> Policy | None:
        with self._lock:
            return self._policy

    @property
    def loaded(self) -> bool:
        return self.current is not None

    def set(self, policy: Policy) -> None:
        with self._lock:
            self._policy = policy

    def _changed(self, previous: Policy | None, policy: Policy) -> None:
        if previous is not None and previous.version == policy.version:
            return
        for listener in list(self.listeners):
            try:
                listener(policy)
            except Exception:  # one listener's bug must not stop the policy watch
                log.exception("policy listener failed")

    def _count(self, result: str) -> None:
        if self._on_reload is not None:
            self._on_reload(result)

    def apply_configmap(self, configmap: Mapping[str, Any]) -> bool:
        """Take the policy from an added or changed ConfigMap; False when refused."""
        try:
            policy = policy_from_configmap(configmap)
        except PolicyInvalid as err:
            self.last_error = err
            log.error("policy refused, the last good policy stays in force: %s", err)
            self._count("invalid")
            return False
        previous = self.current
        self.set(policy)
        self.last_error = None
        if previous is None or previous.version != policy.version:
            log.info("policy %s applied", policy.version)
            self._count("applied")
        self._changed(previous, policy)
        return True

    def configmap_absent(self, *, deleted: bool) -> None:
        """No ConfigMap (never created, or deleted): the built-in policy applies."""
        previous = self.current
        policy = builtin_policy()
        self.set(policy)
        self.last_error = None
        if deleted:
            log.warning("policy ConfigMap deleted: the built-in policy applies")
            self._count("removed")
        self._changed(previous, policy)
