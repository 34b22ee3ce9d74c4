"""Every manifest the chart renders, in several value combinations, is valid.

Built-in kinds are checked against the Kubernetes 1.35 schemas with unknown fields refused
(kubernetes-validate, strict). ServiceMonitor and cert-manager kinds have no schema there:
they are checked field by field against the fields their APIs define.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helm.conftest import CHART, NAMESPACE, RELEASE, Render, all_of, find
from tests.schemas import validate_builtin_object

COMBINATIONS: dict[str, tuple[str, ...]] = {
    "default": (),
    "cert-manager": ("certificates.mode=certManager",),
    "cert-manager-issuer": (
        "certificates.mode=certManager",
        "certificates.certManager.issuerRef.name=corp-ca",
        "certificates.certManager.issuerRef.kind=ClusterIssuer",
    ),
    "fail-closed": ("webhook.failurePolicy=Fail", "priorityClassName=system-cluster-critical"),
    "extra-excluded": ('json:webhook.excludeNamespaces=["argocd","monitoring"]',),
    "one-replica": ("replicaCount=1",),
    "monitoring": ("metrics.serviceMonitor.enabled=true", "metrics.dashboard.enabled=true"),
    "external-policy": ("policy.create=false", "policy.name=platform-policy"),
    "hardened": (
        "networkPolicy.enabled=true",
        'json:networkPolicy.apiServer=[{"ipBlock":{"cidr":"10.0.0.0/24","except":["10.0.0.9/32"]}}]',
        'json:networkPolicy.health=[{"namespaceSelector":{"matchLabels":{"name":"mon"}}}]',
        "webhook.clientCA.enabled=true",
        "webhook.clientCA.configMap=apiserver-client-ca",
        "metrics.serviceMonitor.enabled=true",
    ),
    "digest-no-rotation": (
        "image.digest=sha256:" + "a" * 64,
        "certificates.bootstrap.rotationSchedule=",
    ),
}

# Fields each API defines (cert-manager.io/v1, monitoring.coreos.com/v1), for the kinds with
# no schema in kubernetes-validate: a misspelt field would be dropped by the API server.
CERTIFICATE_SPEC = {
    "secretName",
    "duration",
    "renewBefore",
    "dnsNames",
    "ipAddresses",
    "commonName",
    "privateKey",
    "usages",
    "issuerRef",
    "isCA",
    "subject",
    "secretTemplate",
    "uris",
    "revisionHistoryLimit",
    "additionalOutputFormats",
    "keystores",
    "literalSubject",
    "emailAddresses",
    "encodeUsagesInRequest",
    "nameConstraints",
    "otherNames",
    "renewBeforePercentage",
    "signatureAlgorithm",
}
PRIVATE_KEY = {"algorithm", "size", "rotationPolicy", "encoding"}
USAGES = {"server auth", "client auth", "digital signature", "key encipherment", "signing"}
ISSUER_SPEC = {"selfSigned", "ca", "acme", "vault", "venafi"}
SERVICEMONITOR_SPEC = {
    "selector",
    "namespaceSelector",
    "endpoints",
    "jobLabel",
    "targetLabels",
    "podTargetLabels",
    "sampleLimit",
    "scrapeProtocols",
    "attachMetadata",
    "labelLimit",
}
ENDPOINT = {
    "port",
    "targetPort",
    "path",
    "scheme",
    "interval",
    "scrapeTimeout",
    "tlsConfig",
    "bearerTokenSecret",
    "authorization",
    "honorLabels",
    "honorTimestamps",
    "metricRelabelings",
    "relabelings",
    "params",
    "followRedirects",
    "enableHttp2",
    "filterRunning",
    "proxyUrl",
}
TLS_CONFIG = {"ca", "cert", "keySecret", "serverName", "insecureSkipVerify"}


def check_structurally(doc: dict[str, Any]) -> None:
    kind = doc["kind"]
    spec = doc["spec"]
    assert doc["metadata"]["namespace"] == NAMESPACE
    if kind == "Certificate":
        assert doc["apiVersion"] == "cert-manager.io/v1"
        assert set(spec) <= CERTIFICATE_SPEC, set(spec) - CERTIFICATE_SPEC
        assert set(spec["privateKey"]) <= PRIVATE_KEY
        assert set(spec.get("usages", [])) <= USAGES
        assert set(spec["issuerRef"]) <= {"name", "kind", "group"}
        assert spec["issuerRef"]["kind"] in ("Issuer", "ClusterIssuer")
    elif kind == "Issuer":
        assert doc["apiVersion"] == "cert-manager.io/v1"
        assert len(spec) == 1
        assert set(spec) <= ISSUER_SPEC
        assert set(spec.get("ca", {})) <= {"secretName", "crlDistributionPoints", "ocspServers"}
    elif kind == "ServiceMonitor":
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        assert set(spec) <= SERVICEMONITOR_SPEC, set(spec) - SERVICEMONITOR_SPEC
        for endpoint in spec["endpoints"]:
            assert set(endpoint) <= ENDPOINT, set(endpoint) - ENDPOINT
            assert set(endpoint.get("tlsConfig", {})) <= TLS_CONFIG
    else:
        raise AssertionError(f"no check for {kind}")


@pytest.mark.parametrize("combination", sorted(COMBINATIONS))
def test_every_manifest_is_valid(render: Render, combination: str) -> None:
    docs = render(*COMBINATIONS[combination])
    assert docs
    for doc in docs:
        if doc["kind"] in ("Certificate", "Issuer", "ServiceMonitor"):
            check_structurally(doc)
        else:
            validate_builtin_object(doc)
        namespaced = doc["kind"] not in (
            "ClusterRole",
            "ClusterRoleBinding",
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        )
        if namespaced:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


def test_the_checks_catch_a_misspelt_field(render: Render) -> None:
    # The validation above must be able to fail: a misspelt field is refused.
    deployment = find(render(), "Deployment")
    deployment["spec"]["template"]["spec"]["securityContex"] = {}
    with pytest.raises(Exception, match="securityContex"):
        validate_builtin_object(deployment)
    monitor = find(render("metrics.serviceMonitor.enabled=true"), "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["tlsconfig"] = {}
    with pytest.raises(AssertionError):
        check_structurally(monitor)


def test_helm_lint_strict(helm_binary: Path) -> None:
    result = subprocess.run(
        [str(helm_binary), "lint", "--strict", str(CHART), "--namespace", NAMESPACE],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_default_objects(render: Render) -> None:
    kinds = sorted(d["kind"] for d in render())
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ServiceAccount",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Service",
            "Deployment",
            "PodDisruptionBudget",
            "Lease",
            "Job",
            "Job",
            "CronJob",
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        ]
    )
    # One ClusterRole: everything else is namespaced.
    assert len(all_of(render(), "ClusterRole")) == 1
