"""`kubectl scale deployment` of a converted service, with the real controllers running.

Argo Rollouts scales the Deployment down only at the Rollout's first revision
(argo-rollouts#4935): a scale that reached the Deployment in the middle of a later canary
would run its pods beside the Rollout's for as long as the canary waits. Here the scale goes
through the chart's `deployments/scale` entry: the Deployment's ReplicaSets must never get a
pod, while the Rollout takes the new count.
"""

from __future__ import annotations

import time
from typing import Any

from kubernetes import client

from tests.e2e import harness
from tests.e2e.rollouts.scenario import (
    Sampler,
    apply,
    deployment,
    eventually,
    get,
    rollout_object,
    service,
    wait_healthy,
)

V1 = "example.invalid/web:1"
V2 = "example.invalid/web:2"
MANUAL_PAUSE_STEP = 3  # the prod steps of policy.yaml: the pause without a duration


def deployment_pods(apps: client.AppsV1Api, ns: str) -> int:
    """Pods asked for or running in the ReplicaSets the Deployment owns (not the Rollout's)."""
    total = 0
    for rs in apps.list_namespaced_replica_set(ns, label_selector="app=web").items:
        owners = (rs.metadata.owner_references if rs.metadata else None) or []
        if any(o.kind == "Deployment" and o.name == "web" for o in owners):
            asked = rs.spec.replicas if rs.spec else 0
            running = rs.status.replicas if rs.status else 0
            total += int(asked or 0) + int(running or 0)
    return total


def at_manual_pause(kube: client.ApiClient, ns: str) -> bool:
    status: dict[str, Any] = rollout_object(kube, "web", ns).get("status") or {}
    return status.get("currentStepIndex") == MANUAL_PAUSE_STEP and status.get("phase") == "Paused"


def rollout_available(kube: client.ApiClient, ns: str, count: int) -> bool:
    rollout = rollout_object(kube, "web", ns)
    status: dict[str, Any] = rollout.get("status") or {}
    return rollout["spec"]["replicas"] == count and int(status.get("availableReplicas") or 0) >= (
        count
    )


def test_kubectl_scale_during_a_paused_canary_never_runs_deployment_pods(
    kubectl: harness.Tool, argo: harness.Tool, kube: client.ApiClient, rollouts_namespace: str
) -> None:
    ns = rollouts_namespace
    apps = client.AppsV1Api(kube)
    apply(kubectl, service("web", ns), deployment("web", ns, replicas=4, image=V1))
    wait_healthy(kubectl, "web", ns)
    kubectl("set", "image", "deployment/web", f"app={V2}", "-n", ns)
    eventually(lambda: at_manual_pause(kube, ns), "the canary at its pause without a duration")
    eventually(lambda: deployment_pods(apps, ns) == 0, "Argo's first scale-down to be over")

    with Sampler(lambda: deployment_pods(apps, ns), interval=0.2) as pods:
        result = kubectl("scale", "deployment", "web", "-n", ns, "--replicas=6")
        assert "scaled the Rollout to 6" in result.stderr
        eventually(lambda: rollout_available(kube, ns, 6), "the paused Rollout at 6 available")
        # Watched as long as a doubled canary was once seen to last: 15 s more.
        time.sleep(15)
    assert pods.values and set(pods.values) == {0}, pods.samples
    assert at_manual_pause(kube, ns), "the scale must not move the canary on"
    stored = get(kubectl, "deployment", "web", "-n", ns)
    assert stored is not None and stored["spec"]["replicas"] == 0

    # Once Healthy, the same.
    argo("promote", "web", "-n", ns, "--full")
    eventually(
        lambda: (rollout_object(kube, "web", ns).get("status") or {}).get("phase") == "Healthy",
        "the Rollout Healthy",
        timeout=120,
    )
    with Sampler(lambda: deployment_pods(apps, ns), interval=0.2) as pods:
        kubectl("scale", "deployment", "web", "-n", ns, "--replicas=3")
        eventually(lambda: rollout_available(kube, ns, 3), "the Healthy Rollout at 3")
    assert set(pods.values) == {0}, pods.samples
