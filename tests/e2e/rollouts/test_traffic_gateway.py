"""Gateway API: the real Argo controller moves an HTTPRoute's weights through the plugin.

The webhook gives the route its canary backend; Argo Rollouts, through the Gateway API
traffic-router plugin (`argoproj-labs/gatewayAPI`, built from its release), moves the weights
at every `setWeight` step. A sampler reads the route every 100 ms while the rollout runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kubernetes import client

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
    GATEWAY,
    PROMOTION,
    STEPS_WALK,
    V1,
    V2,
    V3,
    assert_follows_steps,
    httproute,
    httproute_weights,
    phase,
    promote_to_healthy,
    read,
    wait_for_pause,
    web_rules,
    without_weights,
)

MANUAL_PAUSE = 5  # traffic steps: 10, 2 s, 25, 2 s, 50, pause {} (index 5)
HEADER_PAUSE = 2  # traffic-header steps: 10, setHeaderRoute, pause {} (index 2)


def _route_when(
    kube: client.ApiClient, ns: str, name: str, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any] | None:
    route: dict[str, Any] = read(kube, GATEWAY, ns, name)
    return route if check(route) else None


def _converted_route(kube: client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    return eventually(
        lambda: _route_when(
            kube, ns, name, lambda _: httproute_weights(kube, ns, name) == ((100, 0),)
        ),
        f"HTTPRoute {name} with the canary backend at 100/0",
    )


def test_httproute_weights_follow_every_step_back_to_stable_on_promote_and_abort(
    kubectl: harness.Tool, argo: harness.Tool, kube: client.ApiClient, rollouts_namespace: str
) -> None:
    ns = rollouts_namespace
    apply(
        kubectl,
        service("web", ns),
        httproute("web", ns, web_rules()),
        deployment("web", ns, replicas=4, image=V1, environment="traffic"),
    )
    wait_healthy(kubectl, "web", ns)
    before = _converted_route(kube, ns, "web")
    rollout = get(kubectl, "rollout", "web", "-n", ns)
    assert rollout is not None
    assert rollout["spec"]["strategy"]["canary"]["trafficRouting"] == {
        "plugins": {"argoproj-labs/gatewayAPI": {"namespace": ns, "httpRoute": "web"}}
    }

    with Sampler(lambda: httproute_weights(kube, ns, "web"), interval=0.1) as weights:
        kubectl("set", "image", "deployment/web", f"app={V2}", "-n", ns)
        wait_for_pause(kube, "web", ns, MANUAL_PAUSE)
        paused = read(kube, GATEWAY, ns, "web")
        promote_to_healthy(argo, kube, "web", ns)
        eventually(
            lambda: httproute_weights(kube, ns, "web") == ((100, 0),),
            "the route back at 100/0 once promoted",
        )
    assert_follows_steps(weights.values, [*STEPS_WALK, (100, 0)], optional=[PROMOTION])
    assert weights.values[-1] == ((100, 0),)
    after = read(kube, GATEWAY, ns, "web")
    for seen in (paused, after):
        assert seen["spec"]["parentRefs"] == before["spec"]["parentRefs"]
        assert without_weights(seen["spec"]["rules"], "web-canary") == without_weights(
            before["spec"]["rules"], "web-canary"
        )

    # Abort at the pause: every weight goes back to the stable version.
    with Sampler(lambda: httproute_weights(kube, ns, "web"), interval=0.1) as weights:
        kubectl("set", "image", "deployment/web", f"app={V3}", "-n", ns)
        wait_for_pause(kube, "web", ns, MANUAL_PAUSE)
        argo("abort", "web", "-n", ns)
        eventually(lambda: phase(kube, "web", ns) == "Degraded", "the aborted Rollout Degraded")
        eventually(
            lambda: httproute_weights(kube, ns, "web") == ((100, 0),),
            "the route back at 100/0 after the abort",
        )
    assert_follows_steps(weights.values, [*STEPS_WALK, (100, 0)])
    assert weights.values[-1] == ((100, 0),)


def test_every_httproute_of_a_service_gets_the_canary_and_every_weight_moves(
    kubectl: harness.Tool, argo: harness.Tool, kube: client.ApiClient, rollouts_namespace: str
) -> None:
    ns = rollouts_namespace
    internal = [{"backendRefs": [{"name": "web", "port": 80}]}]
    apply(
        kubectl,
        service("web", ns),
        httproute("web-public", ns, web_rules()),
        httproute("web-internal", ns, internal),
        deployment("web", ns, replicas=4, image=V1, environment="traffic"),
    )
    wait_healthy(kubectl, "web", ns)
    for name in ("web-public", "web-internal"):
        _converted_route(kube, ns, name)
    rollout = get(kubectl, "rollout", "web", "-n", ns)
    assert rollout is not None
    plugin = rollout["spec"]["strategy"]["canary"]["trafficRouting"]["plugins"]
    assert plugin["argoproj-labs/gatewayAPI"]["httpRoutes"] == [
        {"name": "web-internal"},
        {"name": "web-public"},
    ]

    def both() -> tuple[tuple[int, int], ...]:
        return (
            *httproute_weights(kube, ns, "web-public"),
            *httproute_weights(kube, ns, "web-internal"),
        )

    with Sampler(both, interval=0.1) as weights:
        kubectl("set", "image", "deployment/web", f"app={V2}", "-n", ns)
        wait_for_pause(kube, "web", ns, MANUAL_PAUSE)
        assert both() == ((50, 50), (50, 50))
        promote_to_healthy(argo, kube, "web", ns)
        eventually(lambda: both() == ((100, 0), (100, 0)), "both routes back at 100/0")
    # The plugin updates one route after the other: a sample may catch them a step apart.
    for route in (0, 1):
        assert_follows_steps(
            [(s[route],) for s in weights.values], [*STEPS_WALK, (100, 0)], optional=[PROMOTION]
        )


def test_a_header_route_step_adds_its_rule_for_the_step_and_removes_it_after(
    kubectl: harness.Tool, argo: harness.Tool, kube: client.ApiClient, rollouts_namespace: str
) -> None:
    ns = rollouts_namespace
    apply(
        kubectl,
        service("web", ns),
        httproute("web", ns, web_rules()),
        deployment("web", ns, replicas=4, image=V1, environment="traffic-header"),
    )
    wait_healthy(kubectl, "web", ns)
    before = _converted_route(kube, ns, "web")
    rollout = get(kubectl, "rollout", "web", "-n", ns)
    assert rollout is not None
    routing = rollout["spec"]["strategy"]["canary"]["trafficRouting"]
    assert routing["managedRoutes"] == [{"name": "beta-testers"}]

    kubectl("set", "image", "deployment/web", f"app={V2}", "-n", ns)
    wait_for_pause(kube, "web", ns, HEADER_PAUSE)
    rules = read(kube, GATEWAY, ns, "web")["spec"]["rules"]
    managed = [r for r in rules if r.get("name") == "beta-testers"]
    assert len(managed) == 1, rules
    (rule,) = managed
    assert [ref["name"] for ref in rule["backendRefs"]] == ["web-canary"]
    # The plugin copies the stable rule's matches and filters and adds the header.
    (match,) = rule["matches"]
    assert match["path"] == {"type": "PathPrefix", "value": "/api"}
    assert {"name": "x-canary", "type": "Exact", "value": "yes"} in match["headers"]
    assert {"name": "x-tenant", "type": "Exact", "value": "shop"} in match["headers"]
    assert rule["filters"] == before["spec"]["rules"][0]["filters"]
    assert httproute_weights(kube, ns, "web") == ((90, 10),)

    promote_to_healthy(argo, kube, "web", ns)
    after = eventually(
        lambda: _route_when(
            kube,
            ns,
            "web",
            lambda r: not any(x.get("name") == "beta-testers" for x in r["spec"]["rules"]),
        ),
        "the header rule gone once the rollout is done",
    )
    assert without_weights(after["spec"]["rules"], "web-canary") == without_weights(
        before["spec"]["rules"], "web-canary"
    )
    # The managed rule goes before the promotion's last weight change (0/100, then 100/0).
    eventually(lambda: httproute_weights(kube, ns, "web") == ((100, 0),), "the route back at 100/0")


def test_a_mirror_step_is_refused_for_a_service_behind_an_httproute(
    kubectl: harness.Tool, rollouts_namespace: str
) -> None:
    # Argo Rollouts v1.9 accepts setMirrorRoute with Istio only, and the plugin ignores it.
    ns = rollouts_namespace
    apply(kubectl, service("web", ns), httproute("web", ns, web_rules()))
    manifest = json.dumps(deployment("web", ns, replicas=2, image=V1, environment="traffic-mirror"))
    # Once the webhook's caches hold the route, a dry run gets the refusal's reason.
    eventually(
        lambda: (
            "setMirrorRoute needs Istio"
            in kubectl("create", "--dry-run=server", "-f", "-", input=manifest).stderr
        ),
        "the webhook to refuse the mirror step for the HTTPRoute",
        timeout=20,
    )
    answer = kubectl("apply", "-f", "-", input=manifest)
    assert "setMirrorRoute needs Istio" in answer.stderr, answer.stderr
    stored = get(kubectl, "deployment", "web", "-n", ns)
    assert stored is not None
    assert stored["spec"]["replicas"] == 2, "a refused conversion leaves the Deployment as sent"
    assert get(kubectl, "rollout", "web", "-n", ns) is None
