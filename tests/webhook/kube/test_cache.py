"""The reflector protocol with a scripted API: pages, watches, bookmarks, 410 Gone, a CRD
that is not installed."""

from __future__ import annotations

import threading

from tests.webhook.kube.scripted_api import ScriptedApi, dep, run_reflector
from webhook.kube.cache import Reflector
from webhook.kube.cluster import ViewStore
from webhook.kube.http import KubeError
from webhook.kube.resources import DEPLOYMENT, HTTPROUTE
from webhook.kube.view import MemoryClusterView


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
