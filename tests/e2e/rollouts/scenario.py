"""Helpers of the progressive-delivery scenarios: manifests, waiting, and a ready-pod sampler."""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from kubernetes import client

from tests import builders
from tests.e2e import harness

KEY = "rollout-webhook.io/"
# The webhook's warnings when it finds no Service for a Deployment's pods.
SERVICE_MISSING = ("no Service selects the pods", "needs a Service")
T = TypeVar("T")


def eventually(check: Callable[[], T | None], what: str, timeout: float = 60) -> T:
    """The first truthy result of `check`, polled twice a second; fails naming `what`."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = check()
        except harness.CommandFailed as error:
            result, last = None, error
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} ({last})")
        time.sleep(0.5)


def get(kubectl: harness.Tool, *args: str) -> dict[str, Any] | None:
    result = kubectl("get", *args, "-o", "json", check=False)
    if result.returncode != 0:
        return None
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def apply(kubectl: harness.Tool, *manifests: dict[str, Any]) -> None:
    """Apply the manifests; Deployments last, once the webhook sees the Services before them.

    The webhook decides from watch-fed caches. A Deployment admitted a few milliseconds after
    its Service can be planned without it ("no Service selects the pods"), and that plan
    may be written after the reconciler's better one: applied together, a test would depend
    on that race. A server-side dry run of each Deployment tells when the webhook's answer no
    longer lacks the Service.
    """
    first = [m for m in manifests if m["kind"] != "Deployment"]
    deployments = [m for m in manifests if m["kind"] == "Deployment"]
    if first:
        _apply_list(kubectl, first)
    if any(m["kind"] == "Service" for m in first):
        for manifest in deployments:
            name = manifest["metadata"]["name"]
            eventually(
                functools.partial(_webhook_sees_services, kubectl, manifest),
                f"the webhook to see the Services of Deployment {name}",
                timeout=20,
            )
    if deployments:
        _apply_list(kubectl, deployments)


def _apply_list(kubectl: harness.Tool, manifests: list[dict[str, Any]]) -> None:
    kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}),
    )


def _webhook_sees_services(kubectl: harness.Tool, manifest: dict[str, Any]) -> bool:
    answer = kubectl(
        "create", "--dry-run=server", "-o", "name", "-f", "-", input=json.dumps(manifest)
    )
    return not any(text in answer.stderr for text in SERVICE_MISSING)


def deployment(
    name: str,
    namespace: str,
    *,
    replicas: int,
    image: str = "example.invalid/web:1",
    environment: str | None = None,
    opted_in: bool = True,
) -> dict[str, Any]:
    labels = {"app": name}
    if opted_in:
        labels[f"{KEY}enabled"] = "true"
    if environment is not None:
        labels[f"{KEY}environment"] = environment
    return builders.deployment(
        name,
        namespace,
        labels=labels,
        replicas=replicas,
        strategy={"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        image=image,
        # kwok stops "containers" at once: no grace period to wait out.
        grace_period=0,
    )


def service(name: str, namespace: str) -> dict[str, Any]:
    return builders.service(name, namespace, ports=[{"port": 80, "targetPort": 8080}])


def ready_pods(core: client.CoreV1Api, namespace: str, selector: str) -> list[client.V1Pod]:
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    ready = []
    for pod in pods:
        if pod.metadata is None or pod.metadata.deletion_timestamp is not None:
            continue
        conditions = (pod.status.conditions if pod.status else None) or []
        if any(c.type == "Ready" and c.status == "True" for c in conditions):
            ready.append(pod)
    return ready


@dataclass
class Sampler(Generic[T]):
    """Calls `read` every `interval` seconds in a thread and keeps what it returns, and once
    more after the `with` block: a read can take longer than the block's last step, and the
    state that step waited for must be among the samples."""

    read: Callable[[], T]
    interval: float = 0.1
    samples: list[tuple[float, T]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler[T]:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        started = time.monotonic()
        while True:
            stopping = self._stop.is_set()
            value = self.read()
            self.samples.append((round(time.monotonic() - started, 2), value))
            if stopping:
                return
            self._stop.wait(self.interval)

    @property
    def values(self) -> list[T]:
        return [value for _, value in self.samples]


def ready_count(core: client.CoreV1Api, namespace: str, selector: str) -> Callable[[], int]:
    return lambda: len(ready_pods(core, namespace, selector))


def rollout_object(kube: client.ApiClient, name: str, namespace: str) -> dict[str, Any]:
    found = client.CustomObjectsApi(kube).get_namespaced_custom_object(
        "argoproj.io", "v1alpha1", namespace, "rollouts", name
    )
    assert isinstance(found, dict)
    return found


def _pause_state(kube: client.ApiClient, name: str, namespace: str) -> tuple[Any, ...]:
    status = rollout_object(kube, name, namespace).get("status") or {}
    return status.get("phase"), status.get("currentStepIndex"), status.get("controllerPause")


def _quiet(kube: client.ApiClient, name: str, namespace: str, seconds: float = 1.5) -> None:
    """Until the Rollout's resourceVersion has not moved for `seconds` (10 s at most)."""
    deadline = time.monotonic() + 10
    version, since = None, time.monotonic()
    while time.monotonic() < deadline:
        now = rollout_object(kube, name, namespace)["metadata"]["resourceVersion"]
        if now != version:
            version, since = now, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return
        time.sleep(0.25)


def promote(argo: harness.Tool, kube: client.ApiClient, name: str, namespace: str) -> None:
    """`kubectl argo rollouts promote` of a paused Rollout, checked by the controller acting
    on it (its phase, step or controllerPause moves).

    Argo Rollouts v1.9 can miss the watch event of the promote's status patch when it lands
    while the controller is still writing the Rollout it has just paused: the controller then
    reconciles its older copy, which is still paused, for good (argo-rollouts#4694; the
    write-back race of #4073). So the Rollout is promoted once it is quiet, and when the
    controller has not acted after 15 s, an annotation on the Rollout gives it a new watch
    event (printed, so a run shows how often it was needed). Neither changes what a promote
    does: the annotation means nothing to the controller or to the webhook.
    """
    _quiet(kube, name, namespace)
    paused = _pause_state(kube, name, namespace)
    argo("promote", name, "-n", namespace)
    for nudge in range(3):
        with contextlib.suppress(AssertionError):
            eventually(
                lambda: _pause_state(kube, name, namespace) != paused,
                f"the controller to act on the promote of Rollout {name}",
                timeout=15,
            )
            return
        print(f"promote of {namespace}/{name}: not acted on after 15 s, nudge {nudge + 1}")
        client.CustomObjectsApi(kube).patch_namespaced_custom_object(
            "argoproj.io", "v1alpha1", namespace, "rollouts", name,
            {"metadata": {"annotations": {"e2e.rollout-webhook.io/nudge": str(nudge + 1)}}},
        )  # fmt: skip
    raise AssertionError(f"Rollout {name}: the promote was never acted on ({paused})")


def rollout_phase(kubectl: harness.Tool, name: str, namespace: str) -> str | None:
    found = get(kubectl, "rollout", name, "-n", namespace)
    if found is None:
        return None
    status = found.get("status") or {}
    # A phase is only current once the controller has seen the latest spec.
    if status.get("observedGeneration") != str(found["metadata"]["generation"]):
        return None
    phase: str | None = status.get("phase")
    return phase


def replica_sets(kubectl: harness.Tool, namespace: str, app: str) -> list[dict[str, Any]]:
    found = get(kubectl, "replicasets", "-n", namespace, "-l", f"app={app}")
    return list(found["items"]) if found else []


def wait_healthy(kubectl: harness.Tool, name: str, namespace: str, timeout: float = 60) -> None:
    """Until the Rollout is Healthy, through a first moment of InvalidSpec.

    A Rollout and the Services it names are written within milliseconds; Argo may look at
    the Rollout before its informer has the Services, call it InvalidSpec ("service not
    found") and check again about 20 seconds later (argo-rollouts#754, fixed by #814).
    `kubectl argo rollouts status` gives up at once on that Degraded moment, so the first
    wait reads the phase instead.
    """
    eventually(
        lambda: rollout_phase(kubectl, name, namespace) == "Healthy",
        f"Rollout {name} Healthy",
        timeout,
    )
