"""The conversion planner, rule by rule, as tables."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.builders import (
    deployment,
    hpa,
    httproute,
    namespace,
    opted_in,
    service,
    virtualservice,
)
from webhook.core.convert import Neighbours, plan_conversion
from webhook.core.keys import DEFAULT_KEYS as K
from webhook.core.policy import Policy, builtin_policy, parse_policy_text

POLICY = builtin_policy()


def policy_with(env_yaml: str, default: str = "prod") -> Policy:
    return parse_policy_text(f"defaultEnvironment: {default}\nenvironments:\n{env_yaml}")


def plan(dep: dict[str, Any], policy: Policy = POLICY, **kw: Any) -> Any:
    neighbours = kw.pop("neighbours", Neighbours())
    return plan_conversion(dep, neighbours, policy, **kw)


# --- opt-in and environment --------------------------------------------------


@pytest.mark.parametrize(
    ("dep_label", "ns_label", "decision", "reason"),
    [
        (
            "true",
            None,
            "convert",
            "opted in by label rollout-webhook.io/enabled=true on the Deployment",
        ),
        (
            None,
            "true",
            "convert",
            "opted in by label rollout-webhook.io/enabled=true on Namespace prod",
        ),
        ("false", "true", "skip", "opted out by label rollout-webhook.io/enabled=false"),
        (None, None, "skip", "not opted in"),
        (None, "false", "skip", "not opted in"),
        ("yes", None, "skip", "not opted in"),
    ],
)
def test_opt_in_rules(
    dep_label: str | None, ns_label: str | None, decision: str, reason: str
) -> None:
    labels = {K.enabled: dep_label} if dep_label else {}
    ns = namespace("prod", {K.enabled: ns_label} if ns_label else {})
    result = plan(deployment(labels=labels), neighbours=Neighbours(namespace=ns))
    assert result.decision == decision
    assert result.reason.startswith(reason)
    if decision == "skip":
        assert result.rollout is None
        assert result.deployment == deployment(labels=labels)


def test_unexpected_label_value_is_a_warning() -> None:
    result = plan(deployment(labels={K.enabled: "yes"}))
    assert result.warnings == (
        'label rollout-webhook.io/enabled=\'yes\' on the Deployment is neither "true" nor "false"',
    )


@pytest.mark.parametrize(
    ("dep_env", "ns_env", "ns_name", "expected"),
    [
        ("staging", "dev", "prod", "staging"),
        (None, "dev", "prod", "dev"),
        (None, None, "team-a-staging", "staging"),
        (None, None, "dev", "dev"),
        (None, None, "payments", "prod"),  # defaultEnvironment
    ],
)
def test_environment_resolution(
    dep_env: str | None, ns_env: str | None, ns_name: str, expected: str
) -> None:
    labels = {K.environment: dep_env} if dep_env else {}
    ns = namespace(ns_name, {K.environment: ns_env} if ns_env else {})
    result = plan(opted_in(ns=ns_name, labels=labels), neighbours=Neighbours(namespace=ns))
    assert result.environment == expected


def test_unknown_environment_is_refused_with_its_source() -> None:
    result = plan(opted_in(labels={K.environment: "qa"}))
    assert result.decision == "refuse"
    assert (
        "policy has no environment 'qa' (from label rollout-webhook.io/environment on the Deployment)"
        in result.warnings
    )


def test_environment_kill_switch() -> None:
    policy = policy_with("  prod:\n    rollout: {enabled: false, strategy: canary}\n")
    result = plan(opted_in(), policy)
    assert result.decision == "skip"
    assert "switched off" in result.reason


# --- overrides ---------------------------------------------------------------


def test_strategy_annotation_overrides_where_allowed() -> None:
    dep = opted_in(annotations={K.strategy: "bluegreen"})
    result = plan(dep, neighbours=Neighbours(services=(service(),)))
    assert result.strategy == "bluegreen"
    assert result.rollout is not None
    assert result.rollout["spec"]["strategy"] == {
        "blueGreen": {"activeService": "web", "previewService": "web-preview"}
    }
    assert [s["metadata"]["name"] for s in result.services] == ["web-preview"]


def test_overrides_ignored_when_not_allowed() -> None:
    policy = policy_with(
        "  prod:\n    allowServiceOverrides: false\n    rollout:\n      canary: {steps: [{setWeight: 20}]}\n"
    )
    dep = opted_in(annotations={K.strategy: "bluegreen", K.rollout: "canary: {steps: []}"})
    result = plan(dep, policy)
    assert result.strategy == "canary"
    assert result.rollout is not None
    assert result.rollout["spec"]["strategy"]["canary"]["steps"] == [{"setWeight": 20}]
    assert any("does not allow service overrides" in w for w in result.warnings)


def test_rollout_annotation_merges_and_replaces_steps() -> None:
    block = "rollout:\n  canary:\n    steps:\n      - setWeight: 30\n    maxSurge: 1\n"
    result = plan(opted_in(annotations={K.rollout: block}))
    assert result.rollout is not None
    canary = result.rollout["spec"]["strategy"]["canary"]
    assert canary["steps"] == [{"setWeight": 30}]
    assert canary["maxSurge"] == 1
    assert canary["maxUnavailable"] == "25%"  # carried from the Deployment


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        (
            {K.strategy: "rolling"},
            "annotation rollout-webhook.io/strategy='rolling': must be one of canary, bluegreen",
        ),
        (
            {K.rollout: "canary: {steps: [{setWeight: 101}]}"},
            "annotation rollout-webhook.io/rollout: rollout.canary.steps[0].setWeight: must be between 0 and 100",
        ),
        (
            {K.rollout: "canary: ["},
            "annotation rollout-webhook.io/rollout: not valid YAML at line 1",
        ),
    ],
)
def test_invalid_overrides_refuse_with_a_message(annotations: dict[str, str], message: str) -> None:
    result = plan(opted_in(annotations=annotations))
    assert result.decision == "refuse"
    assert result.deployment == opted_in(annotations=annotations)
    assert message in result.warnings


def test_service_cannot_turn_a_killed_environment_back_on() -> None:
    policy = policy_with("  prod:\n    rollout: {enabled: false}\n")
    result = plan(opted_in(annotations={K.rollout: "enabled: true"}), policy)
    assert result.decision == "skip"


def test_service_can_opt_out_through_its_rollout_block() -> None:
    result = plan(opted_in(annotations={K.rollout: "rollout:\n  enabled: false\n"}))
    assert result.decision == "skip"


# --- the Rollout and the Deployment ------------------------------------------


def test_rollout_shape() -> None:
    dep = opted_in(labels={"app.kubernetes.io/instance": "web-prod", "team": "a"})
    dep["metadata"]["annotations"] = {"argocd.argoproj.io/tracking-id": "x"}
    dep["spec"].update(revisionHistoryLimit=4, minReadySeconds=5, progressDeadlineSeconds=300)
    result = plan(dep)
    rollout = result.rollout
    assert rollout is not None
    assert rollout["metadata"]["labels"] == {"team": "a", K.managed: "true", K.generated_for: "web"}
    assert "argocd.argoproj.io/tracking-id" not in rollout["metadata"]["annotations"]
    spec = rollout["spec"]
    assert spec["workloadRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
        "scaleDown": "onsuccess",
    }
    assert "template" not in spec
    assert (
        spec["replicas"],
        spec["revisionHistoryLimit"],
        spec["minReadySeconds"],
        spec["progressDeadlineSeconds"],
    ) == (3, 4, 5, 300)


def test_create_scales_the_deployment_to_zero_and_records_the_decision() -> None:
    result = plan(opted_in(replicas=5), operation="CREATE")
    meta = result.deployment["metadata"]["annotations"]
    assert result.deployment["spec"]["replicas"] == 0
    assert meta[K.original_replicas] == "5"
    assert meta[K.rollout_name] == "web"
    assert meta[K.applied_environment] == "prod"
    assert meta[K.applied_strategy] == "canary"
    assert meta[K.policy_version] == str(POLICY.version)
    assert result.rollout is not None and result.rollout["spec"]["replicas"] == 5


def test_update_of_a_running_deployment_leaves_replicas_to_argo() -> None:
    old = deployment(replicas=4)
    new = opted_in(replicas=4)
    result = plan(new, operation="UPDATE", old_deployment=old)
    assert result.deployment["spec"]["replicas"] == 4
    assert result.rollout is not None and result.rollout["spec"]["replicas"] == 4


def test_gitops_resync_of_replicas_does_not_double_capacity() -> None:
    """argo-rollouts#4935: a sync puts replicas back after Argo scaled the Deployment down."""
    converted = plan(opted_in(replicas=3)).deployment
    scaled_down = {**converted, "spec": {**converted["spec"], "replicas": 0}}
    resync = {**converted, "spec": {**converted["spec"], "replicas": 6}}
    result = plan(resync, operation="UPDATE", old_deployment=scaled_down)
    assert result.deployment["spec"]["replicas"] == 0
    assert result.deployment["metadata"]["annotations"][K.original_replicas] == "6"
    assert result.rollout is not None and result.rollout["spec"]["replicas"] == 6


def test_hpa_bounds_the_rollout_replicas_and_is_retargeted() -> None:
    result = plan(opted_in(replicas=1), neighbours=Neighbours(hpas=(hpa(lo=3, hi=8), hpa("other"))))
    assert result.rollout is not None and result.rollout["spec"]["replicas"] == 3
    assert [h["spec"]["scaleTargetRef"] for h in result.hpas] == [
        {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "web"}
    ]


def test_existing_rollout_keeps_hpa_managed_replicas() -> None:
    first = plan(opted_in(), neighbours=Neighbours(hpas=(hpa(),)))
    assert first.rollout is not None
    first.rollout["spec"]["replicas"] = 7  # the HPA scaled it
    again = plan(
        first.deployment,
        neighbours=Neighbours(hpas=first.hpas, rollouts=(first.rollout,)),
        operation="UPDATE",
        old_deployment=first.deployment,
    )
    assert again.rollout is not None and again.rollout["spec"]["replicas"] == 7


def test_strategy_never_changes_under_a_running_rollout() -> None:
    first = plan(opted_in())
    assert first.rollout is not None
    running = {**first.rollout, "status": {"phase": "Paused"}}
    staging = plan(
        first.deployment,
        neighbours=Neighbours(rollouts=(running,)),
        environment="staging",
    )
    assert staging.rollout is not None
    assert staging.rollout["spec"]["strategy"] == first.rollout["spec"]["strategy"]
    healthy = {**first.rollout, "status": {"phase": "Healthy"}}
    moved = plan(
        first.deployment, neighbours=Neighbours(rollouts=(healthy,)), environment="staging"
    )
    assert moved.rollout is not None
    assert moved.rollout["spec"]["strategy"]["canary"]["steps"][0] == {"setWeight": 50}


def test_recreate_is_a_warning() -> None:
    result = plan(opted_in(strategy={"type": "Recreate"}))
    assert result.converted
    assert any("Recreate has no Rollout equivalent" in w for w in result.warnings)


def test_owner_reference_once_the_deployment_has_a_uid() -> None:
    result = plan(opted_in(uid="1234"), neighbours=Neighbours(services=(service(),)))
    assert result.rollout is not None
    owners = [
        result.rollout["metadata"]["ownerReferences"],
        result.services[0]["metadata"]["ownerReferences"],
    ]
    assert all(
        o == [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "1234"}]
        for o in owners
    )
    assert "ownerReferences" not in plan(opted_in()).rollout["metadata"]


# --- Services ------------------------------------------------------------------


def test_canary_service_clone() -> None:
    svc = service()
    svc["spec"].update(type="LoadBalancer", clusterIP="10.0.0.1")
    svc["spec"]["ports"][0]["nodePort"] = 30080
    result = plan(opted_in(), neighbours=Neighbours(services=(svc,)))
    assert result.services == (
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "web-canary",
                "namespace": "prod",
                "labels": {K.managed: "true", K.generated_for: "web"},
            },
            "spec": {
                "type": "ClusterIP",
                "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
            },
        },
    )
    canary = result.rollout["spec"]["strategy"]["canary"]
    assert (canary["stableService"], canary["canaryService"]) == ("web", "web-canary")


@pytest.mark.parametrize(
    "selector",
    [{"app": "other"}, {"app": "web", "tier": "x"}, {}],
    ids=["other-app", "not-a-subset", "no-selector"],
)
def test_services_that_do_not_select_the_pods_are_ignored(selector: dict[str, str]) -> None:
    result = plan(opted_in(), neighbours=Neighbours(services=(service(selector=selector),)))
    assert result.services == ()
    assert any("canary by replica count only" in w for w in result.warnings)


def test_bluegreen_without_a_service_is_refused() -> None:
    result = plan(opted_in(annotations={K.strategy: "bluegreen"}))
    assert result.decision == "refuse"
    assert "blue-green needs a Service that selects the pods; none does" in result.warnings


def test_several_services_prefer_the_one_named_as_the_deployment() -> None:
    result = plan(
        opted_in(),
        neighbours=Neighbours(services=(service("a-web", selector={"app": "web"}), service())),
    )
    assert result.rollout["spec"]["strategy"]["canary"]["stableService"] == "web"
    assert not any("Services select" in w for w in result.warnings)


def test_long_service_names_stay_dns_labels() -> None:
    long = "a" * 60
    result = plan(
        opted_in(long, pod_labels={"app": "x"}),
        neighbours=Neighbours(services=(service(long, selector={"app": "x"}),)),
    )
    assert all(len(s["metadata"]["name"]) <= 63 for s in result.services)


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


def test_generated_objects_are_never_candidates() -> None:
    first = plan(opted_in(), neighbours=Neighbours(services=(service(),)))
    again = plan(first.deployment, neighbours=Neighbours(services=(service(), *first.services)))
    assert again.rollout == first.rollout


def test_warnings_are_plain_strings() -> None:
    result = plan(opted_in())
    assert all(isinstance(w, str) for w in result.warnings)
    yaml.safe_dump(list(result.warnings))


def test_services_argo_pinned_still_belong_to_the_deployment() -> None:
    """Argo adds rollouts-pod-template-hash to the Services' selectors; a later update of the
    converted Deployment must still find them (and never copy the pin to the canary)."""
    first = plan(opted_in(), neighbours=Neighbours(services=(service(),)))
    pinned = service()
    pinned["spec"]["selector"]["rollouts-pod-template-hash"] = "6d4f"
    canary = {
        **first.services[0],
        "spec": {
            **first.services[0]["spec"],
            "selector": {"app": "web", "rollouts-pod-template-hash": "77aa"},
        },
    }
    again = plan(
        first.deployment,
        neighbours=Neighbours(services=(pinned, canary), rollouts=(first.rollout,)),
        operation="UPDATE",
        old_deployment=first.deployment,
    )
    assert again.converted
    assert again.rollout == first.rollout
    assert again.services == first.services
    bluegreen = plan(
        opted_in(annotations={K.strategy: "bluegreen"}), neighbours=Neighbours(services=(pinned,))
    )
    assert bluegreen.converted
    assert bluegreen.services[0]["spec"]["selector"] == {"app": "web"}
