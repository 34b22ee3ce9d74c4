"""Traffic routing: the canary backend in HTTPRoutes and VirtualServices, the preflight
checks, the routing modes, through the planner."""

from __future__ import annotations

from typing import Any

import pytest

from tests.builders import (
    destinationrule,
    httproute,
    opted_in,
    service,
    subset_virtualservice,
    virtualservice,
)
from tests.webhook.core.conftest import plan, policy_with
from webhook.core.convert import Neighbours
from webhook.core.keys import DEFAULT_KEYS as K

# --- traffic routing -----------------------------------------------------------


def test_httproute_gets_the_canary_backend_and_nothing_else_changes() -> None:
    other_rule = {
        "matches": [{"path": {"type": "PathPrefix", "value": "/s"}}],
        "backendRefs": [{"name": "static", "port": 80}],
    }
    stable_rule = {
        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
        "filters": [
            {
                "type": "RequestHeaderModifier",
                "requestHeaderModifier": {"add": [{"name": "x", "value": "y"}]},
            }
        ],
        "backendRefs": [{"name": "web", "port": 80}],
    }
    route = httproute(rules=[other_rule, stable_rule])
    result = plan(opted_in(), neighbours=Neighbours(services=(service(),), http_routes=(route,)))
    (patched,) = result.routes
    assert patched["spec"]["rules"][0] == other_rule
    assert patched["spec"]["rules"][1]["matches"] == stable_rule["matches"]
    assert patched["spec"]["rules"][1]["filters"] == stable_rule["filters"]
    assert patched["spec"]["rules"][1]["backendRefs"] == [
        {"name": "web", "port": 80, "weight": 100},
        {"name": "web-canary", "port": 80, "weight": 0},
    ]
    assert result.rollout["spec"]["strategy"]["canary"]["trafficRouting"] == {
        "plugins": {"argoproj-labs/gatewayAPI": {"namespace": "prod", "httpRoute": "web"}}
    }


def test_existing_canary_weights_are_kept() -> None:
    rules = [
        {
            "backendRefs": [
                {"name": "web", "port": 80, "weight": 75},
                {"name": "web-canary", "port": 80, "weight": 25},
            ]
        }
    ]
    result = plan(
        opted_in(),
        neighbours=Neighbours(services=(service(),), http_routes=(httproute(rules=rules),)),
    )
    assert result.converted
    assert result.routes == ()


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            [{"backendRefs": [{"name": "web", "port": 80}, {"name": "legacy", "port": 80}]}],
            "HTTPRoute web rules[0] sends traffic to backends other than web and web-canary",
        ),
        (
            [
                {
                    "backendRefs": [
                        {"name": "web", "port": 80, "weight": 90},
                        {"name": "web-canary", "port": 80, "weight": 20},
                    ]
                }
            ],
            "HTTPRoute web rules[0]: weights of web and web-canary add up to 110, not 100",
        ),
    ],
)
def test_route_preflight_errors_refuse(rules: list[dict[str, Any]], message: str) -> None:
    result = plan(
        opted_in(),
        neighbours=Neighbours(services=(service(),), http_routes=(httproute(rules=rules),)),
    )
    assert result.decision == "refuse"
    assert any(w.startswith(message) for w in result.warnings), result.warnings


def test_virtualservice_host_level_split() -> None:
    vs = virtualservice()
    result = plan(opted_in(), neighbours=Neighbours(services=(service(),), virtual_services=(vs,)))
    (patched,) = result.routes
    assert patched["spec"]["http"][0]["route"] == [
        {"destination": {"host": "web", "port": {"number": 80}}, "weight": 100},
        {"destination": {"host": "web-canary", "port": {"number": 80}}, "weight": 0},
    ]
    assert result.rollout["spec"]["strategy"]["canary"]["trafficRouting"] == {
        "istio": {"virtualService": {"name": "web"}}
    }


def test_virtualservice_with_several_routes_needs_names() -> None:
    http = [
        {"route": [{"destination": {"host": "web"}}]},
        {"route": [{"destination": {"host": "other"}}]},
    ]
    result = plan(
        opted_in(),
        neighbours=Neighbours(services=(service(),), virtual_services=(virtualservice(http=http),)),
    )
    assert result.decision == "refuse"
    assert any("http[0] must have a name" in w for w in result.warnings)


@pytest.mark.parametrize(
    ("mode", "route_kind"),
    [
        ("auto", "HTTPRoute"),
        ("gatewayAPI", "HTTPRoute"),
        ("istio", "VirtualService"),
        ("none", None),
    ],
)
def test_traffic_routing_modes(mode: str, route_kind: str | None) -> None:
    policy = policy_with(
        f"  prod:\n    trafficRouting: {mode}\n    rollout: {{strategy: canary}}\n"
    )
    neighbours = Neighbours(
        services=(service(),), http_routes=(httproute(),), virtual_services=(virtualservice(),)
    )
    result = plan(opted_in(), policy, neighbours=neighbours)
    assert [r["kind"] for r in result.routes] == ([route_kind] if route_kind else [])


def test_settings_that_need_traffic_routing_are_refused_without_it() -> None:
    policy = policy_with(
        "  prod:\n    rollout:\n      canary: {steps: [{setCanaryScale: {weight: 10}}]}\n"
    )
    result = plan(opted_in(), policy, neighbours=Neighbours(services=(service(),)))
    assert result.decision == "refuse"
    assert (
        "canary steps[0].setCanaryScale needs traffic routing, and this service has none"
        in result.warnings
    )


def test_bluegreen_leaves_routes_alone() -> None:
    neighbours = Neighbours(services=(service(),), http_routes=(httproute(),))
    result = plan(opted_in(annotations={K.strategy: "bluegreen"}), neighbours=neighbours)
    assert result.routes == ()
    assert "trafficRouting" not in result.rollout["spec"]["strategy"]["blueGreen"]


# --- header routes and mirrors (managedRoutes) ------------------------------------

HEADER_STEP = {
    "setHeaderRoute": {
        "name": "beta",
        "match": [{"headerName": "x-beta", "headerValue": {"exact": "1"}}],
    }
}
MIRROR_STEP = {
    "setMirrorRoute": {"name": "shadow", "percentage": 50, "match": [{"method": {"exact": "GET"}}]}
}


def _steps_policy(*steps: dict[str, Any], mode: str = "auto") -> Any:
    import json

    return policy_with(
        f"  prod:\n    trafficRouting: {mode}\n"
        f"    rollout: {{strategy: canary, canary: {{steps: {json.dumps(list(steps))}}}}}\n"
    )


def test_header_and_mirror_steps_get_their_managed_routes_in_order_of_use() -> None:
    steps = (
        {"setWeight": 10},
        MIRROR_STEP,
        HEADER_STEP,
        {"setMirrorRoute": {"name": "shadow"}},  # the same route, removed: listed once
    )
    neighbours = Neighbours(services=(service(),), virtual_services=(virtualservice(),))
    result = plan(opted_in(), _steps_policy(*steps), neighbours=neighbours)
    assert result.converted, result.warnings
    routing = result.rollout["spec"]["strategy"]["canary"]["trafficRouting"]
    assert routing == {
        "istio": {"virtualService": {"name": "web"}},
        "managedRoutes": [{"name": "shadow"}, {"name": "beta"}],
    }
    assert result.rollout["spec"]["strategy"]["canary"]["steps"] == list(steps)


def test_a_service_override_may_add_a_header_step() -> None:
    block = "canary: {steps: [{setWeight: 10}, " + str(HEADER_STEP).replace("'", '"') + "]}"
    neighbours = Neighbours(services=(service(),), http_routes=(httproute(),))
    result = plan(opted_in(annotations={K.rollout: block}), neighbours=neighbours)
    assert result.converted, result.warnings
    routing = result.rollout["spec"]["strategy"]["canary"]["trafficRouting"]
    assert routing["managedRoutes"] == [{"name": "beta"}]
    # A lone httpRoute always takes the plugin's header rules.
    assert routing["plugins"]["argoproj-labs/gatewayAPI"] == {
        "namespace": "prod",
        "httpRoute": "web",
    }


@pytest.mark.parametrize(("steps", "flag"), [((HEADER_STEP,), True), (({"setWeight": 5},), False)])
def test_several_httproutes_take_header_rules_only_when_a_step_adds_them(
    steps: tuple[dict[str, Any], ...], flag: bool
) -> None:
    routes = (httproute("web"), httproute("web-internal"))
    neighbours = Neighbours(services=(service(),), http_routes=routes)
    result = plan(opted_in(), _steps_policy(*steps), neighbours=neighbours)
    assert result.converted, result.warnings
    plugin = result.rollout["spec"]["strategy"]["canary"]["trafficRouting"]["plugins"]
    extra = {"useHeaderRoutes": True} if flag else {}
    assert plugin["argoproj-labs/gatewayAPI"]["httpRoutes"] == [
        {"name": "web", **extra},
        {"name": "web-internal", **extra},
    ]
    assert sorted(r["metadata"]["name"] for r in result.routes) == ["web", "web-internal"]


def test_a_mirror_step_with_the_gateway_api_plugin_is_refused() -> None:
    neighbours = Neighbours(services=(service(),), http_routes=(httproute(),))
    result = plan(opted_in(), _steps_policy({"setWeight": 10}, MIRROR_STEP), neighbours=neighbours)
    assert result.decision == "refuse"
    assert any(w.startswith("setMirrorRoute needs Istio") for w in result.warnings), result.warnings


@pytest.mark.parametrize("step", [HEADER_STEP, MIRROR_STEP], ids=["header", "mirror"])
def test_header_and_mirror_steps_are_refused_without_traffic_routing(step: dict[str, Any]) -> None:
    (action,) = step
    result = plan(opted_in(), _steps_policy(step), neighbours=Neighbours(services=(service(),)))
    assert result.decision == "refuse"
    assert f"canary steps[0].{action} needs traffic routing, and this service has none" in (
        result.warnings
    )


def test_routes_argo_adds_during_a_step_are_not_the_services_own() -> None:
    # Mid-step, Argo has put its header route before the service's unnamed one (both to
    # web-canary and web): the plan must neither refuse nor name routes in the Rollout.
    header_route = {
        "name": "beta",
        "match": [{"headers": {"x-beta": {"exact": "1"}}}],
        "route": [{"destination": {"host": "web-canary", "port": {"number": 80}}, "weight": 100}],
    }
    own = {
        "route": [
            {"destination": {"host": "web", "port": {"number": 80}}, "weight": 90},
            {"destination": {"host": "web-canary", "port": {"number": 80}}, "weight": 10},
        ]
    }
    vs = virtualservice(http=[header_route, own])
    neighbours = Neighbours(services=(service(),), virtual_services=(vs,))
    result = plan(opted_in(), _steps_policy(HEADER_STEP), neighbours=neighbours)
    assert result.converted, result.warnings
    assert result.routes == ()
    routing = result.rollout["spec"]["strategy"]["canary"]["trafficRouting"]
    assert routing["istio"] == {"virtualService": {"name": "web"}}


# --- Istio subset-level routing ------------------------------------------------------


def test_subset_level_routing_splits_one_host_by_the_destination_rules_subsets() -> None:
    neighbours = Neighbours(
        services=(service(),),
        virtual_services=(subset_virtualservice(),),
        destination_rules=(destinationrule(),),
    )
    result = plan(opted_in(), neighbours=neighbours)
    assert result.converted, result.warnings
    (patched,) = result.routes
    assert patched["spec"]["http"][0]["route"] == [
        {"destination": {"host": "web", "subset": "stable", "port": {"number": 80}}, "weight": 100},
        {"destination": {"host": "web", "subset": "canary", "port": {"number": 80}}, "weight": 0},
    ]
    canary = result.rollout["spec"]["strategy"]["canary"]
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
    # Argo would pin a named stable Service to the stable pods, leaving the canary subset
    # of the same host without endpoints: no Services are named, no canary one is made.
    assert "stableService" not in canary and "canaryService" not in canary
    assert result.services == ()


def test_a_route_already_split_by_subsets_is_accepted_as_it_is() -> None:
    neighbours = Neighbours(
        services=(service(),),
        virtual_services=(subset_virtualservice(subsets=("v1", "v2")),),
        destination_rules=(destinationrule(subsets=("v1", "v2")),),
    )
    result = plan(opted_in(), neighbours=neighbours)
    # Two subsets, neither named canary, both used: which is which cannot be told.
    assert result.decision == "refuse"
    assert any("cannot tell its stable and canary subsets apart" in w for w in result.warnings)

    neighbours = Neighbours(
        services=(service(),),
        virtual_services=(subset_virtualservice(subsets=("v1", "canary")),),
        destination_rules=(destinationrule(subsets=("v1", "canary")),),
    )
    result = plan(opted_in(), neighbours=neighbours)
    assert result.converted, result.warnings
    assert result.routes == ()
    rule = result.rollout["spec"]["strategy"]["canary"]["trafficRouting"]["istio"]
    assert rule["destinationRule"]["stableSubsetName"] == "v1"


def test_the_canary_subset_is_the_rules_other_one_when_none_is_named_canary() -> None:
    neighbours = Neighbours(
        services=(service(),),
        virtual_services=(subset_virtualservice(subsets=("blue",)),),
        destination_rules=(destinationrule(subsets=("blue", "green")),),
    )
    result = plan(opted_in(), neighbours=neighbours)
    assert result.converted, result.warnings
    (patched,) = result.routes
    assert [d["destination"]["subset"] for d in patched["spec"]["http"][0]["route"]] == [
        "blue",
        "green",
    ]


@pytest.mark.parametrize(
    "rules",
    [(), (destinationrule(host="other"),), (destinationrule(), destinationrule("web-2"))],
    ids=["none", "other-host", "two"],
)
def test_subsets_without_one_destination_rule_are_refused_saying_so(
    rules: tuple[dict[str, Any], ...],
) -> None:
    neighbours = Neighbours(
        services=(service(),),
        virtual_services=(subset_virtualservice(),),
        destination_rules=rules,
    )
    result = plan(opted_in(), neighbours=neighbours)
    assert result.decision == "refuse"
    assert any(
        "route to subsets stable of host web: one DestinationRule for host web must declare them"
        in w
        for w in result.warnings
    ), result.warnings
    assert not any("destinations other than" in w for w in result.warnings)


def test_opt_out_removes_the_canary_subset_destination() -> None:
    from webhook.core.optout import plan_opt_out

    neighbours = Neighbours(
        services=(service(),),
        virtual_services=(subset_virtualservice(),),
        destination_rules=(destinationrule(),),
    )
    converted = plan(opted_in(), neighbours=neighbours)
    (patched,) = converted.routes
    after = Neighbours(
        services=(service(),),
        virtual_services=(patched,),
        destination_rules=(destinationrule(),),
        rollouts=(converted.rollout,),
    )
    restoration = plan_opt_out(converted.deployment, after)
    (route,) = restoration.routes
    assert route["spec"]["http"][0]["route"] == [
        {"destination": {"host": "web", "subset": "stable", "port": {"number": 80}}, "weight": 100}
    ]
