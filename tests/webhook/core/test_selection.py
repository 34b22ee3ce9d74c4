"""Opt-in, the environment and the strategy (labels, annotations, overrides), through the
planner, rule by rule."""

from __future__ import annotations

import pytest

from tests.builders import deployment, namespace, opted_in, service
from tests.webhook.core.conftest import plan, policy_with
from webhook.core.convert import Neighbours
from webhook.core.keys import DEFAULT_KEYS as K

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


YES = 'label rollout-webhook.io/enabled=\'yes\' on the Deployment is neither "true" nor "false"; ignored'


def test_unexpected_label_value_is_a_warning() -> None:
    result = plan(deployment(labels={K.enabled: "yes"}))
    assert result.warnings == (YES,)


def test_unexpected_label_value_is_a_warning_in_an_opted_in_namespace_too() -> None:
    """The Namespace opts the Deployment in; its own invalid value is still reported."""
    ns = namespace("prod", {K.enabled: "true"})
    result = plan(deployment(labels={K.enabled: "yes"}), neighbours=Neighbours(namespace=ns))
    assert result.converted
    assert YES in result.warnings


def test_unexpected_namespace_label_value_is_a_warning() -> None:
    ns = namespace("prod", {K.enabled: "on"})
    result = plan(deployment(), neighbours=Neighbours(namespace=ns))
    assert not result.converted
    assert result.warnings == (
        "label rollout-webhook.io/enabled='on' on Namespace prod is neither \"true\" nor"
        ' "false"; ignored',
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
        (
            {K.rollout: 'a: &a ["x","x"]\nb: &b [*a,*a]\ncanary: {steps: [*b]}'},
            "annotation rollout-webhook.io/rollout: refused at line 1: anchors (&name) are not"
            " accepted: write the value out",
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
