"""Dev policy: opting in a running Deployment hands its pods to a Rollout without downtime."""

from __future__ import annotations

import time

from kubernetes import client

from tests.e2e import harness
from tests.e2e.rollouts.scenario import (
    KEY,
    Sampler,
    apply,
    deployment,
    eventually,
    get,
    ready_pods,
    rollout_phase,
    service,
)

REPLICAS = 3


def test_opting_in_a_running_deployment_keeps_pods_ready_and_scales_it_down(
    kubectl: harness.Tool, kube: client.ApiClient, rollouts_namespace: str
) -> None:
    ns = rollouts_namespace
    core = client.CoreV1Api(kube)
    apply(
        kubectl,
        service("web", ns),
        deployment("web", ns, replicas=REPLICAS, environment="dev", opted_in=False),
    )
    eventually(
        lambda: len(ready_pods(core, ns, "app=web")) == REPLICAS,
        f"{REPLICAS} ready pods of the plain Deployment",
    )

    def ready_by_owner() -> tuple[int, int]:
        pods = ready_pods(core, ns, "app=web")
        of_rollout = sum(
            1
            for p in pods
            if p.metadata and "rollouts-pod-template-hash" in (p.metadata.labels or {})
        )
        return len(pods) - of_rollout, of_rollout

    with Sampler(ready_by_owner, interval=0.05) as sampler:
        kubectl("label", "deployment", "web", "-n", ns, f"{KEY}enabled=true")
        eventually(lambda: rollout_phase(kubectl, "web", ns) == "Healthy", "a Healthy Rollout")

        def handed_over() -> bool:
            dep = get(kubectl, "deployment", "web", "-n", ns)
            assert dep is not None
            return dep["spec"]["replicas"] == 0 and ready_by_owner() == (0, REPLICAS)

        eventually(handed_over, "the Deployment at 0 and only the Rollout's pods ready")
        time.sleep(1)  # keep sampling a little: nothing may drop after the hand-over

    samples = sampler.samples
    assert samples[0][1] == (REPLICAS, 0), f"the sampler started late: {samples}"
    assert samples[-1][1] == (0, REPLICAS), f"the sampler stopped early: {samples}"
    totals = [
        deployment_ready + rollout_ready for deployment_ready, rollout_ready in sampler.values
    ]
    assert min(totals) > 0, f"a moment with no ready pod: {samples}"
    # scaleDown: onsuccess scales the Deployment down only once the Rollout is fully available.
    assert min(totals) >= REPLICAS, f"fewer than {REPLICAS} ready pods at a moment: {samples}"
    dep = get(kubectl, "deployment", "web", "-n", ns)
    assert dep is not None
    annotations = dep["metadata"]["annotations"]
    assert annotations[f"{KEY}rollout-name"] == "web"
    assert annotations[f"{KEY}original-replicas"] == str(REPLICAS)
    rollout = get(kubectl, "rollout", "web", "-n", ns)
    assert rollout is not None
    assert rollout["spec"]["workloadRef"]["scaleDown"] == "onsuccess"
    assert rollout["status"]["availableReplicas"] == REPLICAS
