"""The certs package against a real kube-apiserver (end-to-end tier, marker e2e).

A real API server calls a webhook served on 127.0.0.1 with the bundle's serving
certificate, verifying it against the caBundle our injector wrote; the calls keep
succeeding through every step of a CA rotation. Also: racing bootstrappers, the 409 on
a stale replace, the Lease elector, the CLI. Runs on the session control plane of the
end-to-end tier, in a namespace and under configuration names of its own.
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from certs import pki
from certs.bootstrap import BootstrapSettings, bootstrap, default_webhook_configs, read_bundle
from certs.inject import encode_ca_bundle
from certs.leader import KubeLeaseAPI, LeaseElector, LeaseRef
from certs.rotation import CertificateRotator, RotationSettings
from certs.store import KubeSecretAPI, SecretConflict, SecretRef, Target, bundle_to_secret
from tests.e2e import harness
from webhook.cli import main as cli_main

pytestmark = pytest.mark.e2e

NS = "certs-e2e"
SERVICE = "rollout-webhook"
CONFIG = "certs-e2e-webhook"
# No waiting between rotation steps: each converge call takes the next step.
NO_WAIT = pki.Lifetimes(propagation_delay=timedelta(0), retire_grace=timedelta(0))


@pytest.fixture(scope="module", autouse=True)
def certs_namespace(kube: Any) -> Iterator[str]:
    core_api(kube).create_namespace({"metadata": {"name": NS}})
    yield NS
    # No namespace controller: the namespace stays Terminating, its name unused again.
    core_api(kube).delete_namespace(NS)


# The client's generated types are strict about bodies and Optional everywhere; these
# tests pass plain dicts and read fields they know are set.
def core_api(kube: Any) -> Any:
    return client.CoreV1Api(kube)


def adm_api(kube: Any) -> Any:
    return client.AdmissionregistrationV1Api(kube)


def coord_api(kube: Any) -> Any:
    return client.CoordinationV1Api(kube)


def new_client(control_plane: harness.ControlPlane) -> Any:
    return config.new_client_from_config(config_file=str(control_plane.kubeconfig))  # type: ignore[no-untyped-call]


class AdmissionServer:
    """A mutating webhook on https://127.0.0.1:PORT that stamps the serial it served with."""

    def __init__(self, bundle: pki.Bundle) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.serial = ""
        self.serve(bundle)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                patch = [
                    {
                        "op": "add",
                        "path": "/metadata/annotations",
                        "value": {"served-by": outer.serial},
                    }
                ]
                body = json.dumps(
                    {
                        "apiVersion": "admission.k8s.io/v1",
                        "kind": "AdmissionReview",
                        "response": {
                            "uid": review["request"]["uid"],
                            "allowed": True,
                            "patchType": "JSONPatch",
                            "patch": base64.b64encode(json.dumps(patch).encode()).decode(),
                        },
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = self.context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_port}/mutate"
        threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        ).start()

    def serve(self, bundle: pki.Bundle) -> None:
        """Switch the served certificate; new handshakes get it (a replica reloading)."""
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "c").write_text(bundle.cert_pem)
            Path(tmp, "k").write_text(bundle.key_pem)
            self.context.load_cert_chain(Path(tmp, "c"), Path(tmp, "k"))
        self.serial = format(x509_serial(bundle.cert_pem), "x")

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def x509_serial(pem: str) -> int:
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem.encode()).serial_number


def webhook_configs(kube: Any, url: str, test_ns: str) -> None:
    adm = adm_api(kube)
    hook = {
        "failurePolicy": "Fail",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": 5,
        "clientConfig": {"url": url},
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": test_ns}},
        "rules": [
            {
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["configmaps"],
            }
        ],
    }
    adm.create_mutating_webhook_configuration(
        {
            "metadata": {"name": CONFIG, "labels": {"owner": "helm"}},
            "webhooks": [{**hook, "name": "stamp.rollout-webhook.io"}],
        }
    )
    adm.create_validating_webhook_configuration(
        {
            "metadata": {"name": CONFIG},
            "webhooks": [
                {
                    **hook,
                    "name": "unused.rollout-webhook.io",
                    "rules": [
                        {
                            "operations": ["CREATE"],
                            "apiGroups": ["example.io"],
                            "apiVersions": ["v1"],
                            "resources": ["things"],
                        }
                    ],
                }
            ],
        }
    )


def admitted_by(kube: Any, test_ns: str, timeout: float = 15.0) -> str:
    """Create a ConfigMap; the serial the webhook stamped (retries while the API server
    loads a changed configuration)."""
    core = core_api(kube)
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        name = f"cm-{uuid.uuid4().hex[:8]}"
        try:
            obj = core.create_namespaced_config_map(test_ns, {"metadata": {"name": name}})
        except client.ApiException as err:
            last = err.body or str(err)
        else:
            return str((obj.metadata.annotations or {}).get("served-by", ""))
        if time.monotonic() > deadline:
            raise AssertionError(f"the API server could not call the webhook: {last}")
        time.sleep(0.5)


@contextlib.contextmanager
def cleanup_configs(kube: Any) -> Iterator[None]:
    adm = adm_api(kube)
    try:
        yield
    finally:
        with contextlib.suppress(client.ApiException):
            adm.delete_mutating_webhook_configuration(CONFIG)
        with contextlib.suppress(client.ApiException):
            adm.delete_validating_webhook_configuration(CONFIG)


def test_api_server_calls_the_webhook_through_a_whole_ca_rotation(kube: Any) -> None:
    test_ns = f"certs-{uuid.uuid4().hex[:6]}"
    core_api(kube).create_namespace({"metadata": {"name": test_ns}})
    settings = BootstrapSettings(
        SecretRef(NS, f"tls-{uuid.uuid4().hex[:6]}"),
        Target(SERVICE, NS, extra_ips=("127.0.0.1",)),
        default_webhook_configs((CONFIG,), (CONFIG,)),
        NO_WAIT,
    )
    # The first bundle, then a server with its leaf, then the configurations (no caBundle yet).
    bootstrap(kube, settings, datetime.now(UTC))
    first = read_bundle(kube, settings.secret)
    assert first is not None
    server = AdmissionServer(first)
    with cleanup_configs(kube):
        try:
            webhook_configs(kube, server.url, test_ns)
            report = bootstrap(kube, settings, datetime.now(UTC))
            assert {i.outcome.value for i in report.injections} == {"patched"}
            assert admitted_by(kube, test_ns) == server.serial

            # 1. stage: caBundle holds both CAs; the old leaf is still served and trusted.
            report = bootstrap(kube, settings, datetime.now(UTC), force=pki.Action.STAGE_CA)
            assert report.steps[0].written is pki.Action.STAGE_CA
            staged = read_bundle(kube, settings.secret)
            assert staged is not None
            adm = adm_api(kube)
            stored = adm.read_mutating_webhook_configuration(CONFIG)
            assert stored.webhooks[0].client_config.ca_bundle == encode_ca_bundle(staged.trust_pem)
            assert stored.metadata.labels == {"owner": "helm"}
            assert admitted_by(kube, test_ns) == server.serial

            # 2. promote: the replica switches to the new CA's leaf; the API server trusts it
            # at once because the new CA has been in the caBundle since step 1.
            report = bootstrap(kube, settings, datetime.now(UTC))
            assert report.steps[0].written is pki.Action.PROMOTE_CA
            promoted = read_bundle(kube, settings.secret)
            assert promoted is not None and promoted.ca_pem == staged.next_ca_pem
            server.serve(promoted)
            assert admitted_by(kube, test_ns, timeout=2) == server.serial

            # 3. retire: only the new CA is left, and calls still succeed.
            report = bootstrap(kube, settings, datetime.now(UTC))
            assert report.steps[0].written is pki.Action.RETIRE_CA
            final = read_bundle(kube, settings.secret)
            assert final is not None
            assert pki.split_pem_certificates(final.trust_pem) == (promoted.ca_pem,)
            assert admitted_by(kube, test_ns) == server.serial
        finally:
            server.close()


def test_racing_bootstrappers_converge_on_one_bundle(
    control_plane: harness.ControlPlane, kube: Any
) -> None:
    settings = BootstrapSettings(SecretRef(NS, f"race-{uuid.uuid4().hex[:6]}"), Target(SERVICE, NS))
    now = datetime.now(UTC)
    start = threading.Barrier(4)
    bundles: list[str] = []
    errors: list[BaseException] = []

    def one() -> None:
        api_client = new_client(control_plane)
        try:
            start.wait(timeout=10)
            report = bootstrap(api_client, settings, now)
            assert report.bundle is not None
            bundles.append(report.bundle.cert_pem)
        except BaseException as err:
            errors.append(err)
        finally:
            api_client.close()

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    stored = read_bundle(kube, settings.secret)
    assert stored is not None
    assert set(bundles) == {stored.cert_pem}


def test_a_stale_replace_gets_409(kube: Any) -> None:
    ref = SecretRef(NS, f"stale-{uuid.uuid4().hex[:6]}")
    now = datetime.now(UTC)
    one = pki.make_serving_cert(pki.make_ca(now), SERVICE, NS, now)
    two = pki.make_serving_cert(pki.make_ca(now), SERVICE, NS, now)
    api = KubeSecretAPI(kube)
    created = api.create(bundle_to_secret(ref, one))
    api.replace(bundle_to_secret(ref, two, created.resource_version))
    with pytest.raises(SecretConflict):
        api.replace(bundle_to_secret(ref, one, created.resource_version))
    stored = api.get(ref)
    assert stored is not None
    assert stored.data["tls.crt"] == two.cert_pem


def test_lease_elector_with_whole_second_times(kube: Any) -> None:
    ref = LeaseRef(NS, f"lease-{uuid.uuid4().hex[:6]}")
    now = datetime.now(UTC).replace(microsecond=0)  # MicroTime must still have 6 digits
    a = LeaseElector(KubeLeaseAPI(kube), ref, "a")
    b = LeaseElector(KubeLeaseAPI(kube), ref, "b")
    assert a.try_acquire_or_renew(now)
    assert not b.try_acquire_or_renew(now)
    assert a.try_acquire_or_renew(now + timedelta(seconds=20))
    a.release(now + timedelta(seconds=21))
    assert b.try_acquire_or_renew(now + timedelta(seconds=22))
    lease = coord_api(kube).read_namespaced_lease(ref.name, NS)
    assert lease.spec.holder_identity == "b"
    assert lease.spec.lease_transitions == 1


def test_rotator_tick_against_the_api_server(kube: Any, tmp_path: Path) -> None:
    expiries: list[datetime | None] = []
    settings = RotationSettings(
        BootstrapSettings(SecretRef(NS, f"rot-{uuid.uuid4().hex[:6]}"), Target(SERVICE, NS)),
        lease=LeaseRef(NS, f"rot-{uuid.uuid4().hex[:6]}"),
        identity="pod-0",
        cert_dir=tmp_path,
    )
    rotator = CertificateRotator.from_api_client(kube, settings, on_expiry=expiries.append)
    rotator.run_once()
    assert rotator.last_error is None
    assert rotator.is_leader
    assert len(expiries) == 1 and expiries[0] is not None
    assert (tmp_path / "tls.crt").read_text() == rotator.bundle.cert_pem  # type: ignore[union-attr]


def test_cli_bootstrap_rotate_check(
    control_plane: harness.ControlPlane,
    kube: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", ("webhook.cli.certs",))
    secret = f"cli-{uuid.uuid4().hex[:6]}"
    common = [
        "--namespace",
        NS,
        "--secret-name",
        secret,
        "--no-inject",
        "--kubeconfig",
        str(control_plane.kubeconfig),
    ]
    assert cli_main.main(["certs", "bootstrap", *common]) == 0
    assert f"Secret {NS}/{secret}: created (reissue)" in capsys.readouterr().out
    assert cli_main.main(["certs", "rotate", "--force", *common]) == 0
    assert "updated (stage-ca)" in capsys.readouterr().out
    check = ["certs", "check", "--secret", secret, "--service", SERVICE, "--namespace", NS]
    assert cli_main.main([*check, "--kubeconfig", str(control_plane.kubeconfig)]) == 0
    out = capsys.readouterr().out
    assert "action: none" in out
    assert out.count("also trusted:") == 1
