"""The chart's policy ConfigMap: by default the built-in policy, and valid for the product."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.helm.conftest import NAMESPACE, RELEASE, Render, all_of, find
from webhook.cli.main import main
from webhook.cli.policy import effective
from webhook.core.default_policy import DEFAULT_POLICY_YAML
from webhook.core.policy import builtin_policy, policy_from_configmap

CLI_MODULES = ("webhook.cli.policy",)


def validate(path: Path) -> int:
    return main(["policy", "validate", str(path)], modules=CLI_MODULES)


def test_default_configmap_is_the_built_in_policy(
    render: Render, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configmap = find(render(), "ConfigMap", f"{RELEASE}-policy")
    assert configmap["metadata"]["namespace"] == NAMESPACE
    assert list(configmap["data"]) == ["policy.yaml"]
    document = yaml.safe_load(configmap["data"]["policy.yaml"])
    assert document == yaml.safe_load(DEFAULT_POLICY_YAML)
    policy = policy_from_configmap(configmap)
    assert effective(policy) == effective(builtin_policy())

    path = tmp_path / "configmap.yaml"
    path.write_text(yaml.safe_dump(configmap))
    assert validate(path) == 0
    assert ": valid (3 environment(s): " in capsys.readouterr().out


def test_a_policy_the_schema_lets_through_is_still_checked_by_the_product(
    render: Render, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The values schema checks the policy's shape; the numbers are the product's to check.
    docs = render(
        'json:policy.document.environments.prod.rollout.canary.steps=[{"setWeight": 200}]'
    )
    path = tmp_path / "configmap.yaml"
    path.write_text(yaml.safe_dump(find(docs, "ConfigMap", f"{RELEASE}-policy")))
    assert validate(path) == 2
    assert "environments.prod.rollout.canary.steps[0].setWeight" in capsys.readouterr().err


def test_an_external_policy_is_not_rendered(render: Render) -> None:
    docs = render("policy.create=false", "policy.name=platform-policy")
    assert not [c for c in all_of(docs, "ConfigMap") if c["metadata"]["name"].endswith("policy")]
    env = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "ROLLOUT_WEBHOOK_POLICY_CONFIGMAP", "value": "platform-policy"} in env
