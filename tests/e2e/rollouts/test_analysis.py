"""A failing analysis step aborts the canary and sends everything back to the stable version.

The AnalysisTemplate's `web` provider asks a stub on 127.0.0.1 that answers a failing value.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes import client

from tests.e2e import harness
from tests.e2e.rollouts.scenario import (
    apply,
    deployment,
    eventually,
    get,
    ready_pods,
    replica_sets,
    rollout_object,
    service,
    wait_healthy,
)

REPLICAS = 4
HASH = "rollouts-pod-template-hash"


class _Unhealthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"healthy": False}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.hits += 1  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: object) -> None:
        del format, args  # quiet: the test reads the hit count instead


@pytest.fixture
def health_stub() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Unhealthy)
    server.hits = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _template(ns: str, url: str) -> dict[str, object]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "e2e-health", "namespace": ns},
        "spec": {
            "metrics": [
                {
                    "name": "healthy",
                    "provider": {"web": {"url": url, "jsonPath": "{$.healthy}"}},
                    "successCondition": "result == true",
                    "failureLimit": 0,
                    "count": 1,
                }
            ]
        },
    }


def test_a_failing_analysis_aborts_and_traffic_returns_to_stable(
    kubectl: harness.Tool,
    argo: harness.Tool,
    kube: client.ApiClient,
    rollouts_namespace: str,
    health_stub: ThreadingHTTPServer,
) -> None:
    ns = rollouts_namespace
    core = client.CoreV1Api(kube)
    url = f"http://127.0.0.1:{health_stub.server_address[1]}/health"
    apply(
        kubectl,
        _template(ns, url),
        service("web", ns),
        deployment("web", ns, replicas=REPLICAS, environment="analysis"),
    )
    wait_healthy(kubectl, "web", ns)
    stable = rollout_object(kube, "web", ns)["status"]["stableRS"]

    kubectl("set", "image", "deployment/web", "app=example.invalid/web:2", "-n", ns)

    def aborted() -> dict[str, object] | None:
        rollout = rollout_object(kube, "web", ns)
        status = rollout.get("status") or {}
        return rollout if status.get("abort") and status.get("phase") == "Degraded" else None

    rollout = eventually(aborted, "the rollout to abort on the failed analysis")
    assert health_stub.hits >= 1, "the analysis never asked the stub"  # type: ignore[attr-defined]
    runs = get(kubectl, "analysisruns", "-n", ns)
    assert runs is not None
    phases = [run["status"]["phase"] for run in runs["items"]]
    assert phases == ["Failed"], phases
    canary = rollout["status"]["currentPodHash"]  # type: ignore[index]
    assert canary != stable

    # `status` reports the degraded rollout and fails, as the seed's troubleshooting expects.
    shown = argo("status", "web", "-n", ns, "--watch=false", check=False)
    assert shown.stdout.strip() == "Degraded", shown.stdout

    # The canary Service selects the stable pods again; the service's own Service, which Argo
    # never pins without a traffic router, is left with the stable pods alone.
    seen: list[object] = []

    def back_on_stable() -> bool:
        state = {
            "canary pods": len(ready_pods(core, ns, f"app=web,{HASH}={canary}")),
            "stable pods": len(ready_pods(core, ns, f"app=web,{HASH}={stable}")),
            **{
                name: (get(kubectl, "service", name, "-n", ns) or {})
                .get("spec", {})
                .get("selector", {})
                .get(HASH)
                for name in ("web", "web-canary")
            },
        }
        seen[:] = [state]
        return bool(
            state["canary pods"] == 0
            and state["stable pods"] == REPLICAS
            and state["web"] is None
            and state["web-canary"] == stable
        )

    try:
        eventually(back_on_stable, f"the canary gone and no Service on the canary {canary}")
    except AssertionError as error:
        raise AssertionError(f"{error}; last seen {seen}") from None
    scaled = {
        rs["metadata"]["labels"][HASH]: rs["spec"]["replicas"]
        for rs in replica_sets(kubectl, ns, "web")
        if HASH in rs["metadata"]["labels"]  # not the Deployment's own, kept at 0
    }
    assert scaled == {stable: REPLICAS, canary: 0}, scaled
