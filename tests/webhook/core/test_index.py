"""The caches' index: a Deployment's conversion plans the same from the index as from its
whole namespace, and the index follows every put, delete and re-list."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.builders import (
    destinationrule,
    hpa,
    httproute,
    namespace,
    opted_in,
    service,
    virtualservice,
)
from webhook.core.admission import deployment_neighbours, neighbours_of
from webhook.core.convert import plan_conversion
from webhook.core.index import backend_keys, index_keys, naming_key, selected_keys
from webhook.core.keys import Keys
from webhook.core.objects import name_of
from webhook.core.policy import builtin_policy
from webhook.core.services import selects_pods
from webhook.kube.view import MemoryClusterView

NS = "prod"
NAMES = st.sampled_from(["web", "api", "web-canary", "db", "x"])
LABELS = st.dictionaries(st.sampled_from(["app", "tier", "track"]), st.sampled_from(["web", "a"]))
HOSTS = st.sampled_from(
    ["web", "api.prod", "web.prod.svc", "db.prod.svc.cluster.local", "web.other"]
)


@st.composite
def namespaces(draw: st.DrawFn) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = [namespace(NS)]
    for name in draw(st.sets(NAMES, max_size=4)):
        objects.append(service(name, NS, selector=draw(LABELS)))
    for name in draw(st.sets(NAMES, max_size=2)):
        objects.append(hpa(name, NS, kind=draw(st.sampled_from(["Deployment", "Rollout"]))))
    for index in range(draw(st.integers(0, 3))):
        backends = [{"name": n, "port": 80} for n in draw(st.lists(NAMES, max_size=3))]
        objects.append(httproute(f"r{index}", NS, rules=[{"backendRefs": backends}]))
    for index in range(draw(st.integers(0, 2))):
        routes = [{"destination": {"host": h}} for h in draw(st.lists(HOSTS, max_size=3))]
        objects.append(virtualservice(f"v{index}", NS, http=[{"route": routes}]))
    return objects


@settings(max_examples=300, deadline=None)
@given(namespaces(), NAMES, LABELS)
def test_the_index_plans_what_the_whole_namespace_plans(
    objects: list[dict[str, Any]], name: str, pods: dict[str, str]
) -> None:
    view = MemoryClusterView(objects)
    deployment = opted_in(name, NS, pod_labels=pods or {"app": name})
    policy, keys = builtin_policy(), Keys()
    whole = plan_conversion(deployment, neighbours_of(view, NS), policy, keys=keys)
    indexed = deployment_neighbours(view, NS, deployment)
    assert plan_conversion(deployment, indexed, policy, keys=keys) == whole
    assert len(indexed.services) <= len(view.list("Service", NS))


def _brute_force(view: MemoryClusterView, kind: str, keys: set[str]) -> list[str]:
    return sorted(o["metadata"]["name"] for o in view.list(kind, NS) if index_keys(kind, o) & keys)


def test_the_index_follows_puts_deletes_and_relists() -> None:
    view = MemoryClusterView(
        [service("web", NS, {"app": "web"}), service("api", NS, {"app": "api"})]
    )
    web_key = index_keys("Service", service("web", NS, {"app": "web"}))

    def found() -> list[str]:
        return [o["metadata"]["name"] for o in view.indexed("Service", NS, web_key)]

    assert found() == ["web"]
    view.put(service("api", NS, {"app": "web"}))  # its selector changed
    assert found() == ["api", "web"] == _brute_force(view, "Service", set(web_key))
    view.delete(service("web", NS))
    assert found() == ["api"]
    view.replace_kind("Service", [service("db", NS, {"app": "web"})])
    assert found() == ["db"]
    view.replace_kind("Service", [])
    assert found() == [] and view.indexed("Service", "elsewhere", web_key) == ()


def test_malformed_objects_have_no_keys_and_break_nothing() -> None:
    broken: dict[str, Any] = {"kind": "HTTPRoute", "metadata": {"name": "r", "namespace": NS}}
    for spec in ({"rules": "x"}, {"rules": [{"backendRefs": [1, {"name": 2}]}]}, None):
        broken["spec"] = spec
        assert index_keys("HTTPRoute", broken) == frozenset()
    vs: dict[str, Any] = {"spec": {"http": [{"route": [{"destination": "web"}]}]}}
    assert index_keys("VirtualService", vs) == frozenset()
    assert index_keys("Service", {"spec": {"selector": "app"}}) == frozenset()
    assert index_keys("HorizontalPodAutoscaler", {"spec": {"scaleTargetRef": []}}) == frozenset()


def test_a_destination_rule_is_found_as_the_service_its_host_names() -> None:
    for host in ("web", "web.shop", "web.shop.svc", "web.shop.svc.cluster.local"):
        rule = destinationrule("web", NS, host=host)
        assert index_keys("DestinationRule", rule) == backend_keys({"web"})
    assert index_keys("DestinationRule", {"spec": {"host": 7}}) == frozenset()
    assert index_keys("DestinationRule", {"spec": None}) == frozenset()


@settings(max_examples=300, deadline=None)
@given(st.lists(LABELS, max_size=5), LABELS)
def test_a_service_finds_through_the_index_every_deployment_it_selects(
    pods: list[dict[str, str]], selector: dict[str, str]
) -> None:
    view = MemoryClusterView(
        [opted_in(f"d{i}", NS, pod_labels=labels) for i, labels in enumerate(pods)]
    )
    svc = service("s", NS, selector=selector)
    found = view.indexed("Deployment", NS, selected_keys(svc))
    selecting = [d for d in view.list("Deployment", NS) if selects_pods(svc, d)]
    assert {name_of(d) for d in selecting} <= {name_of(d) for d in found}


def test_a_rollout_is_found_under_each_service_it_names() -> None:
    rollout = {
        "kind": "Rollout",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"strategy": {"canary": {"canaryService": "web-canary", "stableService": "web"}}},
    }
    view = MemoryClusterView([rollout])
    for name in ("web", "web-canary"):
        assert view.indexed("Rollout", NS, {naming_key("Service", name)}) == (rollout,)
    assert view.indexed("Rollout", NS, {naming_key("Service", "api")}) == ()
    assert index_keys("Rollout", {"spec": {"strategy": "x"}}) == frozenset()
    assert index_keys("Deployment", {"spec": {"template": []}}) == frozenset()


ROUTE_NAMES = st.sampled_from(["r0", "r1", "r2"])
BACKENDS = st.lists(NAMES, max_size=3)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["put", "delete", "relist"]), ROUTE_NAMES, BACKENDS),
        max_size=12,
    )
)
def test_the_index_follows_any_sequence_of_changes(
    changes: list[tuple[str, str, list[str]]],
) -> None:
    """Keys shared by one route, then several, then one again, then none: what the index
    finds is always what reading every route finds."""
    view = MemoryClusterView()
    current: dict[str, dict[str, Any]] = {}
    for change, name, backends in changes:
        route = httproute(name, NS, rules=[{"backendRefs": [{"name": b} for b in backends]}])
        if change == "put":
            view.put(route)
            current[name] = route
        elif change == "delete":
            view.delete(route)
            current.pop(name, None)
        else:
            current = {name: route}
            view.replace_kind("HTTPRoute", [route])
        every = backend_keys(["web", "api", "web-canary", "db", "x"])
        for key in every:
            found = [o["metadata"]["name"] for o in view.indexed("HTTPRoute", NS, {key})]
            assert found == _brute_force(view, "HTTPRoute", {key})
        found = [o["metadata"]["name"] for o in view.indexed("HTTPRoute", NS, every)]
        assert (
            found
            == _brute_force(view, "HTTPRoute", set(every))
            == sorted(n for n, r in current.items() if index_keys("HTTPRoute", r))
        )


def _object(kind: str, namespace: str, name: str) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"namespace": namespace, "name": name}}


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["put", "delete", "relist"]),
            st.sampled_from(["Service", "ClusterAnalysisTemplate"]),
            st.sampled_from(["", "a", "b", "c"]),
            NAMES,
        ),
        max_size=16,
    )
)
def test_listing_a_kind_everywhere_finds_exactly_its_objects_in_every_namespace(
    changes: list[tuple[str, str, str, str]],
) -> None:
    """Every namespace's objects of the kind, in the order their namespaces first held one,
    and nothing of another kind: what reading every stored object finds."""
    view = MemoryClusterView()
    stored: dict[tuple[str, str, str], dict[str, Any]] = {}
    for change, kind, ns, name in changes:
        obj = _object(kind, ns, name)
        if change == "put":
            view.put(obj)
            stored[(kind, ns, name)] = obj
        elif change == "delete":
            view.delete(obj)
            stored.pop((kind, ns, name), None)
        else:
            view.replace_kind(kind, [obj])
            stored = {k: v for k, v in stored.items() if k[0] != kind}
            stored[(kind, ns, name)] = obj
        for listed_kind in ("Service", "ClusterAnalysisTemplate"):
            listed = view.list(listed_kind, "")
            assert sorted((o["metadata"]["namespace"], o["metadata"]["name"]) for o in listed) == (
                sorted((k[1], k[2]) for k in stored if k[0] == listed_kind)
            )
            assert all(o["kind"] == listed_kind for o in listed)
