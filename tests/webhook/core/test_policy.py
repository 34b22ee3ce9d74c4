"""Policy validation: every error, with its path; the built-in default; ConfigMap form."""

from __future__ import annotations

import textwrap

import pytest

from tests.webhook.core.conftest import released_rollout_schema
from webhook.core.errors import PolicyInvalid
from webhook.core.policy import (
    builtin_policy,
    parse_policy_text,
    policy_from_configmap,
    policy_from_document,
)

VALID = """\
defaultEnvironment: prod
environments:
  prod:
    rollout:
      strategy: canary
      canary:
        steps: [{setWeight: 10}, {pause: {duration: 10m}}]
"""


def errors_of(text: str) -> list[str]:
    """The errors of a policy judged by the product's rules and the released schema."""
    with pytest.raises(PolicyInvalid) as caught:
        parse_policy_text(textwrap.dedent(text), rollout_schema=released_rollout_schema())
    return [str(e) for e in caught.value.errors]


def env(rollout: str, extra: str = "") -> str:
    body = textwrap.indent(textwrap.dedent(rollout), " " * 6)
    return f"defaultEnvironment: prod\nenvironments:\n  prod:\n{extra}    rollout:\n{body}"


def test_builtin_policy_is_the_seeds_examples() -> None:
    policy = builtin_policy()
    assert set(policy.environments) == {"dev", "staging", "prod"}
    steps = {name: env.rollout["canary"]["steps"] for name, env in policy.environments.items()}
    assert steps["dev"] == [{"setWeight": 100}]
    assert steps["staging"] == [{"setWeight": 50}, {"pause": {"duration": "5m"}}]
    assert [s.get("setWeight") for s in steps["prod"] if "setWeight" in s] == [10, 25, 50, 75]
    assert [s["pause"]["duration"] for s in steps["prod"] if "pause" in s] == [
        "10m",
        "10m",
        "15m",
        "10m",
    ]
    assert all(e.allow_service_overrides for e in policy.environments.values())
    assert policy.environment_for_namespace("payments-prod") == "prod"
    assert policy.environment_for_namespace("dev") == "dev"
    assert policy.environment_for_namespace("unknown") is None


def test_valid_policy_defaults() -> None:
    policy = parse_policy_text(VALID, name="ns/cm", resource_version="42")
    prod = policy.environments["prod"]
    assert (prod.scale_down, prod.allow_service_overrides, prod.traffic_routing) == (
        "onsuccess",
        True,
        "auto",
    )
    assert prod.enabled
    assert policy.rollout_updates == "nextChange"
    assert str(policy.version).startswith("ns/cm@42/")


def test_digest_ignores_formatting() -> None:
    reformatted = VALID.replace(
        "[{setWeight: 10}, {pause: {duration: 10m}}]",
        "\n" + ("          - setWeight: 10\n          - pause:\n              duration: 10m"),
    )
    assert parse_policy_text(VALID).version.sha256 == parse_policy_text(reformatted).version.sha256


@pytest.mark.parametrize(
    ("rollout", "expected"),
    [
        (
            "canary: {steps: [{setWeight: 10}, {setWeight: 20}, {setWeight: 150}]}",
            "environments.prod.rollout.canary.steps[2].setWeight: must be between 0 and 100",
        ),
        (
            "canary: {steps: [{setWieght: 10}]}",
            "environments.prod.rollout.canary.steps[0].setWieght: unknown field",
        ),
        (
            "canary: {steps: [{setWeight: 10, pause: {}}]}",
            "environments.prod.rollout.canary.steps[0]: needs exactly one action",
        ),
        ("canary: {steps: [{}]}", "environments.prod.rollout.canary.steps[0]: needs exactly one"),
        (
            "canary: {steps: [{pause: {duration: 5x}}]}",
            "environments.prod.rollout.canary.steps[0].pause.duration: unknown unit",
        ),
        (
            "canary: {steps: [{pause: {duration: -1}}]}",
            "environments.prod.rollout.canary.steps[0].pause.duration: must not be negative",
        ),
        (
            "strategy: rolling",
            "environments.prod.rollout.strategy: must be one of canary, bluegreen",
        ),
        ("enabled: yes-please", "environments.prod.rollout.enabled: must be true or false"),
        ("canary: {stepz: []}", "environments.prod.rollout.canary.stepz: unknown field"),
        (
            "canary: {steps: {setWeight: 1}}",
            "environments.prod.rollout.canary.steps: must be a list",
        ),
        (
            "canary: {steps: [{analysis: {templates: []}}]}",
            "environments.prod.rollout.canary.steps[0].analysis.templates: must name at least one",
        ),
        (
            "canary: {steps: [{analysis: {templates: [{name: x}]}}]}",
            "environments.prod.rollout.canary.steps[0].analysis.templates[0].name: unknown field",
        ),
        (
            "canary: {steps: [{analysis: {templates: [{templateName: a}], args: [{name: n}]}}]}",
            "environments.prod.rollout.canary.steps[0].analysis.args[0]: needs exactly one of value",
        ),
        (
            "canary: {steps: [{analysis: {templates: [{templateName: a}], "
            "args: [{name: n, value: 3}]}}]}",
            "environments.prod.rollout.canary.steps[0].analysis.args[0].value: must be of type string",
        ),
        (
            "canary: {steps: [{setCanaryScale: {weight: 10, replicas: 2}}]}",
            "environments.prod.rollout.canary.steps[0].setCanaryScale: needs exactly one of",
        ),
        (
            "canary: {steps: [{experiment: {duration: 5q, templates: [{name: a, specRef: x}]}}]}",
            "environments.prod.rollout.canary.steps[0].experiment.duration: unknown unit",
        ),
        (
            "canary: {steps: [{experiment: {templates: [{name: a, specRef: x}]}}]}",
            "environments.prod.rollout.canary.steps[0].experiment.templates[0].specRef: must be",
        ),
        ("canary: {maxSurge: 0, maxUnavailable: 0}", "environments.prod.rollout.canary: maxSurge"),
        (
            "canary: {maxSurge: lots}",
            "environments.prod.rollout.canary.maxSurge: must be an integer",
        ),
        (
            "blueGreen: {autoPromotionEnabled: 'false'}",
            "environments.prod.rollout.blueGreen.autoPromotionEnabled: must be of type boolean",
        ),
        (
            "blueGreen: {scaleDownDelaySeconds: -5}",
            "environments.prod.rollout.blueGreen.scaleDownDelaySeconds: must be at least 0",
        ),
        (
            "blueGreen: {previewReplicaCount: two}",
            "environments.prod.rollout.blueGreen.previewReplicaCount: must be an integer",
        ),
        (
            "blueGreen: {prePromotionAnalysis: {templates: [{}]}}",
            "environments.prod.rollout.blueGreen.prePromotionAnalysis.templates[0].templateName: is"
            " required",
        ),
        (
            "blueGreen: {activeService: x}",
            "environments.prod.rollout.blueGreen.activeService: is set by rollout-webhook",
        ),
    ],
)
def test_rollout_block_errors(rollout: str, expected: str) -> None:
    found = errors_of(env(rollout))
    assert any(e.startswith(expected) for e in found), found


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("    scaleDown: sometimes\n", "environments.prod.scaleDown: must be one of never"),
        ("    trafficRouting: nginx\n", "environments.prod.trafficRouting: must be one of auto"),
        ("    allowServiceOverrides: 1\n", "environments.prod.allowServiceOverrides: must be true"),
        ("    replicas: 3\n", "environments.prod.replicas: unknown key"),
    ],
)
def test_environment_setting_errors(setting: str, expected: str) -> None:
    found = errors_of(env("strategy: canary", extra=setting))
    assert any(e.startswith(expected) for e in found), found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("environments: {}", "environments: must name at least one environment"),
        ("defaultEnvironment: prod", "environments: is required"),
        ("[1, 2]", "(document): must be a mapping"),
        (
            VALID.replace("defaultEnvironment: prod", "defaultEnvironment: qa"),
            "defaultEnvironment: names no",
        ),
        (
            VALID + "namespaces: [{pattern: '*-qa', environment: qa}]",
            "namespaces[0].environment: names no",
        ),
        (
            VALID + "namespaces: [{pattern: '', environment: prod}]",
            "namespaces[0].pattern: must be a non",
        ),
        (VALID + "rolloutUpdates: sometimes", "rolloutUpdates: must be one of immediate"),
        (VALID + "kind: Polisy", "kind: must be Policy"),
        (VALID + "defaultEnviroment: prod", "defaultEnviroment: unknown key"),
        ("a: [", "line 1, column 5: not valid YAML"),
    ],
)
def test_document_errors(text: str, expected: str) -> None:
    found = errors_of(text)
    assert any(e.startswith(expected) for e in found), found


def test_every_error_is_reported_not_just_the_first() -> None:
    found = errors_of(
        env("canary: {steps: [{setWeight: 200}, {setWieght: 1}, {pause: {duration: x}}]}")
    )
    assert len(found) >= 3


def test_configmap_form() -> None:
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "rollout-webhook-policy", "namespace": "ops", "resourceVersion": "7"},
        "data": {"policy.yaml": VALID},
    }
    policy = policy_from_configmap(cm)
    assert policy.version.name == "ops/rollout-webhook-policy"
    assert policy.version.resource_version == "7"
    assert policy_from_document(cm, source="x").version.sha256 == policy.version.sha256


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (None, "data.policy.yaml: is required"),
        ({"policy.yaml": 3}, "data.policy.yaml: must be a string"),
    ],
)
def test_configmap_errors(data: object, expected: str) -> None:
    with pytest.raises(PolicyInvalid) as caught:
        policy_from_configmap({"kind": "ConfigMap", "metadata": {"name": "p"}, "data": data})
    assert [str(e) for e in caught.value.errors] == [expected]
