"""The chart's values schema lets the policy's analysis keys through to the product."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.helm.conftest import RELEASE, Render, find
from webhook.core.policy import policy_from_configmap

EXAMPLE = Path(__file__).resolve().parents[2] / "examples/policies/managed-analysis.yaml"


def test_a_policy_with_managed_analysis_renders_and_parses(render: Render) -> None:
    example = yaml.safe_load(EXAMPLE.read_text())
    prod = example["environments"]["prod"]["analysis"]
    docs = render(
        f"json:policy.document.analysis={json.dumps(example['analysis'])}",
        f"json:policy.document.environments.prod.analysis={json.dumps(prod)}",
    )
    policy = policy_from_configmap(find(docs, "ConfigMap", f"{RELEASE}-policy"))
    assert [t.name for t in policy.analysis.templates] == ["success-rate"]
    assert policy.analysis.environments["prod"].at_step == 2
