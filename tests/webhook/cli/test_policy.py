"""The `policy` command: `validate` and `show`, exit codes and messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.schemas import CRD_DIR
from tests.webhook.cli.conftest import REPO, run, write


def test_policy_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        ["policy", "validate", str(REPO / "examples/policies/values-prod-with-rollout.yaml")],
        capsys,
    )
    assert code == 0
    assert "valid (1 environment(s): prod" in out
    bad = write(
        tmp_path,
        "bad.yaml",
        "defaultEnvironment: prod\nenvironments: {prod: {rollout: {strategy: rolling}}}\n",
    )
    code, out, err = run(["policy", "validate", bad], capsys)
    assert code == 2
    assert (
        "environments.prod.rollout.strategy: must be one of canary, bluegreen, not 'rolling'" in err
    )
    code, _, err = run(
        ["policy", "validate", write(tmp_path, "two.yaml", "a: 1\n---\nb: 2\n")], capsys
    )
    assert code == 2
    assert "expected one YAML document, found 2" in err


def test_policy_show(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["policy", "show", "--environment", "staging"], capsys)
    assert code == 0
    body = yaml.safe_load(out)
    assert body["staging"]["rollout"]["canary"]["steps"] == [
        {"setWeight": 50},
        {"pause": {"duration": "5m"}},
    ]
    assert body["staging"]["scaleDown"] == "onsuccess"
    code, out, _ = run(
        ["policy", "show", "--policy", str(REPO / "examples/policies/values-bluegreen.yaml")],
        capsys,
    )
    assert yaml.safe_load(out)["environments"]["prod"]["rollout"]["strategy"] == "bluegreen"
    code, _, err = run(["policy", "show", "--environment", "qa"], capsys)
    assert code == 2
    assert "qa: not in the policy" in err


def test_policy_validate_with_the_crd_refuses_rollouts_the_cluster_would_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        "policy.yaml",
        "defaultEnvironment: prod\n"
        "environments:\n"
        "  prod:\n"
        "    rollout:\n"
        "      strategy: bluegreen\n"
        "      blueGreen: {scaleDownDelaySeconds: 99999999999}\n",
    )
    crd = str(CRD_DIR / "argo-rollouts-v1.9.1-rollout.yaml")
    assert run(["policy", "validate", path], capsys)[0] == 0  # its own checks pass
    code, _, err = run(["policy", "validate", path, "--crd", crd], capsys)
    assert code == 2
    assert (
        "environments.prod.rollout.blueGreen.scaleDownDelaySeconds: 99999999999 is out of range"
        " for int32" in err
    )


CRD = str(CRD_DIR / "argo-rollouts-v1.9.1-rollout.yaml")
STEPS_POLICY = (
    "defaultEnvironment: prod\n"
    "environments:\n"
    "  prod:\n"
    "    rollout:\n"
    "      canary:\n"
    "        steps:\n"
    "          - setHeaderRoute: {name: h, match: [{headerName: X, headerValue: {exact: y}}]}\n"
    "          - setMirrorRoute: {name: m, percentage: 20}\n"
    "          - plugin: {name: example/step, config: {a: 1}}\n"
    "          - setWeight: 50\n"
)


def test_policy_validate_accepts_every_argo_step_and_refuses_a_misspelt_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(tmp_path, "good.yaml", STEPS_POLICY)
    code, out, err = run(["policy", "validate", good, "--crd", CRD], capsys)
    assert (code, err) == (0, "")
    assert "valid (1 environment(s): prod" in out
    bad = write(tmp_path, "bad.yaml", STEPS_POLICY.replace("setMirrorRoute", "setMirorRoute"))
    code, _, err = run(["policy", "validate", bad, "--crd", CRD], capsys)
    assert code == 2
    assert "  environments.prod.rollout.canary.steps[1].setMirorRoute: unknown field" in err


def test_policy_validate_without_a_crd_says_what_was_not_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    misspelt = write(tmp_path, "p.yaml", STEPS_POLICY.replace("setMirrorRoute", "setMirorRoute"))
    code, _, err = run(["policy", "validate", misspelt], capsys)
    assert code == 0
    assert "note: no Rollout CRD at hand: strategy blocks were checked by the product's" in err


def test_policy_validate_points_a_values_file_to_policy_import(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = write(tmp_path, "values-prod.yaml", "rollout:\n  enabled: true\n")
    code, _, err = run(["policy", "validate", values], capsys)
    assert code == 2
    assert "  rollout: unknown key" in err
    assert f"`rollout-webhook policy import {values}` makes a policy of it" in err
