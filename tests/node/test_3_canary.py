"""Real traffic through a converted service: the Argo Rollouts controller walks an opted-in
service's canary on real pods of the sample application while a client sends steady HTTP
traffic through the service's Service, counting each answer by version; then an abort, an
opt-out and `helm uninstall`, each under the same traffic, with 0 failed requests.

The chart is upgraded with a policy whose prod canary pauses at 25, 50 and 75 % until promoted
(no traffic router: the canary splits by replica count), so each step is measured while it
holds. The figures of each step are printed in the test output.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.e2e import harness
from tests.e2e.rollouts import controllers
from tests.node import cluster
from tests.node.conftest import CHART, NAMESPACE, RELEASE
from tests.node.traffic import Counts, Traffic
from tests.node.workloads import apply, get, sample_deployment, sample_service, wait_for

WEIGHTS = (25, 50, 75)
STEPS: list[dict[str, Any]] = []
for _weight in WEIGHTS:
    STEPS += [{"setWeight": _weight}, {"pause": {}}]
REPLICAS = 4
# Per step: 400 requests; a binomial share of p over 400 has a standard deviation of at most
# 2.5 points, so 10 points is four of them.
REQUESTS_PER_STEP = 400
TOLERANCE = 0.10
ENABLED = "rollout-webhook.io/enabled"
# What the walk measured at each step, for the share test after it.
MEASURED: dict[int, Counts] = {}
POLICY = {
    "defaultEnvironment": "prod",
    "rolloutUpdates": "nextChange",
    "environments": {
        "prod": {
            "scaleDown": "onsuccess",
            "trafficRouting": "none",
            "rollout": {
                "enabled": True,
                "strategy": "canary",
                "canary": {"steps": STEPS},
            },
        }
    },
}


@pytest.fixture(scope="module")
def argo(node_cluster: cluster.NodeCluster, node_kubectl: harness.Tool) -> Iterator[None]:
    """The Argo Rollouts controller as its own ServiceAccount (the e2e tier's RBAC and
    configuration), a process on the host like the control plane's."""
    node_kubectl("apply", "-f", str(controllers.RBAC_FILE))
    node_kubectl("apply", "-f", str(controllers.CONFIG_FILE))
    token = node_kubectl(
        "create", "token", controllers.ARGO_SERVICE_ACCOUNT, "-n", controllers.ARGO_NAMESPACE,
        "--duration=12h",
    ).stdout.strip()  # fmt: skip
    assert node_cluster.plane is not None
    kubeconfig = node_cluster.work / "argo-rollouts.kubeconfig"
    config = harness.token_kubeconfig(node_cluster.plane, controllers.ARGO_SERVICE_ACCOUNT, token)
    kubeconfig.write_text(yaml.safe_dump(config))
    metrics_port, healthz_port = harness.free_ports(2)
    process = node_cluster.spawn(
        "rollouts-controller",
        [
            "env",
            f"POD_NAMESPACE={controllers.ARGO_NAMESPACE}",
            str(node_cluster.binaries.rollouts_controller),
            f"--kubeconfig={kubeconfig}",
            "--leader-elect=false",
            f"--metricsPort={metrics_port}",
            f"--healthzPort={healthz_port}",
            "--loglevel=info",
        ],
    )
    wait_for(lambda: process.alive() and _healthy(healthz_port), "the Argo Rollouts controller")
    yield
    process.stop()


def _healthy(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
        return int(response.status) == 200


@pytest.fixture(scope="module")
def canary_policy(node_helm: harness.Tool, release: str) -> None:
    node_helm(
        "upgrade", release, str(CHART), "--namespace", NAMESPACE, "--reuse-values",
        "--set-json", f"policy.document={json.dumps(POLICY)}", "--wait", "--timeout", "5m",
        timeout=330,
    )  # fmt: skip


@pytest.fixture(scope="module")
def shop(
    node_kubectl: harness.Tool, argo: None, canary_policy: None
) -> Iterator[tuple[str, Traffic]]:
    """An opted-in sample service at 1.0.0, converted and Healthy, with traffic running."""
    del argo, canary_policy
    namespace = f"shop-{uuid.uuid4().hex[:6]}"
    node_kubectl("create", "namespace", namespace)
    apply(node_kubectl, sample_service("web", namespace))
    deployment = sample_deployment("web", namespace, "1.0.0", REPLICAS, labels={ENABLED: "true"})
    # The webhook decides from watch-fed caches: apply once a dry run sees the Service.
    wait_for(
        lambda: _steps(_dry_run(node_kubectl, deployment)),
        "the webhook to see the Service and the canary policy",
    )
    apply(node_kubectl, deployment)
    wait_for(lambda: _phase(node_kubectl, namespace) == "Healthy", "a Healthy Rollout", 300)
    steps = _rollout(node_kubectl, namespace)["spec"]["strategy"]["canary"]["steps"]
    assert steps == STEPS
    address = get(node_kubectl, "service", "web", "-n", namespace)["spec"]["clusterIP"]
    with Traffic(f"http://{address}/") as traffic:
        traffic.wait_for_requests(50, 0.0)
        yield namespace, traffic
    node_kubectl("delete", "namespace", namespace, "--wait=false")


def _dry_run(kubectl: harness.Tool, manifest: dict[str, Any]) -> str:
    result = kubectl(
        "apply", "--dry-run=server", "-f", "-", "-o", "json", input=json.dumps(manifest)
    )
    return result.stderr


def _steps(stderr: str) -> bool:
    # No "no Service selects the pods" warning: the Service is in the webhook's cache.
    return "no Service" not in stderr


def _rollout(kubectl: harness.Tool, namespace: str) -> dict[str, Any]:
    rollout: dict[str, Any] = get(kubectl, "rollout", "web", "-n", namespace)
    return rollout


def _phase(kubectl: harness.Tool, namespace: str) -> str:
    phase: str = _rollout(kubectl, namespace).get("status", {}).get("phase", "")
    return phase


def _argo(node_cluster: cluster.NodeCluster, *args: str) -> str:
    tool = harness.Tool(
        node_cluster.binaries.argo_plugin,
        {"KUBECONFIG": str(node_cluster.kubeconfig)},
    )
    return tool(*args).stdout


def _paused_at(kubectl: harness.Tool, namespace: str, weight: int) -> bool:
    """Paused at `weight` with every pod of both versions ready."""
    rollout = _rollout(kubectl, namespace)
    status = rollout.get("status", {})
    steps = rollout["spec"]["strategy"]["canary"]["steps"]
    index = status.get("currentStepIndex", 0)
    at_pause = index > 0 and steps[index - 1].get("setWeight") == weight
    paused = status.get("phase") == "Paused"
    ready = status.get("readyReplicas", 0) == status.get("replicas", -1)
    return bool(at_pause and paused and ready)


def _report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n{line}")


def test_a_canary_walks_its_steps_under_traffic_without_a_failed_request(
    node_cluster: cluster.NodeCluster,
    node_kubectl: harness.Tool,
    shop: tuple[str, Traffic],
    capsys: pytest.CaptureFixture[str],
) -> None:
    namespace, traffic = shop
    started = time.monotonic()
    node_kubectl("set", "image", "deployment/web", "app=localhost/rollout-webhook-node/sample:2.0.0", "-n", namespace)  # fmt: skip
    measured: dict[int, Counts] = {}
    for weight in WEIGHTS:
        wait_for(lambda w=weight: _paused_at(node_kubectl, namespace, w), f"paused at {weight} %")
        time.sleep(2)  # kube-proxy's rules follow the endpoints within its sync period
        counts = traffic.wait_for_requests(REQUESTS_PER_STEP, time.monotonic())
        measured[weight] = counts
        _report(
            capsys,
            f"canary step setWeight {weight}: share of 2.0.0 {counts.share('2.0.0'):.1%} "
            f"over {counts.describe()}",
        )
        _argo(node_cluster, "promote", "web", "-n", namespace)
    wait_for(lambda: _phase(node_kubectl, namespace) == "Healthy", "Healthy at 2.0.0", 300)
    time.sleep(2)
    after = traffic.wait_for_requests(100, time.monotonic())
    whole = traffic.counts(started)
    _report(
        capsys, f"whole canary 1.0.0 -> 2.0.0: {whole.describe()}; after it: {after.describe()}"
    )
    MEASURED.update(measured)
    assert after.answers.keys() == {"2.0.0"}
    assert whole.failures == []
    assert set(measured) == set(WEIGHTS)


def test_at_each_step_the_share_of_the_new_version_matches_its_weight() -> None:
    assert set(MEASURED) == set(WEIGHTS), "the walk above did not run"
    for weight, counts in MEASURED.items():
        assert abs(counts.share("2.0.0") - weight / 100) <= TOLERANCE, (weight, counts.describe())


def test_an_aborted_canary_returns_every_request_to_the_stable_version(
    node_cluster: cluster.NodeCluster,
    node_kubectl: harness.Tool,
    shop: tuple[str, Traffic],
    capsys: pytest.CaptureFixture[str],
) -> None:
    namespace, traffic = shop
    started = time.monotonic()
    node_kubectl("set", "image", "deployment/web", "app=localhost/rollout-webhook-node/sample:1.0.0", "-n", namespace)  # fmt: skip
    wait_for(lambda: _paused_at(node_kubectl, namespace, WEIGHTS[0]), "paused at the first step")
    _argo(node_cluster, "abort", "web", "-n", namespace)
    wait_for(
        lambda: (
            _rollout(node_kubectl, namespace)["status"].get("abort") is True
            and _stable_only(node_kubectl, namespace)
        ),
        "the canary scaled away",
        300,
    )
    time.sleep(2)
    after = traffic.wait_for_requests(100, time.monotonic())
    whole = traffic.counts(started)
    _report(capsys, f"aborted canary: {whole.describe()}; after it: {after.describe()}")
    assert after.answers.keys() == {"2.0.0"}  # the stable version of the walk before
    assert whole.failures == []


def _stable_only(kubectl: harness.Tool, namespace: str) -> bool:
    """Every pod of the Rollout ready and none more than its replicas: the canary's are gone."""
    status = _rollout(kubectl, namespace)["status"]
    return bool(status.get("readyReplicas") == REPLICAS and status.get("replicas") == REPLICAS)


def test_opting_out_returns_a_plain_deployment_without_a_failed_request(
    node_kubectl: harness.Tool,
    shop: tuple[str, Traffic],
    capsys: pytest.CaptureFixture[str],
) -> None:
    namespace, traffic = shop
    started = time.monotonic()
    node_kubectl("label", "deployment", "web", "-n", namespace, f"{ENABLED}=false", "--overwrite")

    def plain() -> bool:
        rollouts = get(node_kubectl, "rollouts", "-n", namespace)["items"]
        deployment = get(node_kubectl, "deployment", "web", "-n", namespace)
        ready = deployment.get("status", {}).get("readyReplicas", 0)
        return not rollouts and ready == REPLICAS

    wait_for(plain, "a plain Deployment with every pod ready and no Rollout", 300)
    time.sleep(2)
    after = traffic.wait_for_requests(100, time.monotonic())
    whole = traffic.counts(started)
    _report(capsys, f"opt-out: {whole.describe()}; after it: {after.describe()}")
    assert whole.failures == []
    assert after.total == sum(after.answers.values())


def test_helm_uninstall_leaves_converted_services_serving(
    node_kubectl: harness.Tool,
    node_helm: harness.Tool,
    release: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    namespace = f"kept-{uuid.uuid4().hex[:6]}"
    node_kubectl("create", "namespace", namespace)
    apply(node_kubectl, sample_service("web", namespace))
    deployment = sample_deployment("web", namespace, "1.0.0", 2, labels={ENABLED: "true"})
    wait_for(lambda: _steps(_dry_run(node_kubectl, deployment)), "the webhook to see the Service")
    apply(node_kubectl, deployment)
    wait_for(lambda: _phase(node_kubectl, namespace) == "Healthy", "a Healthy Rollout", 300)
    address = get(node_kubectl, "service", "web", "-n", namespace)["spec"]["clusterIP"]
    with Traffic(f"http://{address}/") as traffic:
        traffic.wait_for_requests(50, 0.0)
        started = time.monotonic()
        node_helm("uninstall", release, "--namespace", NAMESPACE, "--wait", timeout=200)
        after = traffic.wait_for_requests(200, time.monotonic())
        whole = traffic.counts(started)
    kept = _rollout(node_kubectl, namespace)
    deployment_now = get(node_kubectl, "deployment", "web", "-n", namespace)
    configurations = node_kubectl("get", "mutatingwebhookconfiguration", "-o", "name").stdout
    _report(
        capsys,
        f"helm uninstall: {whole.describe()}; the Rollout is {kept['status'].get('phase')}, "
        f"the Deployment at {deployment_now['spec'].get('replicas')} replicas",
    )
    assert RELEASE not in configurations
    assert kept["status"].get("phase") == "Healthy"
    assert whole.failures == []
    assert after.answers.keys() == {"1.0.0"}
