"""The node tier's sample application as Kubernetes objects (built with tests/builders.py)."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from tests import builders
from tests.e2e import harness

SAMPLE_IMAGE = "localhost/rollout-webhook-node/sample"


def sample_deployment(
    name: str, namespace: str, version: str, replicas: int, **kw: Any
) -> dict[str, Any]:
    """The sample application, ready through /healthz, serving until kube-proxy has dropped
    its endpoint (a preStop sleep: without it a rollout loses a few requests)."""
    manifest = builders.deployment(
        name, namespace, replicas=replicas, image=f"{SAMPLE_IMAGE}:{version}", **kw
    )
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    container.update(
        {
            "imagePullPolicy": "Never",
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
            "lifecycle": {"preStop": {"sleep": {"seconds": 3}}},
            "resources": {
                "requests": {"cpu": "10m", "memory": "24Mi"},
                "limits": {"memory": "64Mi"},
            },
        }
    )
    manifest["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 10
    return manifest


def sample_service(name: str, namespace: str) -> dict[str, Any]:
    return builders.service(
        name, namespace, ports=[{"name": "http", "port": 80, "targetPort": 8080}]
    )


def apply(kubectl: harness.Tool, *manifests: dict[str, Any]) -> None:
    for manifest in manifests:
        kubectl("apply", "-f", "-", input=json.dumps(manifest))


def get(kubectl: harness.Tool, *args: str) -> Any:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def ask(url: str, timeout: float = 2.0) -> dict[str, str]:
    """One GET of the sample application: {"version": ..., "pod": ...}."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        answer: dict[str, str] = json.loads(response.read())
        return answer


def wait_for(check: Any, what: str, timeout: float = 120.0, interval: float = 0.5) -> Any:
    """Poll `check()` until it returns something truthy (returned); fail naming `what`."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except (OSError, harness.CommandFailed, KeyError, ValueError) as error:
            result, last = None, error
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"{what}: not reached in {timeout:.0f} s (last error: {last})")
