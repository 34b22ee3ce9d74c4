"""Traffic routing: the canary backend in HTTPRoutes and VirtualServices, the preflight
checks, the routing modes, through the planner."""

from __future__ import annotations

from typing import Any

import pytest

from tests.builders import httproute, opted_in, service, virtualservice
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
