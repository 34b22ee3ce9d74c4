"""The cluster adapters `serve` runs with: the watch-fed caches, the policy watch, the writer."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from certs.kube import load_api_client
from webhook.core.analysis import TEMPLATE_CRD_NAMES, template_schema_from_crd
from webhook.core.crd_schema import (
    ROLLOUT_CRD_NAME,
    RolloutSchema,
    SchemaUnusable,
    rollout_schema_from_crd,
)
from webhook.kube.cache import Reflector
from webhook.kube.http import KubeHttp
from webhook.kube.resources import CACHED, CONFIGMAP, CRD, Resource
from webhook.kube.view import MemoryClusterView
from webhook.kube.writer import ClusterAdapter

log = logging.getLogger(__name__)


class ClusterSettings(Protocol):
    """What connecting needs of the server's settings (``ServeSettings`` has it all)."""

    @property
    def kubeconfig(self) -> Path | None: ...

    @property
    def in_cluster(self) -> bool: ...

    @property
    def field_manager(self) -> str:
        """The server-side-apply field manager of every write."""
        ...

    @property
    def namespace(self) -> str:
        """The webhook's own namespace, where the policy ConfigMap lives."""
        ...

    @property
    def policy_configmap(self) -> str: ...

    @property
    def reconcile_workers(self) -> int:
        """The reconciler's threads: each makes its calls on a connection of its own."""
        ...


class PolicySink(Protocol):
    """Where the policy ConfigMap's watch delivers what it sees (the server's policy state)."""

    @property
    def loaded(self) -> bool: ...

    def apply_configmap(self, configmap: Mapping[str, Any]) -> bool:
        """Take the policy from an added or changed ConfigMap; False when it is refused."""
        ...

    def configmap_absent(self, *, deleted: bool) -> None:
        """No ConfigMap (never created, or deleted): the built-in policy applies."""
        ...


Listener = Callable[[str, dict[str, Any], dict[str, Any] | None], None]
"""Told (kind, object, previous) after each change the watches bring (the reconciler's
trigger). ``previous`` is the object as the cache held it before (None: it was not
cached), so a change that moves something away (a Service's selector, an HPA's target, a
route's backends) still reaches what it used to concern. For a removal, ``object`` is the
last state and the cache no longer holds it."""


class ViewStore:
    """One kind's share of the shared view; listeners hear of each change after it."""

    def __init__(
        self, view: MemoryClusterView, resource: Resource, listeners: list[Listener] | None = None
    ) -> None:
        self.view = view
        self.kind = resource.kind
        self.listeners = listeners if listeners is not None else []

    def _tell(self, obj: dict[str, Any], previous: dict[str, Any] | None) -> None:
        for listener in self.listeners:
            try:
                listener(self.kind, obj, previous)
            except Exception:
                log.exception("listener failed on %s", self.kind)

    def _cached(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        return self.view.get(*MemoryClusterView.key(obj))

    def replace(self, items: list[dict[str, Any]]) -> None:
        items = [{**i, "kind": self.kind} for i in items]
        before = {MemoryClusterView.key(o): o for o in self.view.list(self.kind, "")}
        fresh = {MemoryClusterView.key(i) for i in items}
        gone = [o for k, o in before.items() if k not in fresh]
        self.view.replace_kind(self.kind, items)
        for obj in items:
            self._tell(obj, before.get(MemoryClusterView.key(obj)))
        for obj in gone:
            self._tell(obj, obj)

    def upsert(self, obj: dict[str, Any]) -> None:
        obj = {**obj, "kind": self.kind}
        previous = self._cached(obj)
        self.view.put(obj)
        self._tell(obj, previous)

    def remove(self, obj: dict[str, Any]) -> None:
        obj = {**obj, "kind": self.kind}
        previous = self._cached(obj)
        self.view.delete(obj)
        self._tell(obj, previous)


class PolicyStore:
    """The policy ConfigMap's watch feeds the policy state, not the view."""

    def __init__(self, state: PolicySink) -> None:
        self.state = state
        self.present = False

    def replace(self, items: list[dict[str, Any]]) -> None:
        if items:
            self.upsert(items[0])
        elif self.present or not self.state.loaded:
            self.remove({})

    def upsert(self, obj: dict[str, Any]) -> None:
        self.state.apply_configmap(obj)
        self.present = True

    def remove(self, obj: dict[str, Any]) -> None:
        self.state.configmap_absent(deleted=self.present)
        self.present = False


class RolloutSchemaStore:
    """The Rollout CRD's watch keeps the schema every planned Rollout is checked against.

    A CRD that is missing (Argo Rollouts not installed yet) or unusable leaves no schema:
    Rollouts are then not checked, which is logged, and the API server stays the judge of
    each write."""

    def __init__(self) -> None:
        self.current: RolloutSchema | None = None

    def replace(self, items: list[dict[str, Any]]) -> None:
        if items:
            self.upsert(items[0])
        else:
            self.remove({})

    def upsert(self, obj: dict[str, Any]) -> None:
        version = (obj.get("metadata") or {}).get("resourceVersion", "")
        source = f"CustomResourceDefinition {ROLLOUT_CRD_NAME}@{version}"
        try:
            self.current = rollout_schema_from_crd(obj, source=source)
        except SchemaUnusable as err:
            self.current = None
            log.warning("%s; Rollouts are not checked against a schema", err)

    def remove(self, obj: dict[str, Any]) -> None:
        if self.current is not None or not obj:
            log.warning(
                "no CustomResourceDefinition %s in the cluster: Rollouts are not checked "
                "against a schema (is Argo Rollouts installed?)",
                ROLLOUT_CRD_NAME,
            )
        self.current = None


class TemplateSchemaStore:
    """The watch of one analysis template CRD (AnalysisTemplate or ClusterAnalysisTemplate)
    keeps the schema the policy's managed templates are checked against at /validate. None
    while the CRD is missing or unusable: the API server then judges each template applied."""

    def __init__(self, crd_name: str) -> None:
        self.crd_name = crd_name
        self.kind: str | None = None
        self.current: RolloutSchema | None = None

    def replace(self, items: list[dict[str, Any]]) -> None:
        if items:
            self.upsert(items[0])
        else:
            self.remove({})

    def upsert(self, obj: dict[str, Any]) -> None:
        version = (obj.get("metadata") or {}).get("resourceVersion", "")
        source = f"CustomResourceDefinition {self.crd_name}@{version}"
        try:
            self.kind, self.current = template_schema_from_crd(obj, source=source)
        except SchemaUnusable as err:
            self.current = None
            log.warning("%s; the policy's templates are not checked against a schema", err)

    def remove(self, obj: dict[str, Any]) -> None:
        del obj
        self.current = None


def template_schemas(stores: Mapping[str, TemplateSchemaStore]) -> dict[str, RolloutSchema]:
    """The served template schemas by kind, of the stores that have one."""
    return {
        s.kind: s.current for s in stores.values() if s.kind is not None and s.current is not None
    }


def freeze_caches() -> None:
    """Take everything alive now (the synced caches, the imported code) out of the cyclic
    garbage collector's reach.

    With a thousand services cached the collector tracks some 110,000 containers, and each
    full collection walked them all (~100 ms) while requests waited: the largest part of
    the admission latency's tail (docs/benchmarks.md). Cached objects are JSON, free of
    reference cycles, so reference counting still frees them when a watch replaces them.
    """
    gc.collect()
    gc.freeze()


class Cluster:
    """One connection to the API server: the watch-fed caches (``view``), the policy
    ConfigMap's watch and the writer. Nothing is called until ``start``."""

    def __init__(self, http: KubeHttp, settings: ClusterSettings) -> None:
        self.http = http
        self.settings = settings
        self.view = MemoryClusterView(synced=False)
        self.writer = ClusterAdapter(http, field_manager=settings.field_manager)
        self.rollout_schema = RolloutSchemaStore()
        self.template_schema_stores = {
            name: TemplateSchemaStore(name) for name in TEMPLATE_CRD_NAMES
        }
        self.reflectors: list[Reflector] = []
        self.listeners: list[Listener] = []
        """Called on the watch threads after each cached change: keep them quick."""
        self._lock = threading.Lock()

    def _check_synced(self) -> None:
        with self._lock:
            if all(r.synced.is_set() for r in self.reflectors) and not self.view.synced():
                self.view.mark_synced()
                log.info("caches synced")
                freeze_caches()

    def start(self, policy: PolicySink | None) -> None:
        """Start every watch; with a policy state, also watch the policy ConfigMap."""
        for resource in CACHED:
            self.reflectors.append(
                Reflector(
                    self.http,
                    resource,
                    ViewStore(self.view, resource, self.listeners),
                    on_synced=self._check_synced,
                )
            )
        self.reflectors.append(
            Reflector(
                self.http,
                CRD,
                self.rollout_schema,
                field_selector=f"metadata.name={ROLLOUT_CRD_NAME}",
                on_synced=self._check_synced,
            )
        )
        for name, store in self.template_schema_stores.items():
            self.reflectors.append(
                Reflector(
                    self.http,
                    CRD,
                    store,
                    field_selector=f"metadata.name={name}",
                    on_synced=self._check_synced,
                )
            )
        if policy is not None:
            self.reflectors.append(
                Reflector(
                    self.http,
                    CONFIGMAP,
                    PolicyStore(policy),
                    namespace=self.settings.namespace,
                    field_selector=f"metadata.name={self.settings.policy_configmap}",
                    on_synced=self._check_synced,
                )
            )
        for reflector in self.reflectors:
            reflector.start()

    def stop(self) -> None:
        for reflector in self.reflectors:
            reflector.stop()


WATCHES = len(CACHED) + 1 + len(TEMPLATE_CRD_NAMES) + 1
"""Watches ``Cluster.start`` opens: each holds a connection for as long as it runs."""
SPARE_CONNECTIONS = 16
"""Besides the watches and the reconciler: the admission writes' threads, permission checks,
the Leases, re-lists."""


def connections_needed(settings: ClusterSettings) -> int:
    """Connections to keep for reuse: one per watch and per reconciler thread, and spares.

    The watches alone hold more than the client's default pool (five per CPU); with the
    reconciler's threads busy besides, connections given back found the pool full and
    were closed, each with a warning in the log, and opened again by the next call."""
    return WATCHES + settings.reconcile_workers + SPARE_CONNECTIONS


def connect(settings: ClusterSettings) -> Cluster:
    """A Cluster from --kubeconfig or the Pod's service account; nothing is called yet."""
    kubeconfig = str(settings.kubeconfig) if settings.kubeconfig else None
    client = load_api_client(
        kubeconfig, settings.in_cluster, connections=connections_needed(settings)
    )
    return Cluster(KubeHttp(client), settings)
