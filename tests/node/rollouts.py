"""What the node tier's canary tests share: a canary policy, reading a service's Rollout, and
the Argo Rollouts kubectl plugin.

Every test service is called `web`, one to a namespace.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e import harness
from tests.node import cluster
from tests.node.workloads import get

ENABLED = "rollout-webhook.io/enabled"


def policy_pausing_at(weights: tuple[int, ...], traffic_routing: str) -> dict[str, Any]:
    """A policy whose prod canary pauses at each weight until promoted."""
    steps: list[dict[str, Any]] = []
    for weight in weights:
        steps += [{"setWeight": weight}, {"pause": {}}]
    return {
        "defaultEnvironment": "prod",
        "rolloutUpdates": "nextChange",
        "environments": {
            "prod": {
                "scaleDown": "onsuccess",
                "trafficRouting": traffic_routing,
                "rollout": {"enabled": True, "strategy": "canary", "canary": {"steps": steps}},
            }
        },
    }


def dry_run(kubectl: harness.Tool, manifest: dict[str, Any]) -> str:
    """The warnings the webhook gives for `manifest`, applied as a server-side dry run."""
    result = kubectl(
        "apply", "--dry-run=server", "-f", "-", "-o", "json", input=json.dumps(manifest)
    )
    return result.stderr


def sees_service(warnings: str) -> bool:
    # No "no Service selects the pods" warning: the Service is in the webhook's cache.
    return "no Service" not in warnings


def rollout(kubectl: harness.Tool, namespace: str) -> dict[str, Any]:
    found: dict[str, Any] = get(kubectl, "rollout", "web", "-n", namespace)
    return found


def phase(kubectl: harness.Tool, namespace: str) -> str:
    found: str = rollout(kubectl, namespace).get("status", {}).get("phase", "")
    return found


def kubectl_argo(node_cluster: cluster.NodeCluster, *args: str) -> str:
    """`kubectl argo rollouts ARGS` as the tier's administrator."""
    tool = harness.Tool(
        node_cluster.binaries.argo_plugin,
        {"KUBECONFIG": str(node_cluster.kubeconfig)},
    )
    return tool(*args).stdout


def paused_at(kubectl: harness.Tool, namespace: str, weight: int) -> bool:
    """Paused at `weight` with every pod of both versions ready."""
    found = rollout(kubectl, namespace)
    status = found.get("status", {})
    steps = found["spec"]["strategy"]["canary"]["steps"]
    index = status.get("currentStepIndex", 0)
    at_pause = index > 0 and steps[index - 1].get("setWeight") == weight
    paused = status.get("phase") == "Paused"
    ready = status.get("readyReplicas", 0) == status.get("replicas", -1)
    return bool(at_pause and paused and ready)


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """A line in the test output, captured or not: the figures a run is read for."""
    with capsys.disabled():
        print(f"\n{line}")
