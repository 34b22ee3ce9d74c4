"""Real traffic through a converted service: the Argo Rollouts controller walks an opted-in
service's canary on real pods of the sample application while a client sends steady HTTP
traffic through the service's Service, counting each answer by version; then an abort, an
opt-out, each under the same traffic, with 0 failed requests.

The chart is upgraded with a policy whose prod canary pauses at 25, 50 and 75 % until promoted
(no traffic router: the canary splits by replica count), so each step is measured while it
holds. The figures of each step are printed in the test output.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.e2e import harness
from tests.node import cluster
from tests.node.conftest import CHART, NAMESPACE
from tests.node.rollouts import (
    ENABLED,
    dry_run,
    kubectl_argo,
    paused_at,
    phase,
    policy_pausing_at,
    report,
    rollout,
    sees_service,
)
from tests.node.traffic import Counts, Traffic
from tests.node.workloads import apply, get, sample_deployment, sample_service, wait_for

WEIGHTS = (25, 50, 75)
REPLICAS = 4
# Per step: 400 requests; a binomial share of p over 400 has a standard deviation of at most
# 2.5 points, so 10 points is four of them.
REQUESTS_PER_STEP = 400
TOLERANCE = 0.10
# What the walk measured at each step, for the share test after it.
MEASURED: dict[int, Counts] = {}
# No traffic router: the canary splits by replica count.
POLICY = policy_pausing_at(WEIGHTS, "none")


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
        lambda: sees_service(dry_run(node_kubectl, deployment)),
        "the webhook to see the Service and the canary policy",
    )
    apply(node_kubectl, deployment)
    wait_for(lambda: phase(node_kubectl, namespace) == "Healthy", "a Healthy Rollout", 300)
    steps = rollout(node_kubectl, namespace)["spec"]["strategy"]["canary"]["steps"]
    assert steps == POLICY["environments"]["prod"]["rollout"]["canary"]["steps"]
    address = get(node_kubectl, "service", "web", "-n", namespace)["spec"]["clusterIP"]
    with Traffic(f"http://{address}/") as traffic:
        traffic.wait_for_requests(50, 0.0)
        yield namespace, traffic
    node_kubectl("delete", "namespace", namespace, "--wait=false")


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
        wait_for(lambda w=weight: paused_at(node_kubectl, namespace, w), f"paused at {weight} %")
        time.sleep(2)  # kube-proxy's rules follow the endpoints within its sync period
        counts = traffic.wait_for_requests(REQUESTS_PER_STEP, time.monotonic())
        measured[weight] = counts
        report(
            capsys,
            f"canary step setWeight {weight}: share of 2.0.0 {counts.share('2.0.0'):.1%} "
            f"over {counts.describe()}",
        )
        kubectl_argo(node_cluster, "promote", "web", "-n", namespace)
    wait_for(lambda: phase(node_kubectl, namespace) == "Healthy", "Healthy at 2.0.0", 300)
    time.sleep(2)
    after = traffic.wait_for_requests(100, time.monotonic())
    whole = traffic.counts(started)
    report(capsys, f"whole canary 1.0.0 -> 2.0.0: {whole.describe()}; after it: {after.describe()}")
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
    wait_for(lambda: paused_at(node_kubectl, namespace, WEIGHTS[0]), "paused at the first step")
    kubectl_argo(node_cluster, "abort", "web", "-n", namespace)
    wait_for(
        lambda: (
            rollout(node_kubectl, namespace)["status"].get("abort") is True
            and _stable_only(node_kubectl, namespace)
        ),
        "the canary scaled away",
        300,
    )
    time.sleep(2)
    after = traffic.wait_for_requests(100, time.monotonic())
    whole = traffic.counts(started)
    report(capsys, f"aborted canary: {whole.describe()}; after it: {after.describe()}")
    assert after.answers.keys() == {"2.0.0"}  # the stable version of the walk before
    assert whole.failures == []


def _stable_only(kubectl: harness.Tool, namespace: str) -> bool:
    """Every pod of the Rollout ready and none more than its replicas: the canary's are gone."""
    status = rollout(kubectl, namespace)["status"]
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
    report(capsys, f"opt-out: {whole.describe()}; after it: {after.describe()}")
    assert whole.failures == []
    assert after.total == sum(after.answers.values())
