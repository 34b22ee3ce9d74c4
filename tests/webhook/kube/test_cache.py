"""The Kubernetes adapters with a scripted API: the reflector protocol, apply bodies, SAR.

The same adapters run against a real kube-apiserver in test_cluster_e2e.py; here each
branch of the protocol (pagination, bookmarks, 410 Gone, a CRD that is not installed)
is driven on purpose.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from webhook.kube.cache import Reflector
from webhook.kube.cluster import PolicyStore, ViewStore
from webhook.kube.http import KubeError
from webhook.kube.resources import DEPLOYMENT, HTTPROUTE, resource_for
from webhook.kube.writer import ClusterAdapter, access_review_body, apply_body
from webhook.server.policy_state import PolicyState
from webhook.server.ports import MemoryClusterView


def dep(name: str, rv: str, namespace: str = "shop") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "resourceVersion": rv,
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": {"replicas": 1},
    }


class ScriptedApi:
    """Answers list calls from ``lists`` and watch calls from ``watches``, in order."""

    def __init__(
        self,
        lists: list[dict[str, Any] | KubeError],
        watches: list[list[dict[str, Any]] | KubeError],
    ) -> None:
        self.lists = lists
        self.watches = watches
        self.calls: list[tuple[str, str, list[tuple[str, str]]]] = []
        self.exhausted = threading.Event()

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> dict[str, Any]:
        self.calls.append((method, path, list(query)))
        if not self.lists:
            self.exhausted.set()
            raise KubeError(0, "script exhausted")
        answer = self.lists.pop(0)
        if isinstance(answer, KubeError):
            raise answer
        return answer

    def watch(
        self, path: str, *, query: Sequence[tuple[str, str]], timeout: tuple[float, float]
    ) -> Iterator[Mapping[str, Any]]:
        self.calls.append(("WATCH", path, list(query)))
        if not self.watches:
            self.exhausted.set()
            raise KubeError(0, "script exhausted")
        events = self.watches.pop(0)
        if isinstance(events, KubeError):
            raise events
        yield from events


def run_reflector(api: ScriptedApi, reflector: Reflector) -> None:
    reflector.start()
    assert api.exhausted.wait(5), "the reflector stopped following the script"
    reflector.stop()


def test_lists_in_pages_then_watches_and_relists_after_410() -> None:
    view = MemoryClusterView(synced=False)
    api = ScriptedApi(
        lists=[
            {"metadata": {"continue": "page2"}, "items": [dep("a", "1")]},
            {"metadata": {"resourceVersion": "10"}, "items": [dep("b", "2")]},
            {"metadata": {"resourceVersion": "30"}, "items": [dep("c", "25")]},
        ],
        watches=[
            [
                {"type": "ADDED", "object": dep("d", "11")},
                {"type": "MODIFIED", "object": {**dep("a", "12"), "spec": {"replicas": 5}}},
                {"type": "DELETED", "object": dep("b", "13")},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "20"}}},
            ],
            [{"type": "ERROR", "object": {"code": 410, "message": "too old"}}],
        ],
    )
    synced = threading.Event()
    reflector = Reflector(
        api,  # type: ignore[arg-type]
        DEPLOYMENT,
        ViewStore(view, DEPLOYMENT),
        on_synced=synced.set,
    )
    run_reflector(api, reflector)
    assert synced.is_set()
    # After the 410 the store was replaced by the fresh list: only "c" is left.
    assert [o["metadata"]["name"] for o in view.list("Deployment", "shop")] == ["c"]
    obj = view.list("Deployment", "shop")[0]
    assert obj["kind"] == "Deployment"
    assert obj["apiVersion"] == "apps/v1"
    assert "managedFields" not in obj["metadata"]
    watch_calls = [q for m, _, q in api.calls if m == "WATCH"]
    assert ("resourceVersion", "10") in watch_calls[0]
    assert ("allowWatchBookmarks", "true") in watch_calls[0]
    # The second watch resumed from the bookmark, not from the last object.
    assert ("resourceVersion", "20") in watch_calls[1]
    list_calls = [q for m, _, q in api.calls if m == "GET"]
    assert ("continue", "page2") in list_calls[1]


def test_watch_events_update_the_view() -> None:
    view = MemoryClusterView()
    api = ScriptedApi(
        lists=[{"metadata": {"resourceVersion": "1"}, "items": [dep("a", "1")]}],
        watches=[
            [
                {"type": "MODIFIED", "object": {**dep("a", "2"), "spec": {"replicas": 7}}},
                {"type": "ADDED", "object": dep("b", "3", namespace="pay")},
            ]
        ],
    )
    run_reflector(api, Reflector(api, DEPLOYMENT, ViewStore(view, DEPLOYMENT)))  # type: ignore[arg-type]
    got = view.get("Deployment", "shop", "a")
    assert got is not None
    assert got["spec"]["replicas"] == 7
    assert view.get("Deployment", "pay", "b") is not None
    assert view.list("Deployment", "nowhere") == ()


def test_a_crd_that_is_not_installed_counts_as_synced_and_empty() -> None:
    view = MemoryClusterView()
    view.put({"kind": "HTTPRoute", "metadata": {"name": "stale", "namespace": "shop"}})
    api = ScriptedApi(
        lists=[KubeError(404, "the server could not find the requested resource")], watches=[]
    )
    synced = threading.Event()
    reflector = Reflector(
        api,  # type: ignore[arg-type]
        HTTPROUTE,
        ViewStore(view, HTTPROUTE),
        on_synced=synced.set,
    )
    reflector.start()
    assert synced.wait(5)
    reflector.stop()
    assert view.list("HTTPRoute", "shop") == ()


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


def test_apply_bodies_own_only_what_the_product_changes() -> None:
    hpa: dict[str, Any] = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "resourceVersion": "9",
            "labels": {"a": "b"},
        },
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "Rollout",
                "name": "web",
            },
            "minReplicas": 2,
            "maxReplicas": 9,
        },
        "status": {"currentReplicas": 3},
    }
    assert apply_body(hpa) == {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"scaleTargetRef": hpa["spec"]["scaleTargetRef"]},
    }
    rollout = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "shop", "uid": "x", "labels": {"a": "b"}},
        "spec": {"replicas": 3},
        "status": {"phase": "Healthy"},
    }
    assert apply_body(rollout) == {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"a": "b"}},
        "spec": {"replicas": 3},
    }


def test_paths_follow_the_manifest_version() -> None:
    assert (
        resource_for("VirtualService", "networking.istio.io/v1beta1").object_path("shop", "web")
        == "/apis/networking.istio.io/v1beta1/namespaces/shop/virtualservices/web"
    )
    assert (
        resource_for("Service").object_path("shop", "web") == "/api/v1/namespaces/shop/services/web"
    )
    with pytest.raises(ValueError, match="not one the product writes"):
        resource_for("Pod")


def test_access_review_carries_groups_and_extra() -> None:
    body = access_review_body(
        {
            "username": "alice",
            "uid": "42",
            "groups": ["dev"],
            "extra": {"scopes": ["a", "b"]},
        },
        "shop",
    )
    assert body["spec"] == {
        "user": "alice",
        "uid": "42",
        "groups": ["dev"],
        "extra": {"scopes": ["a", "b"]},
        "resourceAttributes": {
            "namespace": "shop",
            "verb": "create",
            "group": "argoproj.io",
            "resource": "rollouts",
        },
    }


def test_adapter_reads_the_review_answer_and_applies_server_side() -> None:
    api = ScriptedApi(
        lists=[
            {"status": {"allowed": False, "reason": "no binding"}},
            {"status": {"allowed": True}},
            {},
        ],
        watches=[],
    )
    adapter = ClusterAdapter(api, field_manager="rollout-webhook")  # type: ignore[arg-type]
    denied = adapter.may_create_rollouts({"username": "bob"}, "shop", timeout=1)
    assert (denied.allowed, denied.reason) == (False, "no binding")
    assert adapter.may_create_rollouts({"username": "alice"}, "shop", timeout=1).allowed
    adapter.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web-canary", "namespace": "shop"},
        },
        timeout=1,
    )
    method, path, query = api.calls[-1]
    assert (method, path) == ("PATCH", "/api/v1/namespaces/shop/services/web-canary")
    assert query == [("fieldManager", "rollout-webhook"), ("force", "true")]


def test_listeners_hear_every_change_and_list_all_namespaces() -> None:
    view = MemoryClusterView()
    heard: list[tuple[str, str]] = []
    store = ViewStore(
        view, DEPLOYMENT, [lambda kind, obj: heard.append((kind, obj["metadata"]["name"]))]
    )
    store.replace([dep("a", "1"), dep("b", "1", namespace="pay")])
    store.upsert(dep("c", "2"))
    store.remove(dep("a", "3"))
    store.replace([dep("c", "4")])  # a re-list: "b" is gone, and is told as such
    assert heard == [
        ("Deployment", "a"),
        ("Deployment", "b"),
        ("Deployment", "c"),
        ("Deployment", "a"),
        ("Deployment", "c"),
        ("Deployment", "b"),
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


def test_the_allocator_is_tuned_where_the_c_library_is_glibc() -> None:
    import platform

    from webhook.server.memory import tune_allocator

    assert tune_allocator() is (platform.libc_ver()[0] == "glibc")
