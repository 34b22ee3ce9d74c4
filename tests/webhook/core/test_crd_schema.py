"""The released Rollout CRD as the judge of every Rollout the product makes."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from tests import builders
from tests.schemas import CRD_DIR
from webhook.core.convert import Neighbours, plan_conversion, policy_plan_problems
from webhook.core.crd_schema import (
    RolloutSchema,
    SchemaUnusable,
    block_problems,
    rollout_problems,
    rollout_schema_from_crd,
)
from webhook.core.keys import DEFAULT_KEYS as K
from webhook.core.policy import builtin_policy, parse_policy_text

CRD_FILE = CRD_DIR / "argo-rollouts-v1.9.1-rollout.yaml"


@pytest.fixture(scope="module")
def schema() -> RolloutSchema:
    return rollout_schema_from_crd(yaml.safe_load(CRD_FILE.read_text()), source="the CRD")


def rollout(**canary: Any) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "shop", "anything": "the API server's"},
        "spec": {
            "replicas": 3,
            "workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "strategy": {"canary": {"steps": [{"setWeight": 20}], **canary}},
        },
    }


@pytest.mark.parametrize(
    ("canary", "problem"),
    [
        ({}, None),
        ({"unknownField": 1}, None),  # pruned by the API server, not refused
        (
            {"analysis": {"templates": [{"templateName": "t"}], "dryRun": [1]}},
            "spec.strategy.canary.analysis.dryRun[0]: 1 is not of type 'object'",
        ),
        ({"steps": [{"setWeight": "ten"}]}, "spec.strategy.canary.steps[0].setWeight: 'ten'"),
        (
            {"scaleDownDelaySeconds": 99999999999},
            "spec.strategy.canary.scaleDownDelaySeconds: 99999999999 is out of range for int32",
        ),
        ({"scaleDownDelaySeconds": 2**31 - 1}, None),
        ({"maxSurge": "25%"}, None),  # int-or-string
    ],
)
def test_the_served_schema_names_what_it_refuses(
    schema: RolloutSchema, canary: dict[str, Any], problem: str | None
) -> None:
    problems = rollout_problems(schema, rollout(**canary))
    if problem is None:
        assert problems == ()
    else:
        assert problems and problems[0].startswith(problem)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"kind": "ConfigMap"}, "not the CustomResourceDefinition of Rollouts"),
        (
            {
                "kind": "CustomResourceDefinition",
                "spec": {"names": {"kind": "Rollout"}, "versions": [{"name": "v1"}]},
            },
            "serves no v1alpha1 Rollout with a schema",
        ),
    ],
)
def test_a_document_that_is_not_the_rollout_crd_is_named(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(SchemaUnusable, match=message):
        rollout_schema_from_crd(doc, source="f.yaml")


def test_every_environment_of_the_builtin_policy_makes_valid_rollouts(
    schema: RolloutSchema,
) -> None:
    assert policy_plan_problems(builtin_policy(), schema) == ()


def test_a_policy_whose_rollouts_the_schema_refuses_is_named_by_environment(
    schema: RolloutSchema,
) -> None:
    policy = parse_policy_text(
        "defaultEnvironment: prod\n"
        "environments:\n"
        "  prod:\n"
        "    rollout:\n"
        "      strategy: bluegreen\n"
        "      blueGreen: {scaleDownDelaySeconds: 99999999999}\n"
    )
    [problem] = policy_plan_problems(policy, schema)
    assert problem.startswith("environments.prod.rollout: the Rollout it makes is refused")
    assert "spec.strategy.blueGreen.scaleDownDelaySeconds: 99999999999 is out of range" in problem


OVERRIDE = "canary:\n  analysis:\n    templates: [{templateName: t}]\n    dryRun: [1]\n"


def test_a_conversion_the_schema_refuses_admits_the_deployment_as_sent(
    schema: RolloutSchema,
) -> None:
    deployment = builders.opted_in("web", "prod", annotations={K.rollout: OVERRIDE})
    sent = copy.deepcopy(deployment)
    unchecked = plan_conversion(deployment, Neighbours(), builtin_policy(), environment="dev")
    assert unchecked.converted  # the policy's own checks let it through
    judged = plan_conversion(
        deployment, Neighbours(), builtin_policy(), environment="dev", rollout_schema=schema
    )
    assert judged.decision == "refuse"
    assert judged.rollout is None
    assert judged.deployment == sent  # never at 0 replicas for a Rollout that cannot be made
    # The override itself is judged by the schema, before any Rollout is made from it.
    assert judged.warnings == (
        "annotation rollout-webhook.io/rollout: rollout.canary.analysis.dryRun[0]: must be of"
        " type object (Rollout schema of the CRD)",
    )


@pytest.mark.parametrize("replicas", [-5, 2**31, "3", 2.5])
def test_a_deployment_with_an_invalid_replica_count_is_not_patched(replicas: object) -> None:
    deployment = builders.opted_in("web", "prod", replicas=3)
    deployment["spec"]["replicas"] = replicas
    result = plan_conversion(deployment, Neighbours(), builtin_policy())
    assert result.decision == "refuse"
    assert result.deployment["spec"]["replicas"] == replicas
    assert any("spec.replicas" in w and "not a valid count" in w for w in result.warnings)


@pytest.mark.parametrize(
    ("block", "problems"),
    [
        ({"steps": [{"setWeight": 5}], "maxSurge": "25%"}, []),
        ({"maxSurge": [1]}, [(("maxSurge",), "must be an integer or a string")]),
        (
            {"steps": [{"pause": {"duration": True}}]},
            [(("steps", 0, "pause", "duration"), "must be an integer or a string")],
        ),
        ({"dynamicStableScale": "yes"}, [(("dynamicStableScale",), "must be of type boolean")]),
        (
            {"steps": [{"plugin": {}}], "canaryService": "x"},
            [
                (
                    ("canaryService",),
                    "unknown field (allowed: abortScaleDownDelaySeconds, analysis,"
                    " antiAffinity, canaryMetadata, dynamicStableScale, maxSurge, maxUnavailable,"
                    " minPodsPerReplicaSet, pingPong, replicaProgressThreshold,"
                    " scaleDownDelayRevisionLimit, scaleDownDelaySeconds, stableMetadata, steps,"
                    " trafficRouting)",
                ),
                (("steps", 0, "plugin", "name"), "is required"),
            ],
        ),
    ],
)
def test_a_strategy_block_is_judged_strictly_without_the_fields_left_out(
    schema: RolloutSchema, block: dict[str, Any], problems: list[tuple[Any, str]]
) -> None:
    validator = schema.block_validator("canary", ("stableService", "canaryService"))
    assert validator is schema.block_validator("canary", ("stableService", "canaryService"))
    assert [(p.path, p.message) for p in block_problems(validator, block)] == problems


def test_a_schema_without_strategies_judges_no_block() -> None:
    bare = RolloutSchema({"type": "object", "properties": {"spec": {"type": "object"}}}, "bare")
    assert bare.block_validator("canary") is None
