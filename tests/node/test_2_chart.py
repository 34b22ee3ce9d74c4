"""The chart as a user installs it, on a real node: `helm install` with only the image values
set, the certificate hook Job really running, two webhook pods Ready, the API server calling
the webhook through its Service, the PodDisruptionBudget in force; then `helm upgrade` and the
loss of the reconciler Lease's holder under admission load with failurePolicy Fail, counted
admission by admission."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests import builders
from tests.e2e import harness
from tests.node import cluster
from tests.node.admission import CONVERTED, AdmissionLoad
from tests.node.conftest import CHART, NAMESPACE, NEXT_TAG, PRODUCT_TAG, RELEASE, image_values
from tests.node.workloads import get, wait_for

SELECTOR = "app.kubernetes.io/name=rollout-webhook"
LEASE = f"{RELEASE}-reconciler"


@pytest.fixture
def team(node_kubectl: harness.Tool) -> Iterator[str]:
    name = f"team-{uuid.uuid4().hex[:6]}"
    node_kubectl("create", "namespace", name)
    yield name
    node_kubectl("delete", "namespace", name, "--wait=false")


def _webhook_pods(kubectl: harness.Tool) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = get(kubectl, "pods", "-n", NAMESPACE, "-l", SELECTOR)["items"]
    return [p for p in pods if "deletionTimestamp" not in p["metadata"]]


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _dry_run_converted(kubectl: harness.Tool, namespace: str) -> bool:
    probe = builders.opted_in(f"probe-{uuid.uuid4().hex[:6]}", namespace, replicas=1)
    result = kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(probe))
    return CONVERTED in (json.loads(result.stdout)["metadata"].get("annotations") or {})


def _lease_holder(kubectl: harness.Tool) -> str:
    """The pod holding the reconciler's Lease ("" when none): the identity is
    <pod name>_<random suffix>."""
    spec = get(kubectl, "lease", LEASE, "-n", NAMESPACE)["spec"]
    holder: str = (spec.get("holderIdentity") or "").rsplit("_", 1)[0]
    return holder


def test_install_runs_the_certificate_hook_and_two_webhook_pods_become_ready(
    node_kubectl: harness.Tool, release: str
) -> None:
    del release
    pods = _webhook_pods(node_kubectl)
    assert len(pods) == 2
    assert all(_ready(pod) for pod in pods)
    images = {c["image"] for pod in pods for c in pod["spec"]["containers"]}
    assert images == {f"localhost/rollout-webhook:{PRODUCT_TAG}"}
    # The hook Job made the serving certificate and injected its CA into the configuration.
    secret = get(node_kubectl, "secret", f"{RELEASE}-tls", "-n", NAMESPACE)
    assert {"tls.crt", "tls.key"} <= set(secret["data"])
    configuration = get(node_kubectl, "mutatingwebhookconfiguration", RELEASE)
    for webhook in configuration["webhooks"]:
        assert webhook["clientConfig"]["caBundle"]
        assert webhook["clientConfig"]["service"]["name"] == RELEASE
        assert "url" not in webhook["clientConfig"]


def test_the_api_server_calls_the_webhook_through_its_service(
    node_kubectl: harness.Tool, release: str, team: str
) -> None:
    del release
    # A server-side dry run comes back converted: the API server called a webhook pod through
    # the Service's ClusterIP (routed into the node's namespace, translated by kube-proxy).
    assert wait_for(lambda: _dry_run_converted(node_kubectl, team), "a converted dry run")
    plain = builders.deployment("plain", team, replicas=1)
    result = node_kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(plain)
    )
    assert CONVERTED not in (json.loads(result.stdout)["metadata"].get("annotations") or {})


def test_the_disruption_budget_refuses_a_second_eviction(
    node_kubectl: harness.Tool, release: str
) -> None:
    del release
    first, second = (p["metadata"]["name"] for p in _webhook_pods(node_kubectl))
    assert _evict(node_kubectl, first) == ""
    refusal = _evict(node_kubectl, second)
    assert "disruption budget" in refusal
    wait_for(
        lambda: len([p for p in _webhook_pods(node_kubectl) if _ready(p)]) == 2,
        "two ready webhook pods again",
        timeout=180,
    )


def _evict(kubectl: harness.Tool, pod: str) -> str:
    """ "" when the eviction is granted, else the API server's refusal."""
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod, "namespace": NAMESPACE},
    }
    path = f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}/eviction"
    result = kubectl("create", "--raw", path, "-f", "-", input=json.dumps(eviction), check=False)
    return "" if result.returncode == 0 else result.stderr


def _fail_closed(helm: harness.Tool, kubectl: harness.Tool, tag: str) -> None:
    helm(
        "upgrade",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        *image_values(tag),
        "--set",
        "webhook.failurePolicy=Fail",
        "--wait",
        "--timeout",
        "5m",
        timeout=330,
    )
    configuration = get(kubectl, "mutatingwebhookconfiguration", RELEASE)
    assert {w["failurePolicy"] for w in configuration["webhooks"]} == {"Fail"}


def _load(node_cluster: cluster.NodeCluster, namespace: str) -> AdmissionLoad:
    assert node_cluster.plane is not None
    return AdmissionLoad(node_cluster.plane.url, node_cluster.plane.ssl_context(), namespace)


def test_helm_upgrade_to_a_new_image_under_admission_load_fails_no_admission(
    node_cluster: cluster.NodeCluster,
    node_kubectl: harness.Tool,
    node_helm: harness.Tool,
    release: str,
    team: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    del release
    _fail_closed(node_helm, node_kubectl, PRODUCT_TAG)
    wait_for(lambda: _dry_run_converted(node_kubectl, team), "the webhook in force")
    with _load(node_cluster, team) as load:
        wait_for(lambda: load.total >= 20, "admissions before the upgrade")
        started = time.monotonic()
        node_helm(
            "upgrade",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            *image_values(NEXT_TAG),
            "--set",
            "webhook.failurePolicy=Fail",
            "--wait",
            "--timeout",
            "5m",
            timeout=330,
        )
        took = time.monotonic() - started
        pods = _webhook_pods(node_kubectl)
        images = {c["image"] for pod in pods for c in pod["spec"]["containers"]}
        before = load.total
        wait_for(lambda: load.total >= before + 20, "admissions after the upgrade")
    with capsys.disabled():
        print(f"\nhelm upgrade under admission load ({took:.0f} s): {load.summary()}")
    assert images == {f"localhost/rollout-webhook:{NEXT_TAG}"}
    assert load.failures == []


def test_killing_the_lease_holder_under_admission_load_fails_no_admission(
    node_cluster: cluster.NodeCluster,
    node_kubectl: harness.Tool,
    node_helm: harness.Tool,
    release: str,
    team: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    del release
    _fail_closed(node_helm, node_kubectl, NEXT_TAG)
    holder = wait_for(lambda: _lease_holder(node_kubectl), "a reconciler Lease holder")
    lease = get(node_kubectl, "lease", LEASE, "-n", NAMESPACE)["spec"]
    duration = float(lease["leaseDurationSeconds"])
    pods = {p["metadata"]["name"] for p in _webhook_pods(node_kubectl)}
    assert holder in pods, (holder, pods)
    with _load(node_cluster, team) as load:
        wait_for(lambda: load.total >= 20, "admissions before the kill")
        killed = time.monotonic()
        node_kubectl("delete", "pod", holder, "-n", NAMESPACE, "--wait=false")
        successor = wait_for(
            lambda: (h := _lease_holder(node_kubectl)) != holder and h,
            "another replica holding the Lease",
            timeout=duration * 3,
            interval=0.2,
        )
        takeover = time.monotonic() - killed
        wait_for(
            lambda: len([p for p in _webhook_pods(node_kubectl) if _ready(p)]) == 2,
            "two ready webhook pods again",
            timeout=180,
        )
        before = load.total
        wait_for(lambda: load.total >= before + 20, "admissions after the replacement")
    with capsys.disabled():
        print(
            f"\nlease holder {holder} deleted: {successor} took over in {takeover:.1f} s "
            f"(lease {duration:.0f} s); {load.summary()}"
        )
    assert successor in pods
    assert takeover <= duration + 5  # the lease's duration, plus the renew period's slack
    assert load.failures == []
