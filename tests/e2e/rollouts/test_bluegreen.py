"""Blue-green with autoPromotionEnabled: false waits for `promote`, then switches the active Service."""

from __future__ import annotations

from kubernetes import client

from tests.e2e import harness
from tests.e2e.rollouts.scenario import (
    apply,
    deployment,
    eventually,
    get,
    promote,
    ready_pods,
    rollout_object,
    service,
    wait_healthy,
)

REPLICAS = 2
HASH = "rollouts-pod-template-hash"


def _selector_hash(kubectl: harness.Tool, name: str, ns: str) -> str | None:
    found = get(kubectl, "service", name, "-n", ns)
    assert found is not None, f"no Service {name}"
    selector: dict[str, str] = found["spec"].get("selector") or {}
    return selector.get(HASH)


def test_manual_promotion_switches_the_active_service(
    kubectl: harness.Tool, argo: harness.Tool, kube: client.ApiClient, rollouts_namespace: str
) -> None:
    ns = rollouts_namespace
    core = client.CoreV1Api(kube)
    apply(
        kubectl,
        service("web", ns),
        deployment("web", ns, replicas=REPLICAS, environment="bluegreen"),
    )
    wait_healthy(kubectl, "web", ns)
    rollout = rollout_object(kube, "web", ns)
    assert rollout["spec"]["strategy"]["blueGreen"]["activeService"] == "web"
    assert rollout["spec"]["strategy"]["blueGreen"]["previewService"] == "web-preview"
    blue = rollout["status"]["stableRS"]
    eventually(lambda: _selector_hash(kubectl, "web", ns) == blue, "the active Service on blue")

    kubectl("set", "image", "deployment/web", "app=example.invalid/web:2", "-n", ns)

    def waiting_for_promotion() -> str | None:
        status = rollout_object(kube, "web", ns).get("status") or {}
        green = status.get("currentPodHash")
        if green in (None, blue) or not status.get("pauseConditions"):
            return None
        shown = argo("status", "web", "-n", ns, "--watch=false").stdout.strip()
        return green if shown == "Paused - BlueGreenPause" else None

    green = eventually(waiting_for_promotion, "the new version to wait for promotion")
    eventually(
        lambda: len(ready_pods(core, ns, f"app=web,{HASH}={green}")) == REPLICAS,
        "the preview pods ready",
    )
    assert _selector_hash(kubectl, "web-preview", ns) == green
    # Nothing promotes it by itself: the active Service stays on blue while it waits.
    assert _selector_hash(kubectl, "web", ns) == blue
    assert rollout_object(kube, "web", ns)["status"]["stableRS"] == blue

    promote(argo, kube, "web", ns)
    eventually(lambda: _selector_hash(kubectl, "web", ns) == green, "the active Service on green")
    status = argo("status", "web", "-n", ns, "--timeout", "90s", timeout=120)
    assert status.stdout.strip().endswith("Healthy"), status.stdout
    assert rollout_object(kube, "web", ns)["status"]["stableRS"] == green
    # The old pods go after scaleDownDelaySeconds (5 in the test policy).
    eventually(
        lambda: not ready_pods(core, ns, f"app=web,{HASH}={blue}"), "the blue pods scaled down", 60
    )


def test_an_update_of_a_converted_blue_green_service_is_not_refused(
    kubectl: harness.Tool, argo: harness.Tool, kube: client.ApiClient, rollouts_namespace: str
) -> None:
    ns = rollouts_namespace
    apply(kubectl, service("web", ns), deployment("web", ns, replicas=1, environment="bluegreen"))
    wait_healthy(kubectl, "web", ns)
    blue = rollout_object(kube, "web", ns)["status"]["stableRS"]
    eventually(lambda: _selector_hash(kubectl, "web", ns) == blue, "the active Service on blue")

    result = kubectl("set", "image", "deployment/web", "app=example.invalid/web:2", "-n", ns)
    assert "needs a Service" not in result.stderr, result.stderr
