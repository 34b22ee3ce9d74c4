"""The import's decisions: the least override, what a merge cannot express."""

from __future__ import annotations

from typing import Any

import pytest

from webhook.core.policy_import import ValuesFile, import_values, override_for
from webhook.core.selection import merge_blocks

ENV = {"strategy": "canary", "canary": {"steps": [{"setWeight": 50}], "maxSurge": 1}}


@pytest.mark.parametrize(
    ("service", "override", "missing"),
    [
        (ENV, {}, []),
        (
            {"strategy": "canary", "canary": {"steps": [{"setWeight": 10}], "maxSurge": 1}},
            {"canary": {"steps": [{"setWeight": 10}]}},
            [],
        ),
        (
            {"strategy": "canary", "canary": {"steps": [{"setWeight": 50}]}},
            {},
            ["rollout.canary.maxSurge"],
        ),
        (
            {"strategy": "bluegreen", "blueGreen": {"autoPromotionEnabled": False}},
            {"strategy": "bluegreen", "blueGreen": {"autoPromotionEnabled": False}},
            ["rollout.canary"],
        ),
    ],
)
def test_the_least_override(
    service: dict[str, Any], override: dict[str, Any], missing: list[str]
) -> None:
    found, lacking = override_for(ENV, service)
    assert (found, lacking) == (override, missing)
    if not missing:
        assert merge_blocks(ENV, found) == service  # merged as the webhook merges


def _file(service: str, env: str, rollout: dict[str, Any]) -> ValuesFile:
    return ValuesFile(f"{service}/values-{env}.yaml", env, service, {"rollout": rollout})


def test_the_environment_block_is_the_one_most_services_share() -> None:
    slow = {"enabled": True, "canary": {"steps": [{"setWeight": 10}]}}
    fast = {"enabled": True, "canary": {"steps": [{"setWeight": 100}]}}
    imported = import_values(
        [_file("a", "prod", fast), _file("b", "prod", slow), _file("c", "prod", slow)]
    )
    assert imported.policy["environments"]["prod"]["rollout"] == {
        "canary": {"steps": [{"setWeight": 10}]},
        "strategy": "canary",
    }
    assert [(s.service, s.override) for s in imported.services] == [
        ("a", {"canary": {"steps": [{"setWeight": 100}]}}),
        ("b", None),
        ("c", None),
    ]
    assert imported.not_expressed == []


def test_a_service_without_the_environment_s_subscription_unsubscribes_with_null() -> None:
    subscribed = {"enabled": True, "notifications": {"on-rollout-aborted": {"slack": "ops"}}}
    imported = import_values(
        [
            _file("a", "prod", subscribed),
            _file("b", "prod", subscribed),
            _file("c", "prod", {"enabled": True}),
        ]
    )
    assert imported.services[2].override == {
        "notifications": {"on-rollout-aborted": {"slack": None}}
    }
    assert imported.not_expressed == []


def test_an_environment_file_without_enabled_true_switches_the_environment_off() -> None:
    imported = import_values([ValuesFile("values-dev.yaml", "dev", None, {"rollout": {}})])
    assert imported.policy["environments"]["dev"]["rollout"]["enabled"] is False
    assert "environment dev is switched off" in imported.notes[0]
