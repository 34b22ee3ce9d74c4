"""The `convert` command: exit codes, messages, never a traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from tests.schemas import CRD_DIR
from tests.webhook.cli.conftest import REPO, run, write


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: Deployment\nmetadata: {name: [\n", "not valid YAML"),
        ("- a\n- b\n", "expected a Kubernetes object (a mapping), got list"),
        ("apiVersion: v1\nmetadata: {name: x}\n", "#1: missing kind"),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {}\n",
            "#1: Deployment has no metadata.name",
        ),
        ("kind: List\napiVersion: v1\nitems: 3\n", "a List needs an items list"),
    ],
)
def test_convert_malformed_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = write(tmp_path, "bad.yaml", text)
    code, out, err = run(["convert", "-f", path], capsys)
    assert code == 2
    assert out == ""
    assert path in err
    assert message in err
    assert "Traceback" not in err


def test_convert_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["convert", "-f", "/nonexistent/x.yaml"], capsys)
    assert code == 2
    assert "/nonexistent/x.yaml: no such file or directory" in err


def test_convert_unknown_environment(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        ["convert", "-f", str(REPO / "examples/services/myapp-dev.yaml"), "--environment", "qa"],
        capsys,
    )
    assert code == 2
    assert "--environment qa: not in the policy (known: dev, prod, staging)" in err


def test_convert_invalid_policy_lists_every_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = write(
        tmp_path,
        "p.yaml",
        "defaultEnvironment: x\nenvironments:\n  x:\n    rollout: {canary: {steps: [{setWeight: 101}, {paws: {}}]}}\n",
    )
    source = str(REPO / "examples/services/myapp-dev.yaml")
    code, _, err = run(["convert", "-f", source, "--policy", policy, "--crd", ROLLOUT_CRD], capsys)
    assert code == 2
    assert "environments.x.rollout.canary.steps[0].setWeight: must be between 0 and 100" in err
    assert "environments.x.rollout.canary.steps[1].paws: unknown field" in err


def test_convert_passes_other_objects_through_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        (REPO / "examples/services/myapp-dev.yaml")
        .read_text()
        .replace('rollout-webhook.io/enabled: "true"', "x: y")
    )
    code, out, err = run(["convert", "-f", write(tmp_path, "in.yaml", text)], capsys)
    assert code == 0
    assert [d for d in yaml.safe_load_all(out) if d] == [d for d in yaml.safe_load_all(text) if d]
    assert "Deployment dev/myapp: not converted: not opted in" in err


def test_convert_directory_stdin_json_and_enable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}},
        },
    }
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO(yaml.safe_dump(dep)))
    code, out, err = run(
        ["convert", "-f", "-", "--enable", "-o", "json", "-n", "payments-dev"], capsys
    )
    assert code == 0, err
    items = json.loads(out)["items"]
    assert [i["kind"] for i in items] == ["Deployment", "Rollout"]
    assert items[1]["metadata"]["namespace"] == "payments-dev"
    assert items[1]["spec"]["strategy"]["canary"]["steps"] == [{"setWeight": 100}]
    code, out, _ = run(["convert", "-f", str(REPO / "examples/services")], capsys)
    assert code == 0
    assert sum(1 for d in yaml.safe_load_all(out) if d and d["kind"] == "Rollout") == 7


def test_convert_keeps_inputs_without_namespace_without_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        (REPO / "examples/services/myapp-bluegreen.yaml")
        .read_text()
        .replace("  namespace: prod\n", "")
    )
    code, out, _ = run(["convert", "-f", write(tmp_path, "in.yaml", text)], capsys)
    assert code == 0
    assert all("namespace" not in d["metadata"] for d in yaml.safe_load_all(out) if d)


ROLLOUT_CRD = str(CRD_DIR / "argo-rollouts-v1.9.1-rollout.yaml")
REFUSED_OVERRIDE = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {rollout-webhook.io/enabled: "true"}
  annotations:
    rollout-webhook.io/rollout: |
      canary:
        analysis:
          templates: [{templateName: success-rate}]
          dryRun: [1]
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: nginx}]}
"""


def test_convert_with_the_crd_refuses_a_rollout_its_schema_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "web.yaml", REFUSED_OVERRIDE)
    code, out, err = run(
        ["convert", "-f", path, "--environment", "dev", "--crd", ROLLOUT_CRD], capsys
    )
    assert code == 1  # a refused Deployment fails the run
    assert "not converted: the service's overrides are invalid" in err
    assert "rollout.canary.analysis.dryRun[0]: must be of type object" in err
    assert err.endswith("1 Deployment(s) refused\n")
    [printed] = list(yaml.safe_load_all(out))
    assert printed["spec"]["replicas"] == 3  # the Deployment as sent: no Rollout, no 0
    code, out, err = run(
        ["convert", "-f", path, "--environment", "dev", "--crd", ROLLOUT_CRD, "--allow-refused"],
        capsys,
    )
    assert code == 0
    assert [d["kind"] for d in yaml.safe_load_all(out)] == ["Deployment"]
    code, out, err = run(["convert", "-f", path, "--environment", "dev"], capsys)
    assert err.startswith("note: no Rollout CRD at hand")
    assert "converted to dev canary" in err  # without the CRD, only the product's rules


INVALID_REPLICAS = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop, labels: {rollout-webhook.io/enabled: "true"}}
spec:
  replicas: -1
  selector: {matchLabels: {app: web}}
  template: {metadata: {labels: {app: web}}, spec: {containers: [{name: web, image: nginx}]}}
"""


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        (INVALID_REPLICAS, 1, "not converted: spec.replicas -1 is not a valid count"),
        (
            INVALID_REPLICAS.replace("replicas: -1", "replicas: 2").replace('"true"', '"false"'),
            0,
            "not converted: opted out by label",
        ),
        (
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n"
            "  labels: {rollout-webhook.io/enabled: 'true'}\n---\n"
            + INVALID_REPLICAS.replace("replicas: -1", "replicas: 2").replace('"true"', '"yes"'),
            0,
            "Deployment shop/web: warning: label rollout-webhook.io/enabled='yes' on the"
            ' Deployment is neither "true" nor "false"; ignored',
        ),
    ],
)
def test_convert_exit_status_says_whether_an_opted_in_deployment_was_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, code: int, message: str
) -> None:
    path = write(tmp_path, "in.yaml", text)
    found, _, err = run(["convert", "-f", path, "--crd", ROLLOUT_CRD], capsys)
    assert found == code, err
    assert message in err


def test_convert_still_refuses_an_input_rollout_it_did_not_generate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rollout = (
        "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: web, namespace: shop}\n"
        "spec: {}\n---\n"
    )
    path = write(
        tmp_path, "in.yaml", rollout + INVALID_REPLICAS.replace("replicas: -1", "replicas: 2")
    )
    code, _, err = run(["convert", "-f", path], capsys)
    assert code == 2
    assert "would generate Rollout web, which the input already has (not generated by" in err


@pytest.mark.parametrize(
    ("crd", "message"),
    [
        ("missing.yaml", "--crd"),
        ("web.yaml", "no CustomResourceDefinition rollouts.argoproj.io in it"),
    ],
)
def test_convert_names_a_crd_file_it_cannot_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], crd: str, message: str
) -> None:
    path = write(tmp_path, "web.yaml", REFUSED_OVERRIDE)
    code, _, err = run(["convert", "-f", path, "--crd", str(tmp_path / crd)], capsys)
    assert code != 0
    assert message in err
    assert "Traceback" not in err
