"""`policy import`: the seed's values files in examples/import/ as golden files, and the
imported policy and overrides giving every service exactly its own block."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.schemas import CRD_DIR
from tests.webhook.cli.conftest import REPO, run, write
from webhook.core.convert import Neighbours, plan_conversion
from webhook.core.keys import DEFAULT_KEYS as K
from webhook.core.policy import parse_policy

GOLDEN = Path(__file__).parent / "golden"
EXAMPLES = "examples/import"
CRD = str(CRD_DIR / "argo-rollouts-v1.9.1-rollout.yaml")


def _files(folder: str) -> list[str]:
    return sorted(str(p.relative_to(REPO)) for p in (REPO / EXAMPLES / folder).rglob("*.yaml"))


CASES = {"import-environments": ("environments", 0), "import-services": ("services", 1)}


def _import(folder: str, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    cwd = Path.cwd()
    os.chdir(REPO)
    try:
        return run(["policy", "import", "--crd", CRD, *extra, *_files(folder)], capsys)
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    folder, code = CASES[case]
    found, out, err = _import(folder, capsys)
    assert found == code, err
    if os.environ.get("UPDATE_GOLDEN"):
        (GOLDEN / f"{case}.yaml").write_text(out)
        (GOLDEN / f"{case}.stderr").write_text(err)
    assert out == (GOLDEN / f"{case}.yaml").read_text()
    assert err == (GOLDEN / f"{case}.stderr").read_text()


def _deployment(fragment: dict[str, Any]) -> dict[str, Any]:
    """A Deployment carrying the fragment's labels and annotations."""
    name = fragment["metadata"]["name"]
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {**fragment["metadata"], "namespace": "shop"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": []}},
        },
    }


def test_every_imported_service_gets_its_own_block(capsys: pytest.CaptureFixture[str]) -> None:
    """The policy plus each service's annotation, converted, give the strategy the
    service's values file held (except what the report says could not be expressed)."""
    _, out, err = _import("services", capsys)
    policy_doc, *fragments = [d for d in yaml.safe_load_all(out) if d]
    policy = parse_policy(policy_doc)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x", "namespace": "shop"},
    }
    checked = 0
    for fragment in fragments:
        if fragment["metadata"]["labels"][K.enabled] != "true":
            continue
        deployment = _deployment(fragment)
        service["spec"] = {"selector": {"app": deployment["metadata"]["name"]}}
        result = plan_conversion(deployment, Neighbours(services=(service,)), policy)
        assert result.converted, result.warnings
        assert result.rollout is not None
        source = REPO / EXAMPLES / "services" / deployment["metadata"]["name"]
        env = fragment["metadata"]["labels"][K.environment]
        wanted = yaml.safe_load((source / f"values-{env}.yaml").read_text())["rollout"]
        name = deployment["metadata"]["name"]
        if f"services/{name}/values-{env}.yaml: rollout.canary is set for environment" in err:
            continue  # reported: the service gets the environment's steps
        key = "blueGreen" if wanted.get("strategy") == "bluegreen" else "canary"
        strategy = result.rollout["spec"]["strategy"][key]
        assert {k: strategy[k] for k in wanted[key]} == wanted[key]
        checked += 1
    assert checked == 10  # every opted-in service file but test-app's dev (reported)


def test_the_imported_policy_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = _import("environments", capsys, "--only", "policy")
    path = write(tmp_path, "policy.yaml", out.removeprefix("---\n"))
    code, _, err = run(["policy", "validate", path, "--crd", CRD], capsys)
    assert code == 0, err


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("prod.yaml", "rollout: {}\n", "prod.yaml: not named values-<environment>.yaml"),
        ("values-prod.yaml", "a: [\n", "not valid YAML"),
    ],
)
def test_unreadable_files_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, message: str
) -> None:
    code, _, err = run(["policy", "import", write(tmp_path, name, text)], capsys)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_what_cannot_be_expressed_is_reported_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        "rollout:\n"
        "  enabled: true\n"
        "  canary:\n"
        "    canaryService: my-canary\n"
        "    steps: [{setWeight: 20}, {setWieght: 5}]\n"
        "  replicas: 3\n"
    )
    code, out, err = run(
        ["policy", "import", "--crd", CRD, write(tmp_path, "values-qa.yaml", text)], capsys
    )
    assert code == 1
    assert err.splitlines() == [
        "not expressed: "
        + str(tmp_path / "values-qa.yaml")
        + ": rollout.replicas: the policy has no such key; left out",
        "not expressed: "
        + str(tmp_path / "values-qa.yaml")
        + ": rollout.canary.canaryService: the webhook sets it for each service; left out",
        "not expressed: "
        + str(tmp_path / "values-qa.yaml")
        + ": invalid, left out: rollout.canary.steps[1].setWieght: unknown field (allowed:"
        " analysis, experiment, pause, plugin, setCanaryScale, setHeaderRoute, setMirrorRoute,"
        " setWeight) (Rollout schema of " + CRD + ")",
        "not expressed: no values file holds a usable rollout: block",
        "4 thing(s) not expressed",
    ]
    assert out == ""
