"""The small interfaces between the admission server and the cluster.

The server reads the cluster only through ``ClusterView`` (in-memory caches a watch
keeps current; reads never block) and writes only through ``ClusterWriter`` (blocking
calls, made off the event loop). Tests pass in-memory fakes of both; production passes
``webhook.kube`` adapters.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from webhook.core.index import NO_KEYS, index_keys
from webhook.core.review import UserInfo

# The kinds the caches hold, keyed by the names the decision code uses.
CACHED_KINDS = (
    "Namespace",
    "Deployment",
    "Service",
    "HorizontalPodAutoscaler",
    "HTTPRoute",
    "VirtualService",
    "Rollout",
)


class ClusterView(Protocol):
    """Read-only, non-blocking views of cached objects."""

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """One object (``namespace`` is "" for cluster-scoped kinds)."""
        ...

    def list(self, kind: str, namespace: str) -> tuple[dict[str, Any], ...]:
        """Every cached object of a kind in a namespace ("": in every namespace)."""
        ...

    def synced(self) -> bool:
        """True once every cache has completed its first list."""
        ...


@dataclass(frozen=True)
class AccessDecision:
    allowed: bool
    reason: str


class ClusterWriter(Protocol):
    """Blocking calls to the API server: never call them on the event loop."""

    def may_create_rollouts(
        self, user: UserInfo, namespace: str, *, timeout: float
    ) -> AccessDecision:
        """A SubjectAccessReview: may this user create rollouts.argoproj.io here?"""
        ...

    def apply(self, manifest: Mapping[str, Any], *, timeout: float) -> None:
        """Server-side apply with the product's one field manager; raises on failure."""
        ...


class MemoryClusterView:
    """A thread-safe in-memory view: the cache store of the watches, and the test fake.

    Kept by (kind, namespace), so listing a namespace costs its size, not the cluster's;
    and Services, HPAs and routes also under their index keys (``webhook.core.index``), so
    the admission of a Deployment finds its neighbours at the cost of the matches.
    """

    def __init__(self, objects: Iterable[Mapping[str, Any]] = (), *, synced: bool = True):
        self._lock = threading.Lock()
        self._objects: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self._index: dict[tuple[str, str], dict[str, set[str]]] = {}
        """(kind, namespace) -> index key -> names."""
        self._keys: dict[tuple[str, str, str], frozenset[str]] = {}
        """(kind, namespace, name) -> the index keys it is kept under."""
        self._synced = synced
        for obj in objects:
            self.put(obj)

    @staticmethod
    def key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
        meta = obj.get("metadata") or {}
        return (str(obj.get("kind", "")), str(meta.get("namespace", "")), str(meta["name"]))

    def put(self, obj: Mapping[str, Any]) -> None:
        kind, namespace, name = self.key(obj)
        keys = index_keys(kind, obj)
        with self._lock:
            self._objects.setdefault((kind, namespace), {})[name] = dict(obj)
            self._reindex(kind, namespace, name, keys)

    def delete(self, obj: Mapping[str, Any]) -> None:
        kind, namespace, name = self.key(obj)
        with self._lock:
            self._objects.get((kind, namespace), {}).pop(name, None)
            self._reindex(kind, namespace, name, NO_KEYS)

    def replace_kind(self, kind: str, objects: Iterable[Mapping[str, Any]]) -> None:
        """Swap every object of one kind at once (a re-list after a watch expired)."""
        fresh: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        keys: dict[tuple[str, str, str], frozenset[str]] = {}
        for obj in objects:
            _, namespace, name = self.key(obj)
            fresh.setdefault((kind, namespace), {})[name] = dict(obj)
            keys[(kind, namespace, name)] = index_keys(kind, obj)
        with self._lock:
            for key in [k for k in self._objects if k[0] == kind]:
                del self._objects[key]
            for pair in [k for k in self._index if k[0] == kind]:
                del self._index[pair]
            for triple in [k for k in self._keys if k[0] == kind]:
                del self._keys[triple]
            self._objects.update(fresh)
            for (_, namespace, name), found in keys.items():
                self._reindex(kind, namespace, name, found)

    def _reindex(self, kind: str, namespace: str, name: str, keys: frozenset[str]) -> None:
        """Under the lock: keep ``name`` under exactly ``keys``."""
        old = self._keys.pop((kind, namespace, name), NO_KEYS)
        if not old and not keys:
            return
        index = self._index.setdefault((kind, namespace), {})
        for key in old - keys:
            names = index[key]
            names.discard(name)
            if not names:
                del index[key]
        for key in keys - old:
            index.setdefault(key, set()).add(name)
        if keys:
            self._keys[(kind, namespace, name)] = keys

    def indexed(self, kind: str, namespace: str, keys: Iterable[str]) -> tuple[dict[str, Any], ...]:
        """The objects of a kind in a namespace kept under any of ``keys``, by name."""
        with self._lock:
            index = self._index.get((kind, namespace))
            if not index:
                return ()
            names: set[str] = set()
            for key in keys:
                names.update(index.get(key, ()))
            bucket = self._objects.get((kind, namespace), {})
            return tuple(bucket[n] for n in sorted(names) if n in bucket)

    def mark_synced(self, synced: bool = True) -> None:
        self._synced = synced

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._objects.get((kind, namespace), {}).get(name)

    def list(self, kind: str, namespace: str) -> tuple[dict[str, Any], ...]:
        with self._lock:
            if namespace:
                return tuple(self._objects.get((kind, namespace), {}).values())
            # As in the API: no namespace means all of them (cluster-scoped kinds live
            # under "" anyway).
            return tuple(
                obj
                for (k, _), bucket in self._objects.items()
                if k == kind
                for obj in bucket.values()
            )

    def synced(self) -> bool:
        return self._synced
