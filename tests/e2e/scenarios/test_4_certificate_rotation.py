"""The serving certificate's CA is rotated while admission requests flow (issue 7).

The certs package does the rotation as in production (a Secret, the caBundle injected into
the webhook configurations, each step a pass: stage the new CA beside the old, promote it,
retire the old), with no waiting between steps; the bundle each step leaves is written to
serve's --cert-dir, which serve polls and reloads, as the chart's rotation does. Meanwhile
a thread keeps sending server-side dry runs of a labelled Deployment through the API
server, whose webhook calls fail closed (failurePolicy Fail): not one may fail or come back
unconverted.
"""

from __future__ import annotations

import base64
import datetime
import json
import ssl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from kubernetes import client, config

from certs import pki
from certs.bootstrap import BootstrapSettings, bootstrap, default_webhook_configs, read_bundle
from certs.files import write_bundle_dir
from certs.store import SecretRef, Target
from tests.e2e import harness
from tests.e2e.scenarios.conftest import Identity
from tests.e2e.scenarios.support import (
    PREFIX,
    Webhook,
    deployment,
    eventually,
    registered,
    wait_in_force,
)

CONFIG = "scenarios-rotation"
NO_WAIT = pki.Lifetimes(propagation_delay=timedelta(0), retire_grace=timedelta(0))
CALLS_PER_STEP = 5


@dataclass
class Traffic:
    """Admission calls in a thread: dry-run creates of a labelled Deployment."""

    kubeconfig: Path
    namespace: str
    calls: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        api_client: Any = config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]
        apps: Any = client.AppsV1Api(api_client)
        try:
            while not self.stop.is_set():
                body = deployment(f"flow-{uuid.uuid4().hex[:6]}", self.namespace)
                try:
                    made = apps.create_namespaced_deployment(self.namespace, body, dry_run="All")
                    marks = made.metadata.annotations or {}
                    if marks.get(f"{PREFIX}rollout-name") != body["metadata"]["name"]:
                        self.failures.append(f"call {self.calls}: admitted unconverted")
                except client.ApiException as err:
                    self.failures.append(f"call {self.calls}: {err.status} {err.body}")
                self.calls += 1
                self.stop.wait(0.05)
        finally:
            api_client.close()

    def wait_for(self, count: int, webhook: Webhook) -> None:
        target = self.calls + count
        eventually(lambda: self.calls >= target, f"{count} more admission calls", webhook)


def served_serial(webhook: Webhook) -> int:
    pem = ssl.get_server_certificate(("127.0.0.1", webhook.port))
    return x509.load_pem_x509_certificate(pem.encode()).serial_number


def wait_served(server: Webhook, bundle: pki.Bundle, step: str) -> None:
    """Until serve hands out the bundle's leaf (it polls --cert-dir every 2 s)."""
    serial = x509.load_pem_x509_certificate(bundle.cert_pem.encode()).serial_number
    eventually(
        lambda: served_serial(server) == serial, f"serve to load the certificate of {step}", server
    )


@pytest.fixture(scope="module")
def rotating(
    identity: Identity,
    kube: client.ApiClient,
    kubectl: harness.Tool,
    helm: harness.Tool,
    webhook_namespace: str,
    probe_namespace: str,
    audit_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Webhook, BootstrapSettings]]:
    settings = BootstrapSettings(
        SecretRef(webhook_namespace, "scenarios-rotation-tls"),
        Target("rollout-webhook", webhook_namespace, extra_ips=("127.0.0.1",)),
        default_webhook_configs((CONFIG,), (CONFIG,)),
        NO_WAIT,
    )
    bootstrap(kube, settings, datetime.datetime.now(datetime.UTC))
    first = read_bundle(kube, settings.secret)
    assert first is not None
    server = Webhook(
        tmp_path_factory.mktemp("serve-rotation"),
        identity.kubeconfig,
        audit_file,
        env=identity.env,
    )
    write_bundle_dir(first, server.cert_dir)
    server.start()
    try:
        with registered(kubectl, helm, server, CONFIG, "Fail"):
            wait_in_force(kubectl, probe_namespace, server)
            yield server, settings
    finally:
        server.stop()


def test_no_admission_call_fails_through_a_ca_rotation(
    rotating: tuple[Webhook, BootstrapSettings],
    kube: client.ApiClient,
    team: str,
    control_plane: harness.ControlPlane,
    kubectl: harness.Tool,
) -> None:
    server, settings = rotating
    traffic = Traffic(control_plane.kubeconfig, team)
    thread = threading.Thread(target=traffic.run, name="admission-traffic", daemon=True)
    thread.start()
    steps: list[str] = []
    try:
        traffic.wait_for(CALLS_PER_STEP, server)
        for expected in (pki.Action.STAGE_CA, pki.Action.PROMOTE_CA, pki.Action.RETIRE_CA):
            force = pki.Action.STAGE_CA if expected is pki.Action.STAGE_CA else None
            report = bootstrap(kube, settings, datetime.datetime.now(datetime.UTC), force=force)
            assert report.steps[0].written is expected
            steps.append(expected.value)
            bundle = read_bundle(kube, settings.secret)
            assert bundle is not None
            write_bundle_dir(bundle, server.cert_dir)  # what the rotation loop does in a Pod
            wait_served(server, bundle, expected.value)
            traffic.wait_for(CALLS_PER_STEP, server)
        traffic.wait_for(CALLS_PER_STEP, server)  # the old CA gone everywhere
    finally:
        traffic.stop.set()
        thread.join(timeout=30)
    assert steps == ["stage-ca", "promote-ca", "retire-ca"]
    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.calls >= 4 * CALLS_PER_STEP
    final = read_bundle(kube, settings.secret)
    assert final is not None
    assert pki.split_pem_certificates(final.trust_pem) == (final.ca_pem,)
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        stored = json.loads(kubectl("get", kind, CONFIG, "-o", "json").stdout)
        for hook in stored["webhooks"]:
            assert base64.b64decode(hook["clientConfig"]["caBundle"]).decode() == final.trust_pem
