"""Golden files: `convert` on the seed's examples, byte for byte.

Regenerate after an intended change with ``UPDATE_GOLDEN=1 make unit`` and review the diff.
Every object in every golden output must also validate against the released CRDs and the
Kubernetes schemas (test_golden_outputs_validate).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.schemas import CRD_DIR, validate_object
from webhook.cli import main as cli

CORE_COMMANDS = ("webhook.cli.convert", "webhook.cli.policy")


def main(argv: list[str]) -> int:
    return cli.main(argv, modules=CORE_COMMANDS)


REPO = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).parent / "golden"
EX = "examples"

CASES: dict[str, list[str]] = {
    # The seed's environment examples through the built-in policy.
    "dev-instant": ["-f", f"{EX}/services/myapp-dev.yaml"],
    "staging-moderate-istio": ["-f", f"{EX}/services/myapp-istio.yaml"],
    "prod-conservative": ["-f", f"{EX}/services/myapp-istio.yaml", "--environment", "prod"],
    # The seed's Quick Start: a service block over prod, with HPA and HTTPRoute.
    "prod-quickstart-httproute-hpa": ["-f", f"{EX}/services/myapp-prod.yaml"],
    # Blue-green, from the policy and from the service's annotations.
    "bluegreen-policy": [
        "-f",
        f"{EX}/services/myapp-istio.yaml",
        "--policy",
        f"{EX}/policies/values-bluegreen.yaml",
    ],
    "bluegreen-annotation": ["-f", f"{EX}/services/myapp-bluegreen.yaml"],
    # Analysis steps with arguments, from the service and from the policy.
    "analysis-annotation": ["-f", f"{EX}/services/myapp-analysis.yaml"],
    "analysis-policy": [
        "-f",
        f"{EX}/services/myapp-istio.yaml",
        "--policy",
        f"{EX}/policies/with-analysis.yaml",
    ],
    # Istio subset-level routing: one host, a DestinationRule's stable and canary subsets.
    "staging-istio-subsets": ["-f", f"{EX}/services/myapp-istio-subsets.yaml"],
    # A header route step from the service's own rollout block: managedRoutes generated.
    "prod-header-routing-httproute": ["-f", f"{EX}/services/myapp-header-routing.yaml"],
    # Notification subscriptions from the policy, as Argo's annotations on the Rollout.
    "notifications-policy": [
        "-f",
        f"{EX}/services/myapp-istio.yaml",
        "--policy",
        f"{EX}/policies/with-notifications.yaml",
        "--environment",
        "prod",
    ],
    # A policy that forbids overrides and disables traffic routing.
    "dev-policy-no-overrides": [
        "-f",
        f"{EX}/services/myapp-prod.yaml",
        "--policy",
        f"{EX}/policies/values-dev-with-rollout.yaml",
        "--environment",
        "dev",
    ],
}


CRD = str(CRD_DIR / "argo-rollouts-v1.9.1-rollout.yaml")


def run_convert(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`convert` judged by the released Rollout CRD, as in a cluster with Argo Rollouts."""
    cwd = Path.cwd()
    os.chdir(REPO)
    try:
        code = main(["convert", "--crd", CRD, *args])
    finally:
        os.chdir(cwd)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_convert(CASES[case], capsys)
    assert code == 0, err
    expected_out = GOLDEN / f"{case}.yaml"
    expected_err = GOLDEN / f"{case}.stderr"
    if os.environ.get("UPDATE_GOLDEN"):
        expected_out.write_text(out)
        expected_err.write_text(err)
    assert out == expected_out.read_text()
    assert err == expected_err.read_text()


@pytest.mark.parametrize("case", sorted(CASES))
def test_converting_the_output_again_changes_nothing(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A GitOps repository holding convert's output can be previewed again: the Rollout
    and Services it generated are recognised as the Deployment's, not refused."""
    first = tmp_path / "first.yaml"
    first.write_text((GOLDEN / f"{case}.yaml").read_text())
    args = [a if a != CASES[case][1] else str(first) for a in CASES[case]]
    code, out, err = run_convert(args, capsys)
    assert code == 0, err
    assert out == first.read_text()


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_outputs_validate(case: str) -> None:
    docs = [d for d in yaml.safe_load_all((GOLDEN / f"{case}.yaml").read_text()) if d]
    assert any(d["kind"] == "Rollout" for d in docs)
    for doc in docs:
        validate_object(doc)


def test_every_example_policy_validates(capsys: pytest.CaptureFixture[str]) -> None:
    """By the product's rules and by the released Rollout schema."""
    for path in sorted((REPO / EX / "policies").glob("*.yaml")):
        assert main(["policy", "validate", str(path)]) == 0, capsys.readouterr().err
        assert main(["policy", "validate", str(path), "--crd", CRD]) == 0, capsys.readouterr().err


def test_example_analysis_template_matches_crd() -> None:
    doc = yaml.safe_load((REPO / EX / "services" / "analysis-template.yaml").read_text())
    validate_object(doc)
