"""Opting a Healthy service out: back to a plain Deployment with its HPA, without downtime.

The reconciler in `serve` undoes the conversion in the order docs/migration.md gives: the
Rollout stops scaling the Deployment down, the Deployment gets its replicas back and the HPA
targets it again; once its pods are available the Rollout lets go of the Services, the
stable Service loses Argo's hash (it selects the Deployment's pods), and only then the
Rollout goes (its pods orphaned), with the generated Service and the Rollout's ReplicaSets.
The stable Service's ready endpoints are sampled throughout: never zero. Written last: it needs the reconciler wired into serve.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from tests.e2e import harness
from tests.e2e.rollouts.scenario import (
    KEY,
    Sampler,
    apply,
    deployment,
    eventually,
    get,
    ready_count,
    replica_sets,
    service,
    wait_healthy,
)

REPLICAS = 3
HASH = "rollouts-pod-template-hash"


def _hpa(ns: str) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 2,
            "maxReplicas": 6,
            # No metrics server runs: the HPA controller cannot act on this metric, so it
            # leaves the replica count alone; the test is about where the HPA points.
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }


@pytest.mark.parametrize("environment", ["dev", "bluegreen"])
def test_opting_out_returns_a_plain_deployment_with_its_hpa_and_no_downtime(
    kubectl: harness.Tool, kube: client.ApiClient, rollouts_namespace: str, environment: str
) -> None:
    ns = rollouts_namespace
    core = client.CoreV1Api(kube)
    apply(
        kubectl,
        service("web", ns),
        deployment("web", ns, replicas=REPLICAS, environment=environment),
    )
    wait_healthy(kubectl, "web", ns)
    apply(kubectl, _hpa(ns))
    eventually(
        lambda: (
            (get(kubectl, "hpa", "web", "-n", ns) or {})["spec"]["scaleTargetRef"]["kind"]
            == "Rollout"
        ),
        "the HPA re-targeted to the Rollout",
    )
    eventually(
        lambda: ready_count(core, ns, f"app=web,{HASH}")() == REPLICAS, "the Rollout's pods ready"
    )

    discovery = client.DiscoveryV1Api(kube)

    def serving_endpoints() -> int:
        """Ready endpoints of the stable Service: what traffic reaches, not just pods."""
        slices = discovery.list_namespaced_endpoint_slice(
            ns, label_selector="kubernetes.io/service-name=web"
        )
        return sum(
            1
            for item in slices.items
            for endpoint in item.endpoints or []
            if endpoint.conditions is not None and endpoint.conditions.ready
        )

    eventually(lambda: serving_endpoints() == REPLICAS, "the stable Service's endpoints")
    generated = "web-preview" if environment == "bluegreen" else "web-canary"
    assert get(kubectl, "service", generated, "-n", ns) is not None
    with (
        Sampler(ready_count(core, ns, "app=web"), interval=0.1) as sampler,
        Sampler(serving_endpoints, interval=0.1) as endpoints,
    ):
        kubectl("label", "deployment", "web", "-n", ns, f"{KEY}enabled=false", "--overwrite")
        state: list[dict[str, object]] = []

        def plain_again() -> bool:
            dep = get(kubectl, "deployment", "web", "-n", ns) or {}
            hpa = get(kubectl, "hpa", "web", "-n", ns) or {}
            stable = get(kubectl, "service", "web", "-n", ns) or {}
            current = {
                "rollout": get(kubectl, "rollout", "web", "-n", ns) is not None,
                "canary service": get(kubectl, "service", generated, "-n", ns) is not None,
                "deployment replicas": dep.get("spec", {}).get("replicas"),
                "deployment ready": dep.get("status", {}).get("readyReplicas"),
                "hpa target": hpa.get("spec", {}).get("scaleTargetRef", {}).get("kind"),
                "service hash": stable.get("spec", {}).get("selector", {}).get(HASH),
                # The Rollout's ReplicaSets, once orphaned, match the Deployment's selector and
                # its controller adopts them as old revisions (scaled to 0) before the
                # reconciler can delete them as orphans; either way none may keep pods.
                "rollout replicasets with pods": [
                    rs["metadata"]["name"]
                    for rs in replica_sets(kubectl, ns, "web")
                    if HASH in rs["metadata"]["labels"]
                    and (rs["spec"].get("replicas") or rs["status"].get("replicas"))
                ],
            }
            state[:] = [current]
            return current == {
                "rollout": False,
                "canary service": False,
                "deployment replicas": REPLICAS,
                "deployment ready": REPLICAS,
                "hpa target": "Deployment",
                "service hash": None,
                "rollout replicasets with pods": [],
            }

        try:
            eventually(plain_again, "the service back to a plain Deployment", timeout=90)
        except AssertionError as error:
            raise AssertionError(f"{error}; last seen {state}") from None

    assert min(sampler.values) > 0, f"a moment with no ready pod: {sampler.samples}"
    assert min(endpoints.values) > 0, (
        f"a moment when the Service had no ready endpoint: {endpoints.samples}"
    )
    dep = get(kubectl, "deployment", "web", "-n", ns)
    assert dep is not None
    left = [k for k in dep["metadata"].get("annotations", {}) if k.startswith(KEY)]
    assert left == [], f"conversion annotations left on the Deployment: {left}"
