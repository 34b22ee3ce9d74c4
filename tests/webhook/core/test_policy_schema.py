"""The policy document's own settings, one document per row: every error, its path and
its message exactly, in order. Strategy blocks without a schema get the product's rules
only (tests/webhook/core/test_policy_strategy.py has them with the released schema)."""

from __future__ import annotations

import pytest
import yaml

from webhook.core.policy_schema import validate_policy_document, validate_rollout_block

CANARY_STEPS = (
    "defaultEnvironment: prod\n"
    "environments:\n"
    "  prod:\n"
    "    rollout:\n"
    "      canary:\n"
    "        steps: [{setWeight: 200}, {setWieght: 1}, {pause: {duration: x}}]\n"
    "        maxSurge: 0\n"
    "        maxUnavailable: '0%'\n"
)


@pytest.mark.parametrize(
    ("document", "errors"),
    [
        (
            "defaultEnvironment: qa\n"
            "namespaces: [{pattern: '', environment: qa}, 3]\n"
            "environments: [prod]\n",
            [
                "environments: must be a mapping, not a list",
                "defaultEnvironment: names no environment: 'qa'",
                "namespaces[0].pattern: must be a non-empty string",
                "namespaces[0].environment: names no environment: 'qa'",
                "namespaces[1]: must be a mapping, not an integer",
            ],
        ),
        (
            "apiVersion: v1\nkind: Polisy\nrolloutUpdates: sometimes\ndefaultEnviroment: prod\n",
            [
                "defaultEnviroment: unknown key (allowed: apiVersion, kind, rolloutUpdates,"
                " environments, defaultEnvironment, namespaces)",
                "apiVersion: must be rollout-webhook.io/v1alpha1",
                "kind: must be Policy",
                "rolloutUpdates: must be one of immediate, nextChange, never, not 'sometimes'",
                "environments: is required",
                "defaultEnvironment: is required",
            ],
        ),
        (
            "defaultEnvironment: 3\n"
            "environments:\n"
            "  prod: {trafficRouting: nginx, scaleDown: sometimes, allowServiceOverrides: 1}\n"
            "  dev: []\n",
            [
                "environments.prod.rollout: is required",
                "environments.prod.scaleDown: must be one of never, onsuccess, progressively,"
                " not 'sometimes'",
                "environments.prod.allowServiceOverrides: must be true or false, not an integer",
                "environments.prod.trafficRouting: must be one of auto, gatewayAPI, istio, none,"
                " not 'nginx'",
                "environments.dev: must be a mapping, not a list",
                "defaultEnvironment: must be a non-empty string",
            ],
        ),
        (
            CANARY_STEPS,
            [
                "environments.prod.rollout.canary: maxSurge and maxUnavailable cannot both be zero",
                "environments.prod.rollout.canary.steps[0].setWeight: must be between 0 and 100",
                "environments.prod.rollout.canary.steps[2].pause.duration: invalid duration 'x'",
            ],
        ),
        ("[1, 2]", ["(document): must be a mapping, not a list"]),
    ],
)
def test_document_errors(document: str, errors: list[str]) -> None:
    assert [str(e) for e in validate_policy_document(yaml.safe_load(document))] == errors


@pytest.mark.parametrize(
    ("block", "errors"),
    [
        (
            "{strategy: rolling, canary: {steps: [{pause: }, {experiment: {duration: 5,"
            " templates: [{name: a, specRef: stable, weight: 101}], analyses: [{name: a}]}},"
            " {setCanaryScale: {}}]}}",
            [
                "rollout.strategy: must be one of canary, bluegreen, not 'rolling'",
                "rollout.canary.steps[1].experiment.duration: must be a duration string such"
                " as 10m",
                "rollout.canary.steps[1].experiment.templates[0].weight: must be between 0 and 100",
                "rollout.canary.steps[2].setCanaryScale: needs exactly one of weight, replicas"
                " or matchTrafficWeight",
            ],
        ),
        (
            "{blueGreen: {autoPromotionSeconds: -1, prePromotionAnalysis: {templates:"
            " [{templateName: t}], args: [{name: a, value: x, valueFrom: {fieldRef: {}}}],"
            " startingStep: 1}}}",
            [
                "rollout.blueGreen.autoPromotionSeconds: must be at least 0",
                "rollout.blueGreen.prePromotionAnalysis.args[0]: needs exactly one of value"
                " or valueFrom",
            ],
        ),
        ("{canary: {steps: [{pause: }, {pause: {}}]}}", []),
        ("[]", ["rollout: must be a mapping, not a list"]),
    ],
)
def test_rollout_block_errors(block: str, errors: list[str]) -> None:
    assert [str(e) for e in validate_rollout_block(yaml.safe_load(block), "rollout")] == errors
