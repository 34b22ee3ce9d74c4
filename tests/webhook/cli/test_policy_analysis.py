"""Managed analysis through the commands: `policy validate --analysis-crd`, `convert`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.schemas import CRD_DIR
from tests.webhook.cli.conftest import REPO, run, write

EXAMPLE = str(REPO / "examples/policies/managed-analysis.yaml")
TEMPLATE_CRD = str(CRD_DIR / "argo-rollouts-v1.9.1-analysis-template.yaml")
ROLLOUT_CRD = str(CRD_DIR / "argo-rollouts-v1.9.1-rollout.yaml")


def test_the_example_is_valid_against_the_released_crds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(
        ["policy", "validate", EXAMPLE, "--analysis-crd", TEMPLATE_CRD, "--crd", ROLLOUT_CRD],
        capsys,
    )
    assert (code, err) == (0, "")
    assert "valid (2 environment(s): staging, prod" in out


def _seed_condition(tmp_path: Path) -> str:
    doc = yaml.safe_load(Path(EXAMPLE).read_text())
    doc["analysis"]["templates"][0]["spec"]["metrics"][0]["successCondition"] = "result >= 0.95"
    return write(tmp_path, "seed.yaml", yaml.safe_dump(doc))


def test_validate_warns_about_the_seeds_condition_and_still_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["policy", "validate", _seed_condition(tmp_path)], capsys)
    assert code == 0
    assert "warning: AnalysisTemplate success-rate metrics[0] successCondition: Prometheus" in err
    assert "write 'result[0] >= 0.95'" in err


def test_validate_refuses_a_template_the_schema_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = yaml.safe_load(Path(EXAMPLE).read_text())
    doc["analysis"]["templates"][0]["spec"]["metrics"][0]["interval"] = 60
    bad = write(tmp_path, "bad.yaml", yaml.safe_dump(doc))
    code, _, err = run(["policy", "validate", bad, "--analysis-crd", TEMPLATE_CRD], capsys)
    assert code == 2
    assert "analysis.templates[0].spec.metrics[0].interval: 60 is not of type 'string'" in err
    # Without the CRD the schema is not known, and the policy's own checks pass it.
    assert run(["policy", "validate", bad], capsys)[0] == 0


@pytest.mark.parametrize(
    ("crd", "message"),
    [
        (ROLLOUT_CRD, "no CustomResourceDefinition of AnalysisTemplates"),
        ("missing.yaml", "--analysis-crd"),
    ],
)
def test_a_wrong_analysis_crd_is_a_usage_error(
    crd: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["policy", "validate", EXAMPLE, "--analysis-crd", crd], capsys)
    assert code != 0
    assert message in err
    assert "Traceback" not in err


def test_convert_prints_the_template_and_warns_about_a_missing_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    services = str(REPO / "examples/services/myapp-prod.yaml")
    code, out, err = run(["convert", "-f", services, "--policy", EXAMPLE], capsys)
    assert code == 0
    kinds = [d["kind"] for d in yaml.safe_load_all(out) if d]
    assert kinds.count("AnalysisTemplate") == 1
    assert kinds.index("AnalysisTemplate") < kinds.index("Rollout")
    assert "warning" not in err
    # A template the policy does not manage and the input does not hold.
    doc = yaml.safe_load(Path(EXAMPLE).read_text())
    doc["environments"]["prod"]["analysis"]["template"] = "by-hand"
    policy = write(tmp_path, "policy.yaml", yaml.safe_dump(doc))
    code, out, err = run(["convert", "-f", services, "--policy", policy], capsys)
    assert "AnalysisTemplate by-hand not found in namespace prod nor managed" in err
    # Given in the input, it is found (and its spec decides the arguments passed).
    template = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "by-hand", "namespace": "prod"},
        "spec": {"args": [{"name": "service-name"}], "metrics": [{"name": "m", "provider": {}}]},
    }
    given = write(tmp_path, "template.yaml", yaml.safe_dump(template))
    code, out, err = run(["convert", "-f", services, "-f", given, "--policy", policy], capsys)
    assert "by-hand" not in err


def test_show_prints_the_analysis_with_its_defaults_and_the_result_validates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["policy", "show", "--policy", EXAMPLE], capsys)
    assert code == 0
    shown = yaml.safe_load(out)
    assert shown["analysis"]["templates"][0]["name"] == "success-rate"
    prod = shown["environments"]["prod"]["analysis"]
    assert prod["clusterScope"] is False
    assert prod["atStep"] == 2
    assert prod["args"]["canaryHash"] == "canary-hash"
    again = write(tmp_path, "shown.yaml", out)
    assert run(["policy", "validate", again], capsys)[0] == 0
