"""Strategy blocks judged by the released Rollout schema plus the product's rules.

Every step kind and every strategy field of the released schema (read from
../shared/crds) is accepted in a policy and reaches the generated Rollout unchanged;
every invalid one is refused with its path, in the policy and in a service's override.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from tests import builders
from tests.schemas import validate_crd_object
from tests.webhook.core.conftest import released_rollout_schema
from webhook.core.convert import Neighbours, plan_conversion
from webhook.core.errors import PolicyInvalid
from webhook.core.keys import DEFAULT_KEYS as K
from webhook.core.policy import Policy, parse_policy
from webhook.core.policy_strategy import PRODUCT_OWNED, validate_rollout_block

ANALYSIS = {
    "templates": [{"templateName": "success-rate", "clusterScope": True}],
    "args": [
        {"name": "service-name", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "hash", "valueFrom": {"podTemplateHashValue": "Latest"}},
        {"name": "threshold", "value": "0.95"},
    ],
    "dryRun": [{"metricName": "latency"}],
    "measurementRetention": [{"metricName": "success-rate", "limit": 10}],
    "analysisRunMetadata": {"labels": {"team": "payments"}, "annotations": {"a": "b"}},
}

STEPS: dict[str, Any] = {
    "setWeight": 20,
    "pause": {"duration": "30s"},
    "analysis": ANALYSIS,
    "experiment": {
        "duration": "10m",
        "templates": [
            {"name": "baseline", "specRef": "stable", "replicas": 1},
            {"name": "candidate", "specRef": "canary", "weight": 5, "service": {"name": "c"}},
        ],
        "analyses": [{"name": "compare", "templateName": "compare", "requiredForCompletion": True}],
    },
    "setCanaryScale": {"replicas": 2},
    "setHeaderRoute": {
        "name": "header-route",
        "match": [{"headerName": "X-Canary", "headerValue": {"exact": "yes"}}],
    },
    "setMirrorRoute": {
        "name": "mirror",
        "percentage": 50,
        "match": [{"method": {"exact": "GET"}, "path": {"prefix": "/api"}}],
    },
    "plugin": {"name": "example/step", "config": {"anything": [1, {"deep": True}]}},
}
"""One valid sample of every step kind of the released schema."""

CANARY_FIELDS: dict[str, Any] = {
    "steps": [{"setWeight": 50}],
    "analysis": {**ANALYSIS, "startingStep": 1},
    "maxSurge": "25%",
    "maxUnavailable": 0,
    "scaleDownDelaySeconds": 30,
    "abortScaleDownDelaySeconds": 60,
    "scaleDownDelayRevisionLimit": 2,
    "dynamicStableScale": True,
    "minPodsPerReplicaSet": 2,
    "replicaProgressThreshold": {"type": "Percent", "value": 90},
    "antiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": {"weight": 50}},
    "canaryMetadata": {"labels": {"role": "canary"}},
    "stableMetadata": {"annotations": {"role": "stable"}},
}
BLUE_GREEN_FIELDS: dict[str, Any] = {
    "autoPromotionEnabled": False,
    "autoPromotionSeconds": 60,
    "scaleDownDelaySeconds": 300,
    "abortScaleDownDelaySeconds": 30,
    "scaleDownDelayRevisionLimit": 1,
    "previewReplicaCount": 1,
    "maxUnavailable": 1,
    "prePromotionAnalysis": ANALYSIS,
    "postPromotionAnalysis": ANALYSIS,
    "antiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}},
    "activeMetadata": {"labels": {"role": "active"}},
    "previewMetadata": {"labels": {"role": "preview"}},
}


def _strategy_schema(field: str) -> dict[str, Any]:
    spec = released_rollout_schema().schema["properties"]["spec"]
    return dict(spec["properties"]["strategy"]["properties"][field])


def test_the_samples_cover_every_step_kind_and_field_of_the_released_schema() -> None:
    canary = _strategy_schema("canary")
    assert set(STEPS) == set(canary["properties"]["steps"]["items"]["properties"])
    assert set(CANARY_FIELDS) == set(canary["properties"]) - set(PRODUCT_OWNED["canary"])
    blue_green = _strategy_schema("blueGreen")
    assert set(BLUE_GREEN_FIELDS) == set(blue_green["properties"]) - set(PRODUCT_OWNED["blueGreen"])


def _policy(rollout: dict[str, Any]) -> Policy:
    doc = {"defaultEnvironment": "prod", "environments": {"prod": {"rollout": rollout}}}
    return parse_policy(doc, rollout_schema=released_rollout_schema())


def _convert(policy: Policy, *, istio: bool = False, **kw: Any) -> Any:
    """A service with a Service and an HTTPRoute, or with ``istio`` a VirtualService (so
    every canary feature has traffic routing; mirroring needs Istio), converted with the
    released schema as the judge of its Rollout."""
    deployment = kw.pop("deployment", builders.opted_in("web", "prod"))
    service = (builders.service("web", "prod"),)
    if istio:
        vs = (builders.virtualservice("web", "prod"),)
        neighbours = Neighbours(services=service, virtual_services=vs)
    else:
        neighbours = Neighbours(services=service, http_routes=(builders.httproute("web", "prod"),))
    return plan_conversion(
        deployment, neighbours, policy, rollout_schema=released_rollout_schema(), **kw
    )


@pytest.mark.parametrize("kind", sorted(STEPS))
def test_every_step_kind_reaches_the_rollout_unchanged(kind: str) -> None:
    steps = [{kind: copy.deepcopy(STEPS[kind])}, {"setWeight": 100}]
    policy = _policy({"strategy": "canary", "canary": {"steps": steps}})
    # Argo Rollouts mirrors only through Istio (the Gateway API plugin's mirror step does
    # nothing), so the product refuses setMirrorRoute behind an HTTPRoute.
    result = _convert(policy, istio=kind == "setMirrorRoute")
    assert result.converted, result.warnings
    assert result.rollout["spec"]["strategy"]["canary"]["steps"] == steps
    validate_crd_object(result.rollout)  # strictly: no field the API server would prune


def test_every_canary_field_reaches_the_rollout_unchanged() -> None:
    result = _convert(_policy({"canary": copy.deepcopy(CANARY_FIELDS)}))
    assert result.converted, result.warnings
    canary = result.rollout["spec"]["strategy"]["canary"]
    assert {k: canary[k] for k in CANARY_FIELDS} == CANARY_FIELDS
    validate_crd_object(result.rollout)


def test_every_blue_green_field_reaches_the_rollout_unchanged() -> None:
    blue_green = copy.deepcopy(BLUE_GREEN_FIELDS)
    result = _convert(_policy({"strategy": "bluegreen", "blueGreen": blue_green}))
    assert result.converted, result.warnings
    block = result.rollout["spec"]["strategy"]["blueGreen"]
    assert {k: block[k] for k in BLUE_GREEN_FIELDS} == BLUE_GREEN_FIELDS
    validate_crd_object(result.rollout)


SOURCE = "(Rollout schema of argo-rollouts v1.9.1)"


@pytest.mark.parametrize(
    ("block", "errors"),
    [
        (
            "canary: {steps: [{setWieght: 10}]}",
            [
                "r.canary.steps[0].setWieght: unknown field (allowed: analysis, experiment,"
                f" pause, plugin, setCanaryScale, setHeaderRoute, setMirrorRoute, setWeight)"
                f" {SOURCE}"
            ],
        ),
        (
            "canary: {steps: [{setWeight: 101}]}",
            ["r.canary.steps[0].setWeight: must be between 0 and 100"],
        ),
        (
            "canary: {steps: [{setWeight: ten}]}",
            ["r.canary.steps[0].setWeight: must be an integer, not a string"],
        ),
        (
            "canary: {steps: [{pause: {duration: 1d}}]}",
            ["r.canary.steps[0].pause.duration: unknown unit 'd' in duration '1d'"],
        ),
        (
            "canary: {steps: [{pause: {duration: 5m, until: later}}]}",
            [
                f"r.canary.steps[0].pause.until: unknown field (allowed: duration) {SOURCE}",
            ],
        ),
        (
            "canary: {steps: [{setWeight: 10, pause: {}}]}",
            ["r.canary.steps[0]: needs exactly one action (found setWeight, pause)"],
        ),
        (
            "canary: {steps: [{setHeaderRoute: {name: h, match: [{headerName: X}]}}]}",
            [f"r.canary.steps[0].setHeaderRoute.match[0].headerValue: is required {SOURCE}"],
        ),
        (
            "canary: {steps: [{setMirrorRoute: {name: m, percentage: 150}}]}",
            ["r.canary.steps[0].setMirrorRoute.percentage: must be between 0 and 100"],
        ),
        (
            "canary: {steps: [{setMirrorRoute: {percentage: 10}}]}",
            [f"r.canary.steps[0].setMirrorRoute.name: is required {SOURCE}"],
        ),
        (
            "canary: {steps: [{plugin: {config: {x: 1}}}]}",
            [f"r.canary.steps[0].plugin.name: is required {SOURCE}"],
        ),
        (
            "canary: {steps: [{setCanaryScale: {weight: 150}}]}",
            ["r.canary.steps[0].setCanaryScale.weight: must be between 0 and 100"],
        ),
        (
            "canary: {steps: [{experiment: {templates: [{name: a, specRef: other}]}}]}",
            ["r.canary.steps[0].experiment.templates[0].specRef: must be stable or canary"],
        ),
        (
            "canary: {steps: [{analysis: {templates: [{templateName: t}],"
            " args: [{name: n, value: 3}]}}]}",
            [f"r.canary.steps[0].analysis.args[0].value: must be of type string {SOURCE}"],
        ),
        (
            "canary: {scaleDownDelaySeconds: 99999999999}",
            [
                "r.canary.scaleDownDelaySeconds: 99999999999 is out of range for int32"
                f" (-2147483648..2147483647) {SOURCE}"
            ],
        ),
        (
            "canary: {stableService: web, trafficRouting: {nginx: {}}}",
            [
                "r.canary.stableService: is set by rollout-webhook for each service; remove it",
                "r.canary.trafficRouting: is set by rollout-webhook for each service; remove it",
            ],
        ),
        (
            "canary: {workloadRef: {name: x}, selector: {}}",
            [
                "r.canary.selector: is set by rollout-webhook for each service; remove it",
                "r.canary.workloadRef: is set by rollout-webhook for each service; remove it",
            ],
        ),
        (
            "blueGreen: {previewService: p, autoPromotionEnabled: 'no'}",
            [
                f"r.blueGreen.autoPromotionEnabled: must be of type boolean {SOURCE}",
                "r.blueGreen.previewService: is set by rollout-webhook for each service; remove it",
            ],
        ),
        (
            "selector: {}",
            [
                "r.selector: unknown key (allowed: enabled, strategy, canary, blueGreen, notifications)"
            ],
        ),
    ],
)
def test_invalid_strategy_is_refused_with_its_path(block: str, errors: list[str]) -> None:
    found = validate_rollout_block(yaml.safe_load(block), "r", released_rollout_schema())
    assert [str(e) for e in found] == errors


def test_the_policy_names_the_environment_of_each_error() -> None:
    doc = {
        "defaultEnvironment": "prod",
        "environments": {
            "prod": {"rollout": {"canary": {"steps": [{"setWeight": 10}, {"setWieght": 1}]}}},
            "dev": {"rollout": {"canary": {"steps": [{"setWeight": 200}]}}},
        },
    }
    with pytest.raises(PolicyInvalid) as caught:
        parse_policy(doc, rollout_schema=released_rollout_schema())
    assert [e.path for e in caught.value.errors] == [
        "environments.prod.rollout.canary.steps[1].setWieght",
        "environments.dev.rollout.canary.steps[0].setWeight",
    ]


def test_without_a_schema_only_the_product_rules_apply() -> None:
    """No CRD at hand: a step kind the product has no rule for is not judged (callers
    say so, see NO_SCHEMA_NOTE), while the product's own rules still hold."""
    block = {"canary": {"steps": [{"setWieght": 1}, {"setWeight": 200}], "canaryService": "x"}}
    assert [str(e) for e in validate_rollout_block(block, "r")] == [
        "r.canary.canaryService: is set by rollout-webhook for each service; remove it",
        "r.canary.steps[1].setWeight: must be between 0 and 100",
    ]


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        (
            "canary: {steps: [{setMirorRoute: {name: m}}]}",
            "rollout.canary.steps[0].setMirorRoute: unknown field",
        ),
        ("canary: {steps: [{setWeight: -1}]}", "rollout.canary.steps[0].setWeight: must be"),
        ("canary: {canaryService: other}", "rollout.canary.canaryService: is set by"),
    ],
)
def test_an_invalid_override_is_refused_with_its_path(override: str, problem: str) -> None:
    deployment = builders.opted_in("web", "prod", annotations={K.rollout: override})
    result = _convert(_policy({"canary": {"steps": [{"setWeight": 50}]}}), deployment=deployment)
    assert result.decision == "refuse"
    assert any(w.startswith(f"annotation {K.rollout}: {problem}") for w in result.warnings)


def test_a_valid_override_with_a_new_step_kind_reaches_the_rollout() -> None:
    steps = [{"setHeaderRoute": STEPS["setHeaderRoute"]}, {"setWeight": 100}]
    override = yaml.safe_dump({"rollout": {"canary": {"steps": steps}}})
    deployment = builders.opted_in("web", "prod", annotations={K.rollout: override})
    result = _convert(_policy({"canary": {"steps": [{"setWeight": 50}]}}), deployment=deployment)
    assert result.converted, result.warnings
    assert result.rollout["spec"]["strategy"]["canary"]["steps"] == steps


def test_a_remembered_override_is_judged_again_by_another_schema() -> None:
    """Judgements are remembered per annotation text and schema: the same text without a
    schema (product rules only) and then with one gets each its own answer, and the block
    handed out is a copy nobody can spoil for the next request."""
    override = "canary: {steps: [{setMirorRoute: {name: m}}]}"
    deployment = builders.opted_in("web", "prod", annotations={K.rollout: override})
    policy = _policy({"canary": {"steps": [{"setWeight": 50}]}})
    neighbours = Neighbours(services=(builders.service("web", "prod"),))
    unchecked = plan_conversion(deployment, neighbours, policy)
    assert unchecked.converted and unchecked.rollout is not None
    unchecked.rollout["spec"]["strategy"]["canary"]["steps"].clear()  # a careless caller
    again = plan_conversion(deployment, neighbours, policy)
    assert again.rollout is not None
    assert again.rollout["spec"]["strategy"]["canary"]["steps"] == [
        {"setMirorRoute": {"name": "m"}}
    ]
    judged = _convert(policy, deployment=deployment)
    assert judged.decision == "refuse"
