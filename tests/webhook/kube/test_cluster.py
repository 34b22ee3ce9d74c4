"""The cluster wiring: the stores the watches feed, the policy store, freezing the caches."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient

from certs.kube import load_api_client
from tests.webhook.kube.scripted_api import dep
from webhook.kube.cache import Reflector
from webhook.kube.cluster import (
    WATCHES,
    Cluster,
    PolicyStore,
    ViewStore,
    connections_needed,
)
from webhook.kube.http import KubeHttp
from webhook.kube.resources import DEPLOYMENT
from webhook.kube.view import MemoryClusterView
from webhook.server.policy_state import PolicyState
from webhook.server.settings import ServeSettings


def test_policy_store_follows_the_configmap() -> None:
    results: list[str] = []
    state = PolicyState(on_reload=results.append)
    store = PolicyStore(state)
    store.replace([])  # no ConfigMap at start: the built-in policy, nothing counted
    assert state.current is not None
    assert state.current.version.name == "built-in"
    assert results == []
    store.upsert({"metadata": {"name": "p", "namespace": "ns"}, "data": {"policy.yaml": "x: ["}})
    assert results == ["invalid"]
    assert state.current.version.name == "built-in"
    store.remove({})
    assert results == ["invalid", "removed"]


def test_listeners_hear_every_change_and_list_all_namespaces() -> None:
    view = MemoryClusterView()
    heard: list[tuple[str, str, str | None]] = []

    def listener(kind: str, obj: dict[str, Any], previous: dict[str, Any] | None) -> None:
        version = previous["metadata"]["resourceVersion"] if previous is not None else None
        heard.append((kind, obj["metadata"]["name"], version))

    store = ViewStore(view, DEPLOYMENT, [listener])
    store.replace([dep("a", "1"), dep("b", "1", namespace="pay")])
    store.upsert(dep("c", "2"))
    store.upsert(dep("c", "3"))
    store.remove(dep("a", "3"))
    store.replace([dep("c", "4")])  # a re-list: "b" is gone, and is told as such
    # Each change is told with the object as the cache held it before (None: new).
    assert heard == [
        ("Deployment", "a", None),
        ("Deployment", "b", None),
        ("Deployment", "c", None),
        ("Deployment", "c", "2"),
        ("Deployment", "a", "1"),
        ("Deployment", "c", "3"),
        ("Deployment", "b", "1"),
    ]
    store.upsert(dep("d", "5", namespace="pay"))
    assert sorted(o["metadata"]["name"] for o in view.list("Deployment", "")) == ["c", "d"]


def test_the_caches_are_frozen_once_when_every_watch_has_synced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from webhook.kube import cluster as cluster_module
    from webhook.server.settings import ServeSettings

    frozen: list[bool] = []
    monkeypatch.setattr(cluster_module, "freeze_caches", lambda: frozen.append(True))
    cluster = cluster_module.Cluster(None, ServeSettings())  # type: ignore[arg-type]
    events = [threading.Event(), threading.Event()]
    cluster.reflectors = [SimpleNamespace(synced=e) for e in events]  # type: ignore[misc]
    events[0].set()
    cluster._check_synced()
    assert not cluster.view.synced() and not frozen
    events[1].set()
    cluster._check_synced()
    cluster._check_synced()  # a re-list after an expired watch: frozen already
    assert cluster.view.synced() and frozen == [True]


def test_freezing_keeps_live_objects_out_of_the_collector() -> None:
    import gc

    from webhook.kube.cluster import freeze_caches

    cached = [{"metadata": {"name": str(i)}} for i in range(1000)]
    before = gc.get_freeze_count()
    try:
        freeze_caches()
        assert gc.get_freeze_count() >= before + len(cached)
        assert all(id(o) not in {id(x) for x in gc.get_objects()} for o in cached[:3])
    finally:
        gc.unfreeze()


def test_the_connection_pool_holds_every_watch_and_reconciler_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A connection given back to a full pool is closed, and the next call opens another
    (a TLS handshake on both sides): the watches hold theirs for good, and every
    reconciler thread needs one besides."""
    monkeypatch.setattr(Reflector, "start", lambda self: None)
    settings = ServeSettings(reconcile_workers=12)
    cluster = Cluster(KubeHttp(ApiClient()), settings)
    cluster.start(PolicyState())
    assert len(cluster.reflectors) == WATCHES
    assert connections_needed(settings) >= WATCHES + 12 + 4


def test_load_api_client_keeps_the_connections_asked_for(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:6443'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    client = load_api_client(str(kubeconfig), connections=40)
    assert client.configuration.connection_pool_maxsize == 40
    assert client.rest_client.pool_manager.connection_pool_kw["maxsize"] == 40
