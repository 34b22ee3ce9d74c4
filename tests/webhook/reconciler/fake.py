"""An in-memory API for the reconciler loop: the view it reads and the writer it calls.

Writes change the stored objects and feed a watch callback, as the real caches would.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from tests.builders import merge, server_side_apply

Obj = dict[str, Any]


class FakeAPI:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.events: list[tuple[str, str, str]] = []
        self.calls: list[str] = []
        self.watchers: list[Callable[[str, Obj, Obj | None], None]] = []
        """Told (kind, object, previous) after each change, as the caches' listeners are."""
        self.fail_next: dict[str, int] = {}
        self.lock = threading.Lock()
        self.orphan_deletes = 0

    # --- the view ----------------------------------------------------------
    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        with self.lock:
            obj = self.objects.get((kind, namespace, name))
            return copy.deepcopy(obj) if obj else None

    def list(self, kind: str, namespace: str) -> tuple[Obj, ...]:
        with self.lock:
            return tuple(
                copy.deepcopy(o)
                for (k, ns, _), o in sorted(self.objects.items())
                if k == kind and (not namespace or ns == namespace)
            )

    def put(self, obj: Obj) -> None:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("creationTimestamp", datetime.now(UTC).isoformat())
        key = (obj["kind"], meta.get("namespace", ""), meta["name"])
        with self.lock:
            previous = self.objects.get(key)
            self.objects[key] = copy.deepcopy(obj)
        for watch in self.watchers:
            watch(obj["kind"], obj, previous)

    def remove(self, kind: str, namespace: str, name: str) -> None:
        with self.lock:
            obj = self.objects.pop((kind, namespace, name), None)
        if obj is not None:
            for watch in self.watchers:
                watch(kind, obj, obj)

    # --- the writer --------------------------------------------------------
    def _maybe_fail(self, verb: str) -> None:
        if self.fail_next.get(verb, 0) > 0:
            self.fail_next[verb] -= 1
            raise RuntimeError(f"{verb} refused by the fake API")

    def apply(self, manifest: Mapping[str, Any], *, timeout: float) -> None:
        self._maybe_fail("apply")
        meta = manifest["metadata"]
        self.calls.append(f"apply {manifest['kind']} {meta['name']}")
        current = self.get(str(manifest["kind"]), meta.get("namespace", ""), meta["name"]) or {}
        self.put(server_side_apply(current, manifest))

    def patch(
        self, kind: str, namespace: str, name: str, patch: Mapping[str, Any], *, timeout: float
    ) -> None:
        self._maybe_fail("patch")
        self.calls.append(f"patch {kind} {name}")
        current = self.get(kind, namespace, name)
        if current is None:
            raise RuntimeError(f"{kind} {name} not found")
        self.put(merge(current, patch))

    def delete(self, kind: str, namespace: str, name: str, *, orphan: bool, timeout: float) -> None:
        self._maybe_fail("delete")
        self.calls.append(f"delete {kind} {name}")
        self.remove(kind, namespace, name)

    def delete_orphan_replicasets(
        self, namespace: str, selector: Mapping[str, str], *, timeout: float
    ) -> int:
        self.calls.append("delete orphan ReplicaSets")
        self.orphan_deletes += 1
        return 0

    def event(
        self,
        deployment: Mapping[str, Any],
        reason: str,
        message: str,
        event_type: str,
        *,
        timeout: float,
    ) -> None:
        self.events.append((deployment["metadata"]["name"], reason, event_type))
