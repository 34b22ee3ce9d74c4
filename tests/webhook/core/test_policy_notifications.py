"""Notification subscriptions: from the policy and a service's override to Argo's
annotations on the Rollout; names and recipients refused with their path."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests import builders
from tests.schemas import validate_crd_object
from tests.webhook.core.conftest import released_rollout_schema
from webhook.core.convert import Neighbours, plan_conversion
from webhook.core.keys import DEFAULT_KEYS as K
from webhook.core.policy import parse_policy
from webhook.core.policy_strategy import validate_rollout_block

SUBSCRIBE = "notifications.argoproj.io/subscribe"
PROD = {
    "canary": {"steps": [{"setWeight": 50}]},
    "notifications": {
        "on-rollout-aborted": {"slack": "prod-alerts", "email": ["a@example.com", "b@x.io"]},
        "on-rollout-completed": {"slack": "deploys"},
    },
}


def _annotations(override: str | None = None) -> dict[str, str]:
    doc = {"defaultEnvironment": "prod", "environments": {"prod": {"rollout": PROD}}}
    policy = parse_policy(doc, rollout_schema=released_rollout_schema())
    annotations = {K.rollout: override} if override else {}
    deployment = builders.opted_in("web", "prod", annotations=annotations)
    result = plan_conversion(deployment, Neighbours(services=(builders.service(),)), policy)
    assert result.converted, result.warnings
    assert result.rollout is not None
    validate_crd_object(result.rollout)
    return {
        k: v
        for k, v in result.rollout["metadata"]["annotations"].items()
        if k.startswith(SUBSCRIBE)
    }


def test_the_environment_s_subscriptions_are_argo_s_annotations_on_the_rollout() -> None:
    assert _annotations() == {
        f"{SUBSCRIBE}.on-rollout-aborted.email": "a@example.com;b@x.io",
        f"{SUBSCRIBE}.on-rollout-aborted.slack": "prod-alerts",
        f"{SUBSCRIBE}.on-rollout-completed.slack": "deploys",
    }


def test_a_service_adds_replaces_and_removes_subscriptions() -> None:
    override = yaml.safe_dump(
        {
            "notifications": {
                "on-rollout-aborted": {"slack": "team-web", "email": None},
                "on-rollout-paused": {"teams": "web-channel"},
            }
        }
    )
    assert _annotations(override) == {
        f"{SUBSCRIBE}.on-rollout-aborted.slack": "team-web",
        f"{SUBSCRIBE}.on-rollout-completed.slack": "deploys",
        f"{SUBSCRIBE}.on-rollout-paused.teams": "web-channel",
    }


@pytest.mark.parametrize(
    ("notifications", "errors"),
    [
        (
            {"on.rollout": {"slack": "x"}},
            [
                "r.notifications.on.rollout: trigger name 'on.rollout' must be letters, digits,"
                " '-' or '_', starting and ending with a letter or digit (no dots: Argo splits"
                " the annotation key on them)"
            ],
        ),
        (
            {"on-rollout-aborted": {"slack/x": "x"}},
            [
                "r.notifications.on-rollout-aborted.slack/x: service name 'slack/x' must be"
                " letters, digits, '-' or '_', starting and ending with a letter or digit (no"
                " dots: Argo splits the annotation key on them)"
            ],
        ),
        (
            {"on-rollout-aborted": {"slack": "a;;b"}},
            ["r.notifications.on-rollout-aborted.slack: a recipient is empty"],
        ),
        (
            {"on-rollout-aborted": {"email": ["a@x.io", "b\nc"]}},
            [
                "r.notifications.on-rollout-aborted.email: recipient 'b\\nc' holds ';' or a line break"
            ],
        ),
        (
            {"on-rollout-aborted": {"slack": 3}},
            [
                "r.notifications.on-rollout-aborted.slack: recipients must be a string (several"
                " separated by ';') or a list of strings"
            ],
        ),
        (
            {"t" * 40: {"s" * 20: "x"}},
            [
                f"r.notifications.{'t' * 40}.{'s' * 20}: annotation key"
                f" {SUBSCRIBE}.{'t' * 40}.{'s' * 20} is longer than a Kubernetes annotation"
                " name may be (63 characters after the '/')"
            ],
        ),
        (
            {"on-rollout-aborted": "slack"},
            [
                "r.notifications.on-rollout-aborted: must map notification services to"
                " recipients, e.g. {slack: team}"
            ],
        ),
        (["slack"], ["r.notifications: must map triggers to {service: recipients}"]),
    ],
)
def test_invalid_subscriptions_are_refused_with_their_path(
    notifications: Any, errors: list[str]
) -> None:
    found = validate_rollout_block({"notifications": notifications}, "r")
    assert [str(e) for e in found] == errors
