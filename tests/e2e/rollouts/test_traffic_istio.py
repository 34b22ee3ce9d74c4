"""Istio: the real Argo controller moves VirtualService weights, by host and by subset.

No mesh runs: Argo's Istio router edits the VirtualService (and, for subset-level routing,
the DestinationRule's subsets) the webhook prepared, and a sampler reads them every 100 ms.
Header and mirror steps add a route of their own for the step, which Argo removes after.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes import client

from tests import builders
from tests.e2e import harness
from tests.e2e.rollouts.scenario import (
    Sampler,
    apply,
    deployment,
    eventually,
    get,
    service,
    wait_healthy,
)
from tests.e2e.rollouts.traffic import (
    DESTINATION_RULE,
    PROMOTION,
    STEPS_WALK,
    V1,
    V2,
    V3,
    VIRTUAL_SERVICE,
    Weights,
    assert_follows_steps,
    phase,
    promote_to_healthy,
    read,
    virtualservice_weights,
    wait_for_pause,
)

MANUAL_PAUSE = 5  # traffic steps: 10, 2 s, 25, 2 s, 50, pause {} (index 5)
STEP_PAUSE = 2  # traffic-header / traffic-mirror: 10, the route step, pause {} (index 2)
HASH = "rollouts-pod-template-hash"


def _by_host(dest: dict[str, Any]) -> bool:
    return bool(dest["host"] == "web")


def _by_subset(dest: dict[str, Any]) -> bool:
    return bool(dest.get("subset") == "stable")


def _named_routes(ns: str) -> dict[str, Any]:
    """Two named routes: `primary` (a match, headers set) to web, `static` elsewhere."""
    return builders.virtualservice(
        "web",
        ns,
        http=[
            {
                "name": "primary",
                "match": [{"uri": {"prefix": "/api"}}],
                "headers": {"request": {"set": {"x-via": "mesh"}}},
                "route": [{"destination": {"host": "web", "port": {"number": 80}}}],
            },
            {
                "name": "static",
                "route": [{"destination": {"host": "static", "port": {"number": 80}}}],
            },
        ],
    )


def _weights_now(
    kube: client.ApiClient, ns: str, is_stable: Callable[[dict[str, Any]], bool]
) -> Callable[[], tuple[Weights, ...]]:
    return lambda: virtualservice_weights(kube, ns, "web", is_stable)


def _walk_and_promote(
    kubectl: harness.Tool,
    argo: harness.Tool,
    kube: client.ApiClient,
    ns: str,
    weights: Callable[[], tuple[Weights, ...]],
) -> None:
    with Sampler(weights, interval=0.1) as samples:
        kubectl("set", "image", "deployment/web", f"app={V2}", "-n", ns)
        wait_for_pause(kube, "web", ns, MANUAL_PAUSE)
        assert weights() == ((50, 50),)
        promote_to_healthy(argo, kube, "web", ns)
        eventually(lambda: weights() == ((100, 0),), "the route back at 100/0 once promoted")
    assert_follows_steps(samples.values, [*STEPS_WALK, (100, 0)], optional=[PROMOTION])
    assert samples.values[-1] == ((100, 0),)


def test_virtualservice_weights_follow_every_step_back_to_stable_on_promote_and_abort(
    kubectl: harness.Tool, argo: harness.Tool, kube: client.ApiClient, rollouts_namespace: str
) -> None:
    ns = rollouts_namespace
    apply(
        kubectl,
        service("web", ns),
        _named_routes(ns),
        deployment("web", ns, replicas=4, image=V1, environment="traffic"),
    )
    wait_healthy(kubectl, "web", ns)
    weights = _weights_now(kube, ns, _by_host)
    eventually(lambda: weights() == ((100, 0),), "the canary destination at 0%")
    before = read(kube, VIRTUAL_SERVICE, ns, "web")
    rollout = get(kubectl, "rollout", "web", "-n", ns)
    assert rollout is not None
    assert rollout["spec"]["strategy"]["canary"]["trafficRouting"] == {
        "istio": {"virtualService": {"name": "web", "routes": ["primary"]}}
    }

    _walk_and_promote(kubectl, argo, kube, ns, weights)
    after = read(kube, VIRTUAL_SERVICE, ns, "web")
    assert after["spec"]["hosts"] == before["spec"]["hosts"]
    assert after["spec"]["http"][1] == before["spec"]["http"][1], "the other route changed"
    for key in ("name", "match", "headers"):
        assert after["spec"]["http"][0][key] == before["spec"]["http"][0][key]

    with Sampler(weights, interval=0.1) as samples:
        kubectl("set", "image", "deployment/web", f"app={V3}", "-n", ns)
        wait_for_pause(kube, "web", ns, MANUAL_PAUSE)
        argo("abort", "web", "-n", ns)
        eventually(lambda: phase(kube, "web", ns) == "Degraded", "the aborted Rollout Degraded")
        eventually(lambda: weights() == ((100, 0),), "the route back at 100/0 after the abort")
    assert_follows_steps(samples.values, [*STEPS_WALK, (100, 0)])
    assert samples.values[-1] == ((100, 0),)


def test_subset_level_routing_moves_the_weights_between_the_destination_rules_subsets(
    kubectl: harness.Tool, argo: harness.Tool, kube: client.ApiClient, rollouts_namespace: str
) -> None:
    ns = rollouts_namespace
    apply(
        kubectl,
        service("web", ns),
        builders.destinationrule("web", ns),
        builders.subset_virtualservice("web", ns),
        deployment("web", ns, replicas=4, image=V1, environment="traffic"),
    )
    wait_healthy(kubectl, "web", ns)
    weights = _weights_now(kube, ns, _by_subset)
    eventually(lambda: weights() == ((100, 0),), "the canary subset destination at 0%")
    rollout = get(kubectl, "rollout", "web", "-n", ns)
    assert rollout is not None
    canary = rollout["spec"]["strategy"]["canary"]
    assert canary["trafficRouting"] == {
        "istio": {
            "virtualService": {"name": "web"},
            "destinationRule": {
                "name": "web",
                "canarySubsetName": "canary",
                "stableSubsetName": "stable",
            },
        }
    }
    assert "stableService" not in canary
    assert get(kubectl, "service", "web-canary", "-n", ns) is None
    vs = read(kube, VIRTUAL_SERVICE, ns, "web")
    assert {d["destination"]["host"] for d in vs["spec"]["http"][0]["route"]} == {"web"}

    _walk_and_promote(kubectl, argo, kube, ns, weights)
    # Argo points each subset at its pods by their hash; the Service keeps every pod.
    subsets = {
        s["name"]: s["labels"] for s in read(kube, DESTINATION_RULE, ns, "web")["spec"]["subsets"]
    }
    stable_hash = (get(kubectl, "rollout", "web", "-n", ns) or {})["status"]["stableRS"]
    assert subsets["stable"] == {"app": "web", HASH: stable_hash}
    web = get(kubectl, "service", "web", "-n", ns)
    assert web is not None
    assert HASH not in web["spec"]["selector"], "the stable Service must select every pod"


def _single_route(ns: str) -> dict[str, Any]:
    return builders.virtualservice("web", ns)


def test_a_header_route_step_adds_its_route_for_the_step_and_removes_it_after(
    kubectl: harness.Tool, argo: harness.Tool, kube: client.ApiClient, rollouts_namespace: str
) -> None:
    ns = rollouts_namespace
    apply(
        kubectl,
        service("web", ns),
        _single_route(ns),
        deployment("web", ns, replicas=4, image=V1, environment="traffic-header"),
    )
    wait_healthy(kubectl, "web", ns)
    weights = _weights_now(kube, ns, _by_host)
    eventually(lambda: weights() == ((100, 0),), "the canary destination at 0%")

    kubectl("set", "image", "deployment/web", f"app={V2}", "-n", ns)
    wait_for_pause(kube, "web", ns, STEP_PAUSE)
    http = read(kube, VIRTUAL_SERVICE, ns, "web")["spec"]["http"]
    # Argo puts its managed route first, so the header wins over the weighted route.
    assert http[0]["name"] == "beta-testers", http
    assert http[0]["match"] == [{"headers": {"x-canary": {"exact": "yes"}}}]
    assert [d["destination"]["host"] for d in http[0]["route"]] == ["web-canary"]
    assert weights() == ((90, 10),)
    # The webhook's plan, mid-step, still accepts the VirtualService as it is.
    rollout = get(kubectl, "rollout", "web", "-n", ns)
    assert rollout is not None
    assert rollout["spec"]["strategy"]["canary"]["trafficRouting"]["istio"] == {
        "virtualService": {"name": "web"}
    }

    promote_to_healthy(argo, kube, "web", ns)
    eventually(
        lambda: (
            [h.get("name") for h in read(kube, VIRTUAL_SERVICE, ns, "web")["spec"]["http"]]
            == [None]
        ),
        "the header route gone once the rollout is done",
    )
    eventually(lambda: weights() == ((100, 0),), "the route back at 100/0")


def test_a_mirror_step_adds_its_route_for_the_step_and_removes_it_after(
    kubectl: harness.Tool, argo: harness.Tool, kube: client.ApiClient, rollouts_namespace: str
) -> None:
    ns = rollouts_namespace
    apply(
        kubectl,
        service("web", ns),
        _single_route(ns),
        deployment("web", ns, replicas=4, image=V1, environment="traffic-mirror"),
    )
    wait_healthy(kubectl, "web", ns)
    rollout = get(kubectl, "rollout", "web", "-n", ns)
    assert rollout is not None
    routing = rollout["spec"]["strategy"]["canary"]["trafficRouting"]
    assert routing["managedRoutes"] == [{"name": "shadow"}]

    kubectl("set", "image", "deployment/web", f"app={V2}", "-n", ns)
    wait_for_pause(kube, "web", ns, STEP_PAUSE)
    http = read(kube, VIRTUAL_SERVICE, ns, "web")["spec"]["http"]
    assert http[0]["name"] == "shadow", http
    assert http[0]["match"] == [{"method": {"exact": "GET"}}]
    assert http[0]["mirror"]["host"] == "web-canary"
    assert http[0]["mirrorPercentage"] == {"value": 50}

    promote_to_healthy(argo, kube, "web", ns)
    eventually(
        lambda: all(
            "mirror" not in h for h in read(kube, VIRTUAL_SERVICE, ns, "web")["spec"]["http"]
        ),
        "the mirror route gone once the rollout is done",
    )
    eventually(
        lambda: virtualservice_weights(kube, ns, "web", _by_host) == ((100, 0),),
        "the route back at 100/0",
    )
