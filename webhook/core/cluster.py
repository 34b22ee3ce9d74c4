"""The cluster as the product's decisions see it: interfaces and values only.

Reads go to in-memory caches a watch keeps current (``webhook.kube.view``), so they never
block; writes are blocking calls to the API server (``webhook.kube.writer``), made off the
event loop. The core reads through ``ClusterLister`` / ``ClusterReader``; the admission
server and the reconciler consume them and ``ClusterWriter``; the ``webhook.kube``
adapters implement them, and tests pass in-memory fakes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from webhook.core.review import UserInfo


class ClusterLister(Protocol):
    """Cached objects, by kind: all that planning a reconcile reads."""

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """One object (``namespace`` is "" for cluster-scoped kinds)."""
        ...

    def list(self, kind: str, namespace: str) -> tuple[dict[str, Any], ...]:
        """Every cached object of a kind in a namespace ("": in every namespace)."""
        ...


class ClusterReader(ClusterLister, Protocol):
    """What the admission decision reads of the cluster: cached objects, by kind, and by
    index key."""

    def indexed(self, kind: str, namespace: str, keys: Iterable[str]) -> tuple[dict[str, Any], ...]:
        """Objects of a kind in a namespace kept under any of these ``webhook.core.index``
        keys (a superset of what matches; the caller applies its own tests)."""
        ...


@dataclass(frozen=True, order=True)
class Permission:
    """A right a SubjectAccessReview asks about: a verb on a resource (in a namespace)."""

    verb: str
    group: str
    resource: str

    def __str__(self) -> str:
        return (
            f"{self.verb} {self.resource}.{self.group}"
            if self.group
            else (f"{self.verb} {self.resource}")
        )


CREATE_ROLLOUTS = Permission("create", "argoproj.io", "rollouts")


@dataclass(frozen=True)
class AccessDecision:
    """The answer of a SubjectAccessReview, and why (shown to the user when it is no)."""

    allowed: bool
    reason: str
    missing: tuple[Permission, ...] = ()
    """Of several rights asked about at once, those not granted."""


class ClusterWriter(Protocol):
    """Blocking calls to the API server: never call them on the event loop."""

    def may(
        self, user: UserInfo, namespace: str, permission: Permission, *, timeout: float
    ) -> AccessDecision:
        """A SubjectAccessReview: may this user do ``permission`` in the namespace?"""
        ...

    def may_scale_rollout(
        self, user: UserInfo, namespace: str, name: str, *, timeout: float
    ) -> AccessDecision:
        """A SubjectAccessReview: may this user patch rollouts.argoproj.io/NAME's scale
        subresource here (what ``kubectl scale rollout NAME`` needs)?"""
        ...

    def apply(self, manifest: Mapping[str, Any], *, timeout: float) -> None:
        """Server-side apply with the product's one field manager; raises on failure."""
        ...
