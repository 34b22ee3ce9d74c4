"""`serve --client-ca` behind the real kube-apiserver, configured as docs/security.md says.

The session's API server runs with an AdmissionConfiguration whose WebhookAdmission
kubeconfig gives webhooks a client certificate signed by a CA of its own
(``harness._write_webhook_client``). `serve` requires a certificate from that CA: the API
server's calls get through (a `kubectl apply` converts end to end), a TLS client without
one, or with one from another CA, does not, and the health port stays open.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from certs.files import write_bundle_dir
from certs.pki import self_signed_for_localhost
from tests.e2e import harness
from tests.e2e import pki as e2e_pki

pytestmark = pytest.mark.e2e

NS = f"mtls-{uuid.uuid4().hex[:6]}"
WEBHOOK_NS = f"{NS}-system"
ENABLED = "rollout-webhook.io/enabled"


@dataclass(frozen=True)
class Served:
    port: int
    health_port: int
    ca_pem: str
    process: harness.ManagedProcess


def wait_for(check: Any, what: str, process: harness.ManagedProcess, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except (OSError, harness.CommandFailed):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; log:\n{process.log_tail()}", pytrace=False)
        time.sleep(0.25)


@pytest.fixture(scope="module")
def served(
    control_plane: harness.ControlPlane,
    kubectl: harness.Tool,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("mtls")
    bundle = self_signed_for_localhost(dt.datetime.now(dt.UTC))
    tls = write_bundle_dir(bundle, workdir / "tls")
    port, health_port = harness.free_ports(2)
    kubectl("create", "namespace", WEBHOOK_NS)
    kubectl("create", "namespace", NS)
    process = harness.ManagedProcess(
        "rollout-webhook",
        [
            str(Path(sys.executable).parent / "rollout-webhook"),
            "serve",
            f"--kubeconfig={control_plane.kubeconfig}",
            f"--cert-dir={tls.directory}",
            f"--client-ca={control_plane.files['webhook-client-ca.crt']}",
            f"--port={port}",
            f"--health-port={health_port}",
            f"--namespace={WEBHOOK_NS}",
            "--no-reconcile",  # every write below is the admission's
        ],
        workdir / "serve.log",
    )
    process.start()
    name = f"rollout-webhook-{NS}"
    mutating: dict[str, Any] = {
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "mutate.rollout-webhook.io",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "NoneOnDryRun",
                "failurePolicy": "Fail",
                "timeoutSeconds": 5,
                "rules": [
                    {
                        "apiGroups": ["apps"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["deployments"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NS}},
                "clientConfig": {},
            }
        ],
    }
    try:
        wait_for(
            lambda: (
                urllib.request.urlopen(f"http://127.0.0.1:{health_port}/readyz", timeout=2).status
                == 200
            ),
            "readiness on the health port",
            process,
        )
        harness.register_webhook(
            kubectl, f"https://127.0.0.1:{port}/mutate", bundle.ca_pem.encode(), mutating
        )
        yield Served(port, health_port, bundle.ca_pem, process)
    finally:
        kubectl("delete", "mutatingwebhookconfiguration", name,
                "--ignore-not-found", check=False)  # fmt: skip
        kubectl("delete", "deployments,rollouts.argoproj.io,services", "--all", "-n", NS,
                "--ignore-not-found", "--wait=false", check=False)  # fmt: skip
        process.stop()
        for ns in (NS, WEBHOOK_NS):
            kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=false", check=False)


def manifest(name: str) -> str:
    labels = {"app": name}
    return json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": {**labels, ENABLED: "true"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}}},
    })  # fmt: skip


def get(kubectl: harness.Tool, kind: str, name: str) -> dict[str, Any] | None:
    result = kubectl("get", kind, name, "-n", NS, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def test_the_api_server_with_its_client_certificate_gets_through(
    kubectl: harness.Tool, served: Served
) -> None:
    def converted() -> dict[str, Any] | None:
        # failurePolicy Fail: until the configuration is in force the apply is plain, and
        # a refused handshake would fail it outright.
        kubectl("apply", "-f", "-", input=manifest("web"))
        found = get(kubectl, "deployment", "web")
        annotations = (found or {}).get("metadata", {}).get("annotations") or {}
        return found if annotations.get("rollout-webhook.io/rollout-name") == "web" else None

    stored = wait_for(converted, "the Deployment converted", served.process)
    assert stored["spec"]["replicas"] == 0
    rollout = wait_for(lambda: get(kubectl, "rollout", "web"), "the Rollout", served.process)
    assert rollout["spec"]["workloadRef"]["name"] == "web"


def healthz(port: int, trust: str, client: e2e_pki.KeyPair | None, workdir: Path) -> bytes:
    """GET /healthz on the admission port over a fresh handshake: the answer, or b"" when
    the connection is refused (TLS 1.3 reports it on the first read) or an alert."""
    context = ssl.create_default_context(cadata=trust)
    if client is not None:
        (workdir / "c.crt").write_bytes(client.cert_pem)
        (workdir / "c.key").write_bytes(client.key_pem)
        context.load_cert_chain(workdir / "c.crt", workdir / "c.key")
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as conn,
        ):
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := conn.recv(4096):
                answer += chunk
            return answer
    except (ssl.SSLError, ConnectionResetError):
        return b""


def test_a_client_without_the_certificate_is_refused_in_the_handshake(
    control_plane: harness.ControlPlane, served: Served, tmp_path: Path
) -> None:
    stranger = e2e_pki.generate(dt.datetime.now(dt.UTC))  # its admin: another CA
    signed = e2e_pki.KeyPair(
        control_plane.files["webhook-client.crt"].read_bytes(),
        control_plane.files["webhook-client.key"].read_bytes(),
    )
    assert healthz(served.port, served.ca_pem, None, tmp_path) == b""
    assert healthz(served.port, served.ca_pem, stranger.admin, tmp_path) == b""
    assert healthz(served.port, served.ca_pem, signed, tmp_path).startswith(b"HTTP/1.1 200")
    # The probes' port asks for nothing.
    with urllib.request.urlopen(f"http://127.0.0.1:{served.health_port}/healthz") as probe:
        assert probe.status == 200
