"""In-memory stand-ins for the API server with its conflict semantics (unit tests only)."""

from __future__ import annotations

import copy
import threading
from dataclasses import replace
from typing import Any

import jsonpatch

from certs.inject import Kind, WebhookEntry
from certs.leader import LeaseConflict, LeaseRecord, LeaseRef
from certs.store import SecretConflict, SecretRef, StoredSecret


class FakeSecretAPI:
    """Secrets keyed by ref; every write bumps resourceVersion; stale writes get 409.

    With ``racers=N`` the first N writes (create or replace) wait for each other before
    going ahead, so N writers are forced to act on the same stale read: a real race.
    """

    def __init__(self, racers: int = 0) -> None:
        self._lock = threading.Lock()
        self._items: dict[SecretRef, StoredSecret] = {}
        self._version = 0
        self._gated = racers
        self._barrier = threading.Barrier(racers) if racers else None
        self.writes: list[tuple[str, SecretRef]] = []
        self.conflicts = 0

    def get(self, ref: SecretRef) -> StoredSecret | None:
        with self._lock:
            return self._items.get(ref)

    def create(self, secret: StoredSecret) -> StoredSecret:
        self._race()
        with self._lock:
            if secret.ref in self._items:
                self.conflicts += 1
                raise SecretConflict(f"Secret {secret.ref} already exists")
            return self._store("create", secret)

    def replace(self, secret: StoredSecret) -> StoredSecret:
        self._race()
        with self._lock:
            current = self._items.get(secret.ref)
            if current is None or current.resource_version != secret.resource_version:
                self.conflicts += 1
                raise SecretConflict(f"Secret {secret.ref} changed since it was read")
            return self._store("replace", secret)

    def _race(self) -> None:
        with self._lock:
            wait = self._gated > 0
            self._gated -= 1 if wait else 0
        if wait and self._barrier is not None:
            self._barrier.wait(timeout=10)

    def put(self, secret: StoredSecret) -> StoredSecret:
        """Write without preconditions (a test arranging state, or an admin's kubectl)."""
        with self._lock:
            return self._store("put", secret)

    def _store(self, verb: str, secret: StoredSecret) -> StoredSecret:
        self._version += 1
        stored = replace(
            secret,
            data=dict(secret.data),
            annotations=dict(secret.annotations),
            resource_version=str(self._version),
        )
        self._items[secret.ref] = stored
        self.writes.append((verb, secret.ref))
        return stored


class FakeWebhookConfigAPI:
    """Webhook configurations as full dicts; patches applied with real RFC 6902 semantics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.patches: list[tuple[str, str, list[dict[str, Any]]]] = []

    def add(self, kind: Kind, name: str, webhook_names: list[str]) -> dict[str, Any]:
        obj = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": kind,
            "metadata": {"name": name, "labels": {"owner": "helm"}},
            "webhooks": [
                {
                    "name": hook,
                    "clientConfig": {
                        "service": {
                            "name": "rollout-webhook",
                            "namespace": "rollout-system",
                            "path": "/mutate",
                        }
                    },
                    "rules": [
                        {
                            "operations": ["CREATE"],
                            "apiGroups": ["apps"],
                            "resources": ["deployments"],
                        }
                    ],
                    "sideEffects": "NoneOnDryRun",
                    "admissionReviewVersions": ["v1"],
                }
                for hook in webhook_names
            ],
        }
        self.objects[(kind, name)] = obj
        return obj

    def get_webhooks(self, kind: Kind, name: str) -> list[WebhookEntry] | None:
        with self._lock:
            obj = self.objects.get((kind, name))
            if obj is None:
                return None
            return [
                WebhookEntry(h["name"], h["clientConfig"].get("caBundle", ""))
                for h in obj["webhooks"]
            ]

    def patch(self, kind: Kind, name: str, patch: list[dict[str, Any]]) -> None:
        with self._lock:
            obj = self.objects[(kind, name)]
            # Raises JsonPatchTestFailed when a guarded index no longer holds that webhook.
            self.objects[(kind, name)] = jsonpatch.apply_patch(copy.deepcopy(obj), patch)
            self.patches.append((kind, name, patch))


class FakeLeaseAPI:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: dict[LeaseRef, LeaseRecord] = {}
        self._version = 0

    def get(self, ref: LeaseRef) -> LeaseRecord | None:
        with self._lock:
            return self.items.get(ref)

    def create(self, ref: LeaseRef, record: LeaseRecord) -> LeaseRecord:
        with self._lock:
            if ref in self.items:
                raise LeaseConflict(f"Lease {ref} already exists")
            return self._store(ref, record)

    def replace(self, ref: LeaseRef, record: LeaseRecord) -> LeaseRecord:
        with self._lock:
            current = self.items.get(ref)
            if current is None or current.resource_version != record.resource_version:
                raise LeaseConflict(f"Lease {ref} changed since it was read")
            return self._store(ref, record)

    def _store(self, ref: LeaseRef, record: LeaseRecord) -> LeaseRecord:
        self._version += 1
        stored = replace(record, resource_version=str(self._version))
        self.items[ref] = stored
        return stored
