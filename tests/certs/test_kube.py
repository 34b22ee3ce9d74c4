"""The adapters on the official client, on the wire, against a fake REST endpoint.

Proves the requests the API server would see (paths, content types, resourceVersion
preconditions, base64 data, MicroTime format) and the mapping of 404/409/403 answers.
The real API server is the end-to-end tier's job.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from certs import pki
from certs.bootstrap import BootstrapSettings, bootstrap, default_webhook_configs, read_bundle
from certs.inject import MUTATING, VALIDATING, encode_ca_bundle
from certs.leader import KubeLeaseAPI, LeaseConflict, LeaseElector, LeaseRef
from certs.store import (
    KubeSecretAPI,
    SecretConflict,
    SecretRef,
    StoreError,
    Target,
    bundle_to_secret,
)
from tests.certs.conftest import NAMESPACE, SERVICE, T0
from tests.certs.fake_apiserver import FakeAPIServer, serve
from webhook.cli import main as cli_main

REF = SecretRef(NAMESPACE, "rollout-webhook-tls")
SETTINGS = BootstrapSettings(REF, Target(SERVICE, NAMESPACE), default_webhook_configs())


@pytest.fixture
def server() -> Iterator[tuple[FakeAPIServer, str]]:
    api = FakeAPIServer()
    for kind, resource in (
        (MUTATING, "mutatingwebhookconfigurations"),
        (VALIDATING, "validatingwebhookconfigurations"),
    ):
        api.put(
            resource,
            "",
            "rollout-webhook",
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": kind,
                "metadata": {
                    "name": "rollout-webhook",
                    "annotations": {"meta.helm.sh/release-name": "rw"},
                },
                "webhooks": [
                    {
                        "name": f"{resource[:8]}.rollout-webhook.io",
                        "clientConfig": {
                            "service": {"name": SERVICE, "namespace": NAMESPACE, "path": "/x"}
                        },
                        "failurePolicy": "Ignore",
                        "sideEffects": "NoneOnDryRun",
                        "admissionReviewVersions": ["v1"],
                    }
                ],
            },
        )
    with serve(api) as url:
        yield api, url


def api_client(url: str) -> Any:
    cfg = client.Configuration()
    cfg.host = url
    return client.ApiClient(cfg)


def test_secret_adapter_create_conflict_replace(
    server: tuple[FakeAPIServer, str], bundle: pki.Bundle
) -> None:
    api, url = server
    secrets = KubeSecretAPI(api_client(url))
    assert secrets.get(REF) is None
    created = secrets.create(bundle_to_secret(REF, bundle))
    wire = api.get("secrets", NAMESPACE, REF.name)
    assert wire is not None
    assert wire["type"] == "kubernetes.io/tls"
    assert base64.b64decode(wire["data"]["tls.crt"]).decode() == bundle.cert_pem
    assert wire["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "rollout-webhook"}
    with pytest.raises(SecretConflict, match="already exists"):
        secrets.create(bundle_to_secret(REF, bundle))
    read = secrets.get(REF)
    assert read == created
    updated = secrets.replace(bundle_to_secret(REF, bundle, read.resource_version))
    assert updated.resource_version != read.resource_version
    # A write from the stale read is refused: the resourceVersion went over the wire.
    with pytest.raises(SecretConflict, match="changed since it was read"):
        secrets.replace(bundle_to_secret(REF, bundle, read.resource_version))
    puts = [body for method, _, _, body in api.requests if method == "PUT"]
    assert [p["metadata"]["resourceVersion"] for p in puts] == [read.resource_version] * 2


def test_bootstrap_through_an_api_client(server: tuple[FakeAPIServer, str]) -> None:
    api, url = server
    before = api.get("mutatingwebhookconfigurations", "", "rollout-webhook")
    report = bootstrap(api_client(url), SETTINGS, T0)
    assert report.steps[0].created
    stored = read_bundle(api_client(url), REF)
    assert stored is not None
    assert pki.check_bundle(stored, SERVICE, NAMESPACE, T0).action is pki.Action.NONE
    for resource in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
        obj = api.get(resource, "", "rollout-webhook")
        assert obj is not None
        assert obj["webhooks"][0]["clientConfig"]["caBundle"] == encode_ca_bundle(stored.trust_pem)
    after = api.get("mutatingwebhookconfigurations", "", "rollout-webhook")
    assert after is not None and before is not None
    after["webhooks"][0]["clientConfig"].pop("caBundle")
    after["metadata"].pop("resourceVersion")
    before["metadata"].pop("resourceVersion")
    assert after == before
    patches = [(ctype, body) for method, _, ctype, body in api.requests if method == "PATCH"]
    assert {c for c, _ in patches} == {"application/json-patch+json"}
    # A second run reads the caBundle back as the client decodes it and patches nothing.
    assert not bootstrap(api_client(url), SETTINGS, T0 + timedelta(days=1)).changed


def test_lease_adapter_and_micro_time_on_the_wire(server: tuple[FakeAPIServer, str]) -> None:
    api, url = server
    ref = LeaseRef(NAMESPACE, "rollout-webhook-certs")
    leases = KubeLeaseAPI(api_client(url))
    a = LeaseElector(leases, ref, "a", timedelta(seconds=60))
    b = LeaseElector(leases, ref, "b", timedelta(seconds=60))
    assert a.try_acquire_or_renew(T0)
    assert not b.try_acquire_or_renew(T0)
    wire = api.get("leases", NAMESPACE, ref.name)
    assert wire is not None
    assert wire["spec"]["holderIdentity"] == "a"
    assert wire["spec"]["leaseDurationSeconds"] == 60
    # MicroTime: the API server wants exactly six fraction digits, even for a whole second.
    micro = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|\+00:00)"
    assert re.fullmatch(micro, wire["spec"]["renewTime"])
    assert re.fullmatch(micro, wire["spec"]["acquireTime"])
    record = leases.get(ref)
    assert record is not None
    assert record.renew_time is not None
    assert abs(record.renew_time - T0) <= timedelta(microseconds=1)
    with pytest.raises(LeaseConflict):
        leases.create(ref, record)
    stale = record
    assert a.try_acquire_or_renew(T0 + timedelta(seconds=20))
    with pytest.raises(LeaseConflict):
        leases.replace(ref, stale)


def test_api_errors_become_one_line(server: tuple[FakeAPIServer, str]) -> None:
    api, url = server
    api.forbidden.add("secrets")
    with pytest.raises(StoreError) as err:
        KubeSecretAPI(api_client(url)).get(REF)
    assert str(err.value) == (
        "cannot read Secret rollout-system/rollout-webhook-tls: 403 Forbidden: "
        'secrets "rollout-webhook-tls" is forbidden: no RBAC rule'
    )


def kubeconfig(tmp_path: Path, url: str) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
        f"clusters: [{{name: fake, cluster: {{server: '{url}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: fake, context: {cluster: fake, user: u}}]\n"
    )
    return str(path)


@pytest.fixture
def certs_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", ("webhook.cli.certs",))


CLI = ["certs", "bootstrap", "--namespace", NAMESPACE, "--service", SERVICE]


@pytest.mark.usefixtures("certs_cli")
def test_cli_bootstrap_then_rotate(
    server: tuple[FakeAPIServer, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api, url = server
    kc = kubeconfig(tmp_path, url)
    assert cli_main.main([*CLI, "--kubeconfig", kc]) == 0
    out = capsys.readouterr().out
    assert "Secret rollout-system/rollout-webhook-tls: created (reissue)" in out
    assert "MutatingWebhookConfiguration rollout-webhook: caBundle updated" in out
    assert cli_main.main([*CLI, "--kubeconfig", kc]) == 0
    out = capsys.readouterr().out
    assert "Secret rollout-system/rollout-webhook-tls: valid" in out
    assert "caBundle already current" in out
    rotate = ["certs", "rotate", "--namespace", NAMESPACE, "--kubeconfig", kc, "--force"]
    assert cli_main.main(rotate) == 0
    out = capsys.readouterr().out
    assert "updated (stage-ca)" in out
    secret = api.get("secrets", NAMESPACE, "rollout-webhook-tls")
    assert secret is not None
    assert base64.b64decode(secret["data"]["ca.crt"]).decode().count("BEGIN CERTIFICATE") == 2


@pytest.mark.usefixtures("certs_cli")
def test_cli_cluster_errors_are_one_line(
    server: tuple[FakeAPIServer, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api, url = server
    api.forbidden.add("secrets")
    assert cli_main.main([*CLI, "--kubeconfig", kubeconfig(tmp_path, url)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        "rollout-webhook: error: cannot read Secret rollout-system/rollout-webhook-tls: 403"
    )
    assert err.count("\n") == 1

    assert cli_main.main([*CLI, "--kubeconfig", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rollout-webhook: error: kubeconfig {tmp_path / 'absent'}:")
    assert err.count("\n") == 1

    assert cli_main.main([*CLI, "--kubeconfig", kubeconfig(tmp_path, "http://127.0.0.1:9")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        "rollout-webhook: error: cannot read Secret rollout-system/rollout-webhook-tls: "
    )
    assert err.count("\n") == 1
    assert "Traceback" not in err

    assert cli_main.main(["certs", "bootstrap", "--namespace", "Bad NS", "--kubeconfig", "x"]) == 2
    assert "namespace 'Bad NS' is not a valid DNS label" in capsys.readouterr().err


@pytest.mark.usefixtures("certs_cli")
def test_cli_check_reads_the_secret(
    server: tuple[FakeAPIServer, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = server
    kc = kubeconfig(tmp_path, url)
    check = [
        "certs",
        "check",
        "--secret",
        "rollout-webhook-tls",
        "--service",
        SERVICE,
        "--namespace",
        NAMESPACE,
        "--kubeconfig",
        kc,
    ]
    assert cli_main.main(check) == 1
    assert (
        capsys.readouterr().err
        == "rollout-webhook: error: Secret rollout-system/rollout-webhook-tls does not exist\n"
    )
    assert cli_main.main([*CLI, "--kubeconfig", kc]) == 0
    capsys.readouterr()
    assert cli_main.main(check) == 0
    assert "action: none" in capsys.readouterr().out
    assert cli_main.main([*check, "--at", "2200-01-01T00:00:00Z"]) == 1
    assert "action: reissue" in capsys.readouterr().out


@pytest.mark.usefixtures("certs_cli")
def test_cli_webhook_selection_and_missing_configurations(
    server: tuple[FakeAPIServer, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api, url = server
    kc = kubeconfig(tmp_path, url)
    assert cli_main.main([*CLI, "--kubeconfig", kc, "--validating-webhook", ""]) == 0
    out = capsys.readouterr().out
    assert "MutatingWebhookConfiguration rollout-webhook: caBundle updated" in out
    assert "Validating" not in out
    validating = api.get("validatingwebhookconfigurations", "", "rollout-webhook")
    assert validating is not None
    assert "caBundle" not in validating["webhooks"][0]["clientConfig"]

    missing = [*CLI, "--kubeconfig", kc, "--mutating-webhook", "absent"]
    assert cli_main.main(missing) == 0
    assert capsys.readouterr().err == (
        "rollout-webhook: warning: MutatingWebhookConfiguration absent not found; its caBundle is not set\n"
    )
    assert cli_main.main([*missing, "--require-webhooks"]) == 1
