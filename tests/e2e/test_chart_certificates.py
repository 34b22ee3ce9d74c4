"""The chart's certificate Jobs, run against a real API server with the chart's own RBAC.

No kubelet runs, so Helm's hooks cannot run as Jobs; each Job's command is run here
instead, exactly as the chart renders it, authenticated as the ServiceAccount the Job's pod
would use (a token from the TokenRequest API): the pre-install Job as the hook account that
may only touch the TLS Secret, the post-install Job and the rotation CronJob as the
server's account. Then `helm upgrade` must leave the injected caBundle in place.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import harness

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "rollout-webhook"
RELEASE = "rw-certs"
FULLNAME = f"{RELEASE}-rollout-webhook"
NAMESPACE = "platform-certs"
BINARY = Path(sys.executable).parent / "rollout-webhook"


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    pod: dict[str, Any] = spec["template"]["spec"]
    return pod


class Jobs:
    def __init__(
        self,
        plane: harness.ControlPlane,
        kubectl: harness.Tool,
        docs: list[dict[str, Any]],
        workdir: Path,
    ) -> None:
        self.plane = plane
        self.kubectl = kubectl
        self.by_name = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Job", "CronJob")}
        self.workdir = workdir

    def run(self, name: str) -> subprocess.CompletedProcess[str]:
        """The Job's container command, as the Job's ServiceAccount."""
        pod = pod_spec(self.by_name[name])
        account = pod["serviceAccountName"]
        token = self.kubectl(
            "create", "token", account, "-n", NAMESPACE, "--duration=1h"
        ).stdout.strip()
        kubeconfig = self.workdir / f"{account}.kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(harness.token_kubeconfig(self.plane, "job", token)))
        [container] = pod["containers"]
        args = [a for a in container["args"] if a != "--in-cluster"]
        return subprocess.run(
            [str(BINARY), *args, f"--kubeconfig={kubeconfig}"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )


@pytest.fixture(scope="module")
def jobs(
    control_plane: harness.ControlPlane,
    kubectl: harness.Tool,
    helm: harness.Tool,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Jobs]:
    helm(
        "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
        "--no-hooks", timeout=180,
    )  # fmt: skip
    rendered = helm(
        "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
        "--show-only", "templates/certificates-bootstrap.yaml",
    ).stdout  # fmt: skip
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    # The hook's own account and rights, as Helm would create them before the Job.
    for doc in docs:
        if doc["kind"] in ("ServiceAccount", "Role", "RoleBinding"):
            kubectl("apply", "-f", "-", input=json.dumps(doc))
    yield Jobs(control_plane, kubectl, docs, tmp_path_factory.mktemp("chart-certs"))
    helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--no-hooks", check=False)
    # Whatever happened to the release, no webhook of it may outlive this module.
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        kubectl("delete", kind, FULLNAME, "--ignore-not-found", check=False)


def ca_bundles(kubectl: harness.Tool) -> list[str]:
    bundles = []
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        stored = json.loads(kubectl("get", kind, FULLNAME, "-o", "json").stdout)
        bundles += [h["clientConfig"].get("caBundle", "") for h in stored["webhooks"]]
    return bundles


def test_pre_install_job_makes_the_secret_with_only_the_hook_rights(
    jobs: Jobs, kubectl: harness.Tool
) -> None:
    result = jobs.run(f"{FULLNAME}-certs-secret")
    assert result.returncode == 0, result.stderr
    assert f"Secret {NAMESPACE}/{FULLNAME}-tls: created" in result.stdout
    secret = json.loads(
        kubectl("get", "secret", f"{FULLNAME}-tls", "-n", NAMESPACE, "-o", "json").stdout
    )
    assert secret["type"] == "kubernetes.io/tls"
    assert {"tls.crt", "tls.key", "ca.crt"} <= set(secret["data"])
    # --no-inject: the configurations are the post-install Job's.
    assert ca_bundles(kubectl) == [""] * len(ca_bundles(kubectl))


def test_post_install_job_injects_the_ca_as_the_server(jobs: Jobs, kubectl: harness.Tool) -> None:
    result = jobs.run(f"{FULLNAME}-certs-inject")
    assert result.returncode == 0, result.stderr
    secret = json.loads(
        kubectl("get", "secret", f"{FULLNAME}-tls", "-n", NAMESPACE, "-o", "json").stdout
    )
    ca = secret["data"]["ca.crt"]
    bundles = ca_bundles(kubectl)
    assert len(bundles) == 7  # six mutating entries (deployments/scale one of them), one validating
    assert set(bundles) == {ca}


def test_rotation_cronjob_runs_as_the_server_and_finds_nothing_due(jobs: Jobs) -> None:
    result = jobs.run(f"{FULLNAME}-certs-rotate")
    assert result.returncode == 0, result.stderr
    assert ": valid" in result.stdout
    assert "caBundle already current" in result.stdout


def test_helm_upgrade_keeps_the_injected_ca(
    jobs: Jobs, kubectl: harness.Tool, helm: harness.Tool
) -> None:
    before = ca_bundles(kubectl)
    assert all(before)
    helm(
        "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, "--no-hooks",
        "--set", "replicaCount=3", "--set", "webhook.failurePolicy=Fail", timeout=180,
    )  # fmt: skip
    stored = json.loads(
        kubectl("get", "mutatingwebhookconfiguration", FULLNAME, "-o", "json").stdout
    )
    assert {h["failurePolicy"] for h in stored["webhooks"]} == {"Fail"}
    assert ca_bundles(kubectl) == before
