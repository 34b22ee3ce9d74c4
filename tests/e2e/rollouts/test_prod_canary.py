"""Prod policy: an image change walks the canary steps; the seed's plugin commands drive it.

The seed's commands (`kubectl argo rollouts get rollout`, `status`, `promote`, `undo`) run
through the real kubectl and the built plugin. The test policy keeps the seed's weights
(10, 25, 50, 75) with one-second pauses, and a pause without a duration after 25% so that
`promote` has something to do. No traffic router runs here, so the canary's share is its
share of the pods (25% of 4 is one pod).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from kubernetes import client

from tests.e2e import harness
from tests.e2e.rollouts.scenario import (
    Sampler,
    apply,
    deployment,
    eventually,
    get,
    promote,
    ready_pods,
    replica_sets,
    rollout_object,
    service,
    wait_healthy,
)

REPLICAS = 4
V1 = "example.invalid/web:1"
V2 = "example.invalid/web:2"
MANUAL_PAUSE_STEP = 3  # steps: setWeight 10, pause 1s, setWeight 25, pause {} (index 3), ...
STEPS = 8


def _field(text: str, name: str) -> str:
    match = re.search(rf"^\s*{name}:\s+(.*)$", text, re.MULTILINE)
    assert match, f"no {name!r} line in:\n{text}"
    return match.group(1).strip()


def _step(rollout: dict[str, Any]) -> tuple[int | None, str | None]:
    status = rollout.get("status") or {}
    return status.get("currentStepIndex"), status.get("currentPodHash")


def _at_manual_pause(kube: client.ApiClient, argo: harness.Tool, ns: str) -> bool:
    # The one-second pauses are paused steps too: the step index tells the manual one apart.
    status = rollout_object(kube, "web", ns).get("status") or {}
    if status.get("currentStepIndex") != MANUAL_PAUSE_STEP:
        return False
    shown = argo("status", "web", "-n", ns, "--watch=false").stdout.strip()
    return shown == "Paused - CanaryPauseStep"


def _promote_fully(kube: client.ApiClient, argo: harness.Tool, ns: str) -> None:
    """`promote --full`, repeated if the plugin wrote nothing.

    The plugin sends its `status.promoteFull` patch only when it reads a Rollout whose
    currentPodHash differs from its stableRS (promote.go getPatches), and exits 0 either way
    (argo-rollouts#2648 reports a full promote that left a paused canary paused).
    Once, in a full CI run on a busy machine, the Rollout then stayed at the pause with no
    write at all (the controller's cache kept the same resourceVersion for 90 s), so the
    command is checked by its effect: promoteFull set, or the update finished.
    """
    attempts: list[dict[str, Any]] = []
    for _ in range(3):
        argo("promote", "web", "-n", ns, "--full")
        with contextlib.suppress(AssertionError):
            eventually(lambda: _fully_promoting(kube, ns), "promoteFull to be set", timeout=10)
            return
        attempts.append(rollout_object(kube, "web", ns).get("status") or {})
    raise AssertionError(f"`promote --full` had no effect three times; statuses: {attempts}")


def _fully_promoting(kube: client.ApiClient, ns: str) -> bool:
    status = rollout_object(kube, "web", ns).get("status") or {}
    finished = (
        status.get("currentPodHash") == status.get("stableRS")
        and status.get("currentStepIndex") == STEPS
    )
    return bool(status.get("promoteFull")) or finished


def _images_of_ready_pods(core: client.CoreV1Api, ns: str) -> set[str]:
    images: set[str] = set()
    for pod in ready_pods(core, ns, "app=web"):
        assert pod.spec is not None
        images.update(str(c.image) for c in pod.spec.containers)
    return images


def _replicas_of_hash(kubectl: harness.Tool, ns: str, pod_hash: str) -> int:
    for rs in replica_sets(kubectl, ns, "web"):
        if rs["metadata"]["labels"].get("rollouts-pod-template-hash") == pod_hash:
            return int(rs["status"].get("readyReplicas") or 0)
    return 0


def test_an_image_change_walks_the_canary_steps_with_promote_and_undo(
    kubectl: harness.Tool, argo: harness.Tool, kube: client.ApiClient, rollouts_namespace: str
) -> None:
    ns = rollouts_namespace
    core = client.CoreV1Api(kube)
    apply(kubectl, service("web", ns), deployment("web", ns, replicas=REPLICAS, image=V1))
    # The first revision has nothing to compare with: Argo makes it stable at once.
    wait_healthy(kubectl, "web", ns)
    first = get(kubectl, "deployment", "web", "-n", ns)
    assert first is not None
    assert first["spec"]["replicas"] == 0, "a converted Deployment is stored with 0 replicas"
    stable_hash = rollout_object(kube, "web", ns)["status"]["stableRS"]

    with Sampler(lambda: _step(rollout_object(kube, "web", ns)), interval=0.2) as steps:
        kubectl("set", "image", "deployment/web", f"app={V2}", "-n", ns)

        eventually(
            lambda: _at_manual_pause(kube, argo, ns),
            "the canary to stop at the pause without a duration",
        )
    walked = sorted(
        {index for index, pod_hash in steps.values if pod_hash != stable_hash and index is not None}
    )
    assert walked[-1] == MANUAL_PAUSE_STEP
    assert {1, 2} & set(walked), f"no step before the manual pause was seen: {steps.samples}"

    shown = argo("get", "rollout", "web", "-n", ns).stdout
    assert "Paused" in _field(shown, "Status")
    assert _field(shown, "Step") == f"{MANUAL_PAUSE_STEP}/{STEPS}"
    assert _field(shown, "SetWeight") == "25"
    assert _field(shown, "ActualWeight") == "25"
    canary_hash = rollout_object(kube, "web", ns)["status"]["currentPodHash"]
    assert _replicas_of_hash(kubectl, ns, canary_hash) == 1
    assert _images_of_ready_pods(core, ns) == {V1, V2}

    promote(argo, kube, "web", ns)
    status = argo("status", "web", "-n", ns, "--timeout", "90s", timeout=120)
    assert status.stdout.strip().endswith("Healthy"), status.stdout
    eventually(lambda: _images_of_ready_pods(core, ns) == {V2}, "only the new version's pods")
    assert rollout_object(kube, "web", ns)["status"]["stableRS"] == canary_hash

    # Undo with a workloadRef puts the previous template back into the Deployment
    # (argo-rollouts#1254, fixed by #1275): a Deployment update that the webhook admits.
    argo("undo", "web", "-n", ns)
    reverted = eventually(
        lambda: (
            (d := get(kubectl, "deployment", "web", "-n", ns))
            and d["spec"]["template"]["spec"]["containers"][0]["image"] == V1
            and d
        ),
        "the Deployment's template back at the first image",
    )
    assert reverted["spec"]["replicas"] == 0, "undo must not bring the Deployment's pods back"
    # Without spec.rollbackWindow an undo is an update like any other: the steps run again
    # (rollout/sync.go isRollbackWithinWindow), so it stops at the manual pause; promote --full
    # skips the remaining steps.
    eventually(
        lambda: _at_manual_pause(kube, argo, ns), "the undone revision to stop at the manual pause"
    )
    _promote_fully(kube, argo, ns)
    status = argo("status", "web", "-n", ns, "--timeout", "90s", timeout=120)
    assert status.stdout.strip().endswith("Healthy"), status.stdout
    eventually(lambda: _images_of_ready_pods(core, ns) == {V1}, "only the first version's pods")


def _pinned_to(kubectl: harness.Tool, ns: str, name: str) -> str | None:
    selector = (get(kubectl, "service", name, "-n", ns) or {})["spec"]["selector"]
    pinned: str | None = selector.get("rollouts-pod-template-hash")
    return pinned


def test_an_image_change_keeps_the_rollouts_services(
    kubectl: harness.Tool, argo: harness.Tool, kube: client.ApiClient, rollouts_namespace: str
) -> None:
    """Without a traffic router the Rollout names the canary Service only: Argo pins that one
    to the canary's pods and leaves the service's own Service selecting every pod (the split
    by replica count). A later update keeps it so."""
    ns = rollouts_namespace
    apply(kubectl, service("web", ns), deployment("web", ns, replicas=2, image=V1))
    wait_healthy(kubectl, "web", ns)
    canary = rollout_object(kube, "web", ns)["spec"]["strategy"]["canary"]
    assert "stableService" not in canary and canary["canaryService"] == "web-canary"
    stable_hash = rollout_object(kube, "web", ns)["status"]["stableRS"]
    eventually(
        lambda: _pinned_to(kubectl, ns, "web-canary") == stable_hash,
        "Argo to pin the canary Service (to the stable pods while nothing rolls out)",
    )
    assert _pinned_to(kubectl, ns, "web") is None
    generation = rollout_object(kube, "web", ns)["metadata"]["generation"]

    kubectl("set", "image", "deployment/web", f"app={V2}", "-n", ns)
    # The webhook re-applies the Rollout after admitting the update; wait for that write (a
    # correct product may also leave the spec alone, then the wait just runs out).
    with contextlib.suppress(AssertionError):
        eventually(
            lambda: rollout_object(kube, "web", ns)["metadata"]["generation"] > generation,
            "the webhook's write of the Rollout",
            timeout=10,
        )
    canary = rollout_object(kube, "web", ns)["spec"]["strategy"]["canary"]
    assert "stableService" not in canary, canary
    assert canary.get("canaryService") == "web-canary", canary
    assert _pinned_to(kubectl, ns, "web") is None
