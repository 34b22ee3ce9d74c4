"""Watch-fed caches: one daemon thread per kind lists, then watches, and keeps a store.

The admission path only ever reads the stores (``MemoryClusterView``): it never waits on
the API server. Each thread follows the usual reflector protocol: list (paginated), then
watch from the list's resourceVersion with bookmarks; when the watch ends it resumes from
the last version seen; when that version is too old (410 Gone) it lists again. A kind
whose CRD is not installed (no Gateway API, no Istio) counts as synced and empty, and is
looked for again every minute.

The watch calls go through the official client's ApiClient (its kubeconfig / in-cluster
configuration, TLS and auth) by path, rather than through ``kubernetes.watch.Watch``
over typed list functions: one generic loop then serves every kind, CRDs included, as the
raw dicts the core reads, and the 410 and bookmark handling is explicit here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from webhook.core.cached import cached_form
from webhook.kube.http import KubeError, KubeHttp
from webhook.kube.resources import Resource

log = logging.getLogger(__name__)

PAGE_SIZE = 500
WATCH_SECONDS = 300
ABSENT_RETRY_SECONDS = 60.0
MAX_BACKOFF_SECONDS = 30.0


class Store(Protocol):
    """Where a reflector puts what it sees."""

    def replace(self, items: list[dict[str, Any]]) -> None: ...

    def upsert(self, obj: dict[str, Any]) -> None: ...

    def remove(self, obj: dict[str, Any]) -> None: ...


def slim(obj: Mapping[str, Any], resource: Resource) -> dict[str, Any]:
    """The object as the caches keep it: kind filled in (lists leave it out), and only the
    fields a decision reads (``webhook.core.cached.cached_form``: no managedFields, the
    biggest part of most objects, and no pod spec, the biggest part of a Deployment)."""
    out = cached_form(resource.kind, obj)
    out["apiVersion"] = resource.api_version
    out["kind"] = resource.kind
    return out


class Reflector:
    def __init__(
        self,
        http: KubeHttp,
        resource: Resource,
        store: Store,
        *,
        namespace: str = "",
        field_selector: str = "",
        on_synced: Callable[[], None] | None = None,
    ) -> None:
        self.http = http
        self.resource = resource
        self.store = store
        self.namespace = namespace
        self.field_selector = field_selector
        self.synced = threading.Event()
        self._on_synced = on_synced
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"watch-{resource.plural}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _mark_synced(self) -> None:
        if not self.synced.is_set():
            self.synced.set()
            if self._on_synced is not None:
                self._on_synced()

    def _query(self, extra: list[tuple[str, str]]) -> list[tuple[str, str]]:
        query = list(extra)
        if self.field_selector:
            query.append(("fieldSelector", self.field_selector))
        return query

    def list_all(self) -> str:
        """Replace the store with a fresh list; the list's resourceVersion."""
        items: list[dict[str, Any]] = []
        cont = ""
        path = self.resource.collection_path(self.namespace)
        while True:
            query = [("limit", str(PAGE_SIZE))] + ([("continue", cont)] if cont else [])
            page = self.http.request("GET", path, query=self._query(query), timeout=60)
            items.extend(slim(o, self.resource) for o in page.get("items") or [])
            meta = page.get("metadata") or {}
            cont = str(meta.get("continue") or "")
            if not cont:
                self.store.replace(items)
                return str(meta.get("resourceVersion", ""))

    def watch_from(self, version: str) -> str | None:
        """Apply events until the server ends the watch: the last version, or None (410)."""
        query = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", version),
            ("timeoutSeconds", str(WATCH_SECONDS)),
        ]
        path = self.resource.collection_path(self.namespace)
        for event in self.http.watch(
            path, query=self._query(query), timeout=(10.0, WATCH_SECONDS + 30.0)
        ):
            if self._stop.is_set():
                return version
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    return None
                raise KubeError(int(obj.get("code") or 0), str(obj.get("message", "")))
            version = str((obj.get("metadata") or {}).get("resourceVersion", version))
            if kind in ("ADDED", "MODIFIED"):
                self.store.upsert(slim(obj, self.resource))
            elif kind == "DELETED":
                self.store.remove(slim(obj, self.resource))
        return version

    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                version: str | None = self.list_all()
                self._mark_synced()
                backoff = 1.0
                while version is not None and not self._stop.is_set():
                    version = self.watch_from(version)
            except KubeError as err:
                if self._stop.is_set():
                    return
                if err.status == 404 and self.resource.optional:
                    self.store.replace([])
                    self._mark_synced()
                    log.info("%s not served (CRD not installed)", self.resource.plural)
                    self._stop.wait(ABSENT_RETRY_SECONDS)
                    continue
                log.warning("watch of %s failed: %s", self.resource.plural, err)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            except Exception as err:
                if self._stop.is_set():
                    return
                # Connections drop (API server restarts, load balancers): list again.
                log.warning(
                    "watch of %s failed, listing again: %s: %s",
                    self.resource.plural,
                    type(err).__name__,
                    str(err).splitlines()[0] if str(err) else "",
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
