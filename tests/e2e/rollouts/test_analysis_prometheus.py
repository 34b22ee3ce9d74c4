"""The seed's success-rate analysis, managed by the product, against a real Prometheus.

The policy (tests/e2e/rollouts/policy.yaml) declares the seed's `success-rate` AnalysisTemplate
and gives the `success-rate` environment a default analysis step after its canary steps. The
webhook writes the template into the service's namespace and the analysis step into the
Rollout; the Argo Rollouts controller asks Prometheus, which scrapes counters this test sets:
a 99% success rate lets the canary finish, a 50% one aborts it with every stable pod kept.
"""

from __future__ import annotations

import json

from kubernetes import client

from tests.e2e import harness
from tests.e2e.rollouts.prometheus import Prometheus
from tests.e2e.rollouts.scenario import (
    apply,
    deployment,
    eventually,
    get,
    ready_pods,
    rollout_object,
    service,
    wait_healthy,
)

REPLICAS = 4
HASH = "rollouts-pod-template-hash"
ENVIRONMENT = "success-rate"
FIELD_MANAGER = "rollout-webhook"


def _success_rate(prometheus: Prometheus, name: str) -> float | None:
    # The seed's query, as the template asks it.
    ok = f'sum(rate(http_requests_total{{job="{name}",status=~"2.."}}[5m]))'
    everything = f'sum(rate(http_requests_total{{job="{name}"}}[5m]))'
    values = prometheus.query(f"{ok} / {everything}")
    return values[0] if values else None


def _start(
    kubectl: harness.Tool, prometheus: Prometheus, name: str, ns: str, *, ok: int, error: int
) -> str:
    """A converted service with its request counters in Prometheus; its stable hash."""
    prometheus.metrics.serve(name, ok=ok, error=error)
    eventually(
        lambda: _success_rate(prometheus, name) is not None,
        f"Prometheus to have a success rate for {name}",
    )
    apply(
        kubectl,
        service(name, ns),
        deployment(name, ns, replicas=REPLICAS, environment=ENVIRONMENT),
    )
    wait_healthy(kubectl, name, ns)
    return str(get(kubectl, "rollout", name, "-n", ns)["status"]["stableRS"])  # type: ignore[index]


def _runs(kubectl: harness.Tool, ns: str) -> list[dict[str, object]]:
    runs = get(kubectl, "analysisruns", "-n", ns)
    return list((runs or {}).get("items", []))


def _measured(run: dict[str, object]) -> list[float]:
    status = run.get("status") or {}
    results = status.get("metricResults") or []  # type: ignore[attr-defined]
    return [
        float(str(m["value"]).strip("[]"))
        for result in results
        for m in result.get("measurements") or []
        if m.get("value")
    ]


def test_the_managed_template_and_step_are_written_by_the_webhook(
    kubectl: harness.Tool,
    kube: client.ApiClient,
    rollouts_namespace: str,
    prometheus: Prometheus,
) -> None:
    ns = rollouts_namespace
    _start(kubectl, prometheus, "catalog", ns, ok=99, error=1)

    template = get(kubectl, "analysistemplate", "success-rate", "-n", ns)
    assert template is not None, "the webhook did not write the policy's AnalysisTemplate"
    assert template["metadata"]["labels"]["rollout-webhook.io/managed"] == "true"
    shown = kubectl(
        "get", "analysistemplate", "success-rate", "-n", ns, "-o", "json", "--show-managed-fields"
    )
    fields = json.loads(shown.stdout)["metadata"]["managedFields"]
    managers = {entry["manager"] for entry in fields}
    assert managers == {FIELD_MANAGER}, managers
    [metric] = template["spec"]["metrics"]
    assert metric["successCondition"] == "result[0] >= 0.95"

    steps = rollout_object(kube, "catalog", ns)["spec"]["strategy"]["canary"]["steps"]
    assert steps[-1] == {
        "analysis": {
            "templates": [{"templateName": "success-rate"}],
            "args": [
                {"name": "service-name", "value": "catalog"},
                {"name": "prometheus-address", "value": prometheus.address},
            ],
        }
    }, steps


def test_good_numbers_let_the_canary_finish(
    kubectl: harness.Tool,
    kube: client.ApiClient,
    rollouts_namespace: str,
    prometheus: Prometheus,
) -> None:
    ns = rollouts_namespace
    stable = _start(kubectl, prometheus, "payments", ns, ok=99, error=1)

    kubectl("set", "image", "deployment/payments", "app=example.invalid/payments:2", "-n", ns)

    def promoted() -> str | None:
        status = rollout_object(kube, "payments", ns).get("status") or {}
        new = status.get("stableRS")
        healthy = status.get("phase") == "Healthy" and new and new != stable
        return str(new) if healthy else None

    new_stable = eventually(promoted, "the canary to pass its analysis and become stable")
    [run] = _runs(kubectl, ns)
    assert run["status"]["phase"] == "Successful", run["status"]  # type: ignore[index]
    values = _measured(run)
    assert len(values) == 3, values
    assert all(0.95 <= value <= 1 for value in values), values
    core = client.CoreV1Api(kube)
    pods = ready_pods(core, ns, f"app=payments,{HASH}={new_stable}")
    assert len(pods) == REPLICAS


def test_bad_numbers_abort_and_every_stable_pod_stays(
    kubectl: harness.Tool,
    kube: client.ApiClient,
    rollouts_namespace: str,
    prometheus: Prometheus,
) -> None:
    ns = rollouts_namespace
    core = client.CoreV1Api(kube)
    stable = _start(kubectl, prometheus, "checkout", ns, ok=50, error=50)

    kubectl("set", "image", "deployment/checkout", "app=example.invalid/checkout:2", "-n", ns)

    def aborted() -> dict[str, object] | None:
        rollout = rollout_object(kube, "checkout", ns)
        status = rollout.get("status") or {}
        return rollout if status.get("abort") and status.get("phase") == "Degraded" else None

    rollout = eventually(aborted, "the rollout to abort on the failed analysis")
    [run] = _runs(kubectl, ns)
    assert run["status"]["phase"] == "Failed", run["status"]  # type: ignore[index]
    values = _measured(run)
    assert values and all(0.4 <= value <= 0.6 for value in values), values
    canary = rollout["status"]["currentPodHash"]  # type: ignore[index]
    assert canary != stable

    def back_on_stable() -> bool:
        return (
            len(ready_pods(core, ns, f"app=checkout,{HASH}={canary}")) == 0
            and len(ready_pods(core, ns, f"app=checkout,{HASH}={stable}")) == REPLICAS
        )

    eventually(back_on_stable, f"the canary {canary} gone and {REPLICAS} stable pods")
    assert rollout_object(kube, "checkout", ns)["status"]["stableRS"] == stable


def test_admission_warns_about_a_template_that_does_not_exist(
    kubectl: harness.Tool, rollouts_namespace: str
) -> None:
    ns = rollouts_namespace
    apply(kubectl, service("orders", ns))
    manifest = deployment("orders", ns, replicas=1, environment="missing-template")
    answer = kubectl(
        "create", "--dry-run=server", "-o", "name", "-f", "-", input=json.dumps(manifest)
    )
    assert "AnalysisTemplate not-there not found in namespace" in answer.stderr, answer.stderr
