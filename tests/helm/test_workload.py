"""The webhook's pods, the certificate Jobs, the metrics objects.

The arguments the chart gives the image are parsed by the product's own command-line parser
and settings, so a flag the CLI does not have, or a value it refuses, fails here.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.helm.conftest import NAMESPACE, RELEASE, Render, all_of, find
from webhook.cli.main import build_parser
from webhook.server.metrics import Metrics

CLI_MODULES = ("webhook.cli.policy", "webhook.cli.certs", "webhook.cli.serve")
TLS_DIR = "/etc/rollout-webhook/tls"


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = find(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def test_deployment_is_highly_available_and_locked_down(render: Render) -> None:
    docs = render()
    deployment = find(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    spec = pod_spec(docs)
    [spread] = spec["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert "priorityClassName" not in spec
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = spec["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    # No CPU limit (throttling would become admission latency); memory is limited.
    assert "cpu" not in container["resources"]["limits"]
    assert "memory" in container["resources"]["limits"]
    # The probes use the health port, which no load on the admission port can starve.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"https": 8443, "health": 8081}
    assert "--health-port=8081" in container["args"]
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/readyz",
        "port": "health",
        "scheme": "HTTP",
    }
    assert container["livenessProbe"]["httpGet"] == {
        "path": "/healthz",
        "port": "health",
        "scheme": "HTTP",
    }
    pdb = find(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    assert pdb["spec"]["maxUnavailable"] == 1


def test_no_mesh_sidecar_unless_asked(render: Render) -> None:
    # The API server calls the webhook from outside any mesh; a sidecar in a Job never ends.
    docs = render()
    template = find(docs, "Deployment")["spec"]["template"]
    assert template["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    for job in all_of(docs, "Job"):
        annotations = job["spec"]["template"]["metadata"]["annotations"]
        assert annotations["sidecar.istio.io/inject"] == "false"
    cron = find(docs, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]
    assert cron["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    asked = render('json:podAnnotations={"sidecar.istio.io/inject": "true", "team": "platform"}')
    assert find(asked, "Deployment")["spec"]["template"]["metadata"]["annotations"] == {
        "sidecar.istio.io/inject": "true",
        "team": "platform",
    }


def test_one_replica_still_lets_a_node_drain(render: Render) -> None:
    docs = render("replicaCount=1", "priorityClassName=system-cluster-critical")
    assert find(docs, "Deployment")["spec"]["replicas"] == 1
    # maxUnavailable 1 with one pod: an eviction is allowed, a drain is never stuck.
    assert find(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert pod_spec(docs)["priorityClassName"] == "system-cluster-critical"


def test_serve_arguments_are_accepted_by_the_cli(
    render: Render, monkeypatch: pytest.MonkeyPatch
) -> None:
    from webhook.cli.serve import settings_from_args

    docs = render("webhook.failurePolicy=Fail")
    [container] = pod_spec(docs)["containers"]
    for item in container["env"]:
        if "value" in item:
            monkeypatch.setenv(item["name"], item["value"])
    args = build_parser(CLI_MODULES).parse_args(container["args"])
    settings = settings_from_args(args)
    assert settings.in_cluster
    assert settings.host == "0.0.0.0"
    assert settings.fail_closed
    assert settings.namespace == NAMESPACE
    assert str(settings.cert_dir) == TLS_DIR
    assert settings.policy_configmap == f"{RELEASE}-policy"
    # Its own writes pass through: the user the matchConditions skip is the same.
    assert settings.own_service_account == f"system:serviceaccount:{NAMESPACE}:{RELEASE}"
    assert settings.port == container["ports"][0]["containerPort"]
    # Every ROLLOUT_WEBHOOK_* variable the chart sets is a setting the server reads (an
    # unknown one would be ignored without a word), and has the chart's value.
    from webhook.server.settings import ServeSettings

    for item in container["env"]:
        name = item["name"]
        if name.startswith("ROLLOUT_WEBHOOK_"):
            field = name.removeprefix("ROLLOUT_WEBHOOK_").lower()
            assert field in ServeSettings.model_fields, f"the server has no setting {field}"
            value = getattr(settings, field)
            if isinstance(value, tuple):  # list settings come as JSON
                assert list(value) == json.loads(item["value"])
            else:
                assert str(value) == item["value"]


@pytest.mark.parametrize(("sets", "log_format"), [((), "text"), (("logFormat=json",), "json")])
def test_the_log_format_reaches_the_server(
    render: Render, sets: tuple[str, ...], log_format: str
) -> None:
    from webhook.cli.serve import settings_from_args

    [container] = pod_spec(render(*sets))["containers"]
    assert f"--log-format={log_format}" in container["args"]
    args = build_parser(CLI_MODULES).parse_args(container["args"])
    assert settings_from_args(args).log_format == log_format


def test_the_server_mounts_the_serving_pair_but_not_the_ca_key(render: Render) -> None:
    for mode in ("bootstrap", "certManager"):
        docs = render(f"certificates.mode={mode}")
        spec = pod_spec(docs)
        [mount] = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "tls"]
        assert mount["mountPath"] == TLS_DIR
        [volume] = [v for v in spec["volumes"] if v["name"] == "tls"]
        assert volume["secret"]["secretName"] == f"{RELEASE}-tls"
        assert {i["key"] for i in volume["secret"]["items"]} == {"tls.crt", "tls.key"}


def certs_args(job: dict[str, Any]) -> Any:
    spec = job["spec"]["jobTemplate"]["spec"] if job["kind"] == "CronJob" else job["spec"]
    [container] = spec["template"]["spec"]["containers"]
    return build_parser(CLI_MODULES).parse_args(container["args"])


def test_bootstrap_jobs_make_the_secret_then_inject_the_ca(render: Render) -> None:
    from webhook.cli.certs import settings_from_args

    docs = render()
    jobs = {j["metadata"]["name"]: j for j in all_of(docs, "Job")}
    secret_job = jobs[f"{RELEASE}-certs-secret"]
    inject_job = jobs[f"{RELEASE}-certs-inject"]
    assert secret_job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert inject_job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    first, second = certs_args(secret_job), certs_args(inject_job)
    assert first.no_inject
    assert not second.no_inject
    assert second.require_webhooks
    settings = settings_from_args(second)
    assert str(settings.secret) == f"{NAMESPACE}/{RELEASE}-tls"
    assert settings.target.service == RELEASE
    assert settings.target.namespace == NAMESPACE
    # Both configurations of the release, by the names the chart gives them.
    assert sorted((c.kind, c.name) for c in settings.webhook_configs) == sorted(
        (d["kind"], d["metadata"]["name"])
        for d in docs
        if d["kind"].endswith("WebhookConfiguration")
    )
    # The pre-install Job runs before the release's ServiceAccount exists: it has its own.
    hook_account = secret_job["spec"]["template"]["spec"]["serviceAccountName"]
    assert hook_account == f"{RELEASE}-certs-hook"
    assert find(docs, "ServiceAccount", hook_account)["metadata"]["annotations"][
        "helm.sh/hook"
    ] == ("pre-install,pre-upgrade")
    assert inject_job["spec"]["template"]["spec"]["serviceAccountName"] == RELEASE
    rotate = find(docs, "CronJob")
    assert certs_args(rotate).certs_command == "rotate"
    assert certs_args(rotate).secret_name == f"{RELEASE}-tls"


def test_cert_manager_replaces_the_jobs(render: Render) -> None:
    docs = render("certificates.mode=certManager")
    assert not all_of(docs, "Job")
    assert not all_of(docs, "CronJob")
    certificate = find(docs, "Certificate", RELEASE)
    assert certificate["spec"]["secretName"] == f"{RELEASE}-tls"
    assert f"{RELEASE}.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    # A private CA signs the serving certificate: renewing it keeps the trusted CA.
    ca = find(docs, "Certificate", f"{RELEASE}-ca")
    assert ca["spec"]["isCA"] is True
    assert find(docs, "Issuer", f"{RELEASE}-selfsigned")["spec"] == {"selfSigned": {}}
    assert ca["spec"]["issuerRef"]["name"] == f"{RELEASE}-selfsigned"
    ca_issuer = find(docs, "Issuer", f"{RELEASE}-ca")
    assert ca_issuer["spec"] == {"ca": {"secretName": ca["spec"]["secretName"]}}
    assert certificate["spec"]["issuerRef"]["name"] == f"{RELEASE}-ca"
    # The server needs no Secret or webhook-configuration rights then.
    rules = find(docs, "Role", RELEASE)["rules"] + find(docs, "ClusterRole")["rules"]
    assert not [r for r in rules if "secrets" in r["resources"]]
    assert not [r for r in rules if r["apiGroups"] == ["admissionregistration.k8s.io"]]

    given = render(
        "certificates.mode=certManager",
        "certificates.certManager.issuerRef.name=corp-ca",
        "certificates.certManager.issuerRef.kind=ClusterIssuer",
    )
    assert not all_of(given, "Issuer")
    assert find(given, "Certificate")["spec"]["issuerRef"] == {
        "name": "corp-ca",
        "kind": "ClusterIssuer",
    }


def metric_names() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        for suffix in suffixes.get(family.type, [""]):
            names.add(family.name + suffix)
    return names


def test_service_monitor_scrapes_the_service_over_verified_tls(render: Render) -> None:
    docs = render("metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.team=sre")
    monitor = find(docs, "ServiceMonitor")
    service = find(docs, "Service")
    assert monitor["metadata"]["labels"]["team"] == "sre"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"]["ca"]["secret"] == {"name": f"{RELEASE}-tls", "key": "ca.crt"}
    assert endpoint["tlsConfig"]["serverName"] == f"{RELEASE}.{NAMESPACE}.svc"
    assert not all_of(render(), "ServiceMonitor")


def test_dashboard_queries_only_metrics_the_server_exports(render: Render) -> None:
    docs = render("metrics.dashboard.enabled=true", "metrics.dashboard.namespace=grafana")
    config = find(docs, "ConfigMap", f"{RELEASE}-dashboard")
    assert config["metadata"]["namespace"] == "grafana"
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config["data"]["rollout-webhook.json"])
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 8
    known = metric_names()
    used = {m for e in exprs for m in re.findall(r"rollout_webhook_[a-z_]+", e)}
    assert used, "the dashboard queries no metric"
    assert used <= known, f"not exported by the server: {sorted(used - known)}"
    # The admission, write, permission, policy and certificate metrics each have a panel.
    families = {re.sub(r"_(total|bucket|sum|count)$", "", m) for m in used}
    assert families >= {
        "rollout_webhook_admission_requests",
        "rollout_webhook_admission_duration_seconds",
        "rollout_webhook_rejected_calls",
        "rollout_webhook_cluster_writes",
        "rollout_webhook_access_reviews",
        "rollout_webhook_policy_reloads",
        "rollout_webhook_certificate_expiry_timestamp_seconds",
        "rollout_webhook_certificate_reloads",
    }


def test_only_the_webhook_s_own_pods_are_behind_its_service_and_budget(render: Render) -> None:
    """The certificate Jobs' pods carry labels of their own: a PodDisruptionBudget over pods
    of a Job cannot be computed ("jobs.batch does not implement the scale subresource"), and
    then no eviction of the webhook's pods is allowed; the Service must not send admissions
    to a pod that serves none."""
    docs = render()
    selectors = {
        "Service": find(docs, "Service")["spec"]["selector"],
        "PodDisruptionBudget": find(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    }
    deployment_pods = find(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    job_pods = [j["spec"]["template"]["metadata"]["labels"] for j in all_of(docs, "Job")]
    job_pods += [
        c["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
        for c in all_of(docs, "CronJob")
    ]
    assert len(job_pods) >= 3, "the bootstrap Jobs and the rotation CronJob"
    for kind, selector in selectors.items():
        assert selector.items() <= deployment_pods.items(), kind
        for labels in job_pods:
            assert not selector.items() <= labels.items(), (kind, labels)
