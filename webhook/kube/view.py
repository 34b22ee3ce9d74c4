"""The in-memory view of the cluster that the watches keep current.

Every replica's admission path, the reconciler and ``status`` read the cluster through
it: reads take a lock for a dictionary lookup and never wait on the API server. It
satisfies ``webhook.core.cluster.ClusterReader``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from webhook.core.index import NO_KEYS, index_keys


class MemoryClusterView:
    """A thread-safe in-memory view: the cache store of the watches, and the test fake.

    Kept by (kind, namespace), so listing a namespace costs its size, not the cluster's;
    and Services, HPAs and routes also under their index keys (``webhook.core.index``), so
    the admission of a Deployment finds its neighbours at the cost of the matches.
    """

    def __init__(self, objects: Iterable[Mapping[str, Any]] = (), *, synced: bool = True):
        self._lock = threading.Lock()
        self._objects: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self._index: dict[tuple[str, str], dict[str, str | set[str]]] = {}
        """(kind, namespace) -> index key -> names (one name as itself: most keys have one,
        and a set takes ten times the memory of the reference)."""
        self._keys: dict[tuple[str, str, str], str | frozenset[str]] = {}
        """(kind, namespace, name) -> the index keys it is kept under (one key as itself)."""
        self._namespaces: dict[str, dict[str, None]] = {}
        """kind -> the namespaces with a bucket of it, in the buckets' order: listing a kind
        in every namespace (or a cluster-scoped kind) visits its own buckets, not every
        bucket of every kind."""
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
            bucket = self._objects.get((kind, namespace))
            if bucket is None:
                bucket = self._objects[(kind, namespace)] = {}
                self._namespaces.setdefault(kind, {})[namespace] = None
            bucket[name] = dict(obj)
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
            self._namespaces[kind] = {namespace: None for _, namespace in fresh}
            for (_, namespace, name), found in keys.items():
                self._reindex(kind, namespace, name, found)

    def _reindex(self, kind: str, namespace: str, name: str, keys: frozenset[str]) -> None:
        """Under the lock: keep ``name`` under exactly ``keys``."""
        held = self._keys.pop((kind, namespace, name), NO_KEYS)
        old = frozenset((held,)) if isinstance(held, str) else held
        if not old and not keys:
            return
        index = self._index.setdefault((kind, namespace), {})
        for key in old - keys:
            names = index[key]
            if isinstance(names, str):
                del index[key]
                continue
            names.discard(name)
            if len(names) == 1:
                (index[key],) = names
        for key in keys - old:
            found = index.get(key)
            if found is None:
                index[key] = name
            elif isinstance(found, str):
                index[key] = {found, name}
            else:
                found.add(name)
        if keys:
            self._keys[(kind, namespace, name)] = next(iter(keys)) if len(keys) == 1 else keys

    def indexed(self, kind: str, namespace: str, keys: Iterable[str]) -> tuple[dict[str, Any], ...]:
        """The objects of a kind in a namespace kept under any of ``keys``, by name."""
        with self._lock:
            index = self._index.get((kind, namespace))
            if not index:
                return ()
            names: set[str] = set()
            for key in keys:
                found = index.get(key, ())
                if isinstance(found, str):
                    names.add(found)
                else:
                    names.update(found)
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
                for each in self._namespaces.get(kind, {})
                for obj in self._objects[(kind, each)].values()
            )

    def synced(self) -> bool:
        return self._synced
