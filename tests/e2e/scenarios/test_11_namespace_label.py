"""A Namespace label opts its Deployments in and out, within the documented bounds.

A Namespace change is no Deployment request: the webhook never sees it, the reconciler
does (a Namespace event queues every Deployment of the namespace). No Deployment controller
and no garbage collector run here: the test writes the Deployment's status and finishes the
orphaning delete of each Rollout itself (support.py).
"""

from __future__ import annotations

import time

from tests.e2e import harness
from tests.e2e.scenarios.support import (
    BOUND_1,
    ENABLED,
    Webhook,
    apply,
    bound_n,
    converted,
    deployment,
    eventually,
    finish_orphaning_delete,
    get,
    opting_out,
    plain,
    pods_available,
    reconcile_failures,
    service,
)

NAMES = ("web", "api", "worker")


def test_the_namespace_label_converts_and_releases_its_deployments_within_the_bounds(
    webhook: Webhook, team: str, kubectl: harness.Tool
) -> None:
    apply(
        kubectl,
        *(service(name, team) for name in NAMES),
        *(deployment(name, team, enabled=None, replicas=3) for name in NAMES),
        deployment("keep", team, enabled="false"),
    )
    failures = len(reconcile_failures(webhook))

    started = time.monotonic()
    kubectl("label", "namespace", team, f"{ENABLED}=true")
    for name in NAMES:
        eventually(
            lambda name=name: converted(kubectl, name, team),  # type: ignore[misc]
            f"{name} converted by the reconciler",
            webhook,
            timeout=bound_n(len(NAMES)) - (time.monotonic() - started),
        )
    print(f"namespace label on: {len(NAMES)} converted after {time.monotonic() - started:.1f}s")
    assert get(kubectl, "rollout", "keep", team) is None  # "false" on the Deployment wins

    started = time.monotonic()
    kubectl("label", "namespace", team, f"{ENABLED}-")
    for name in NAMES:
        eventually(
            lambda name=name: opting_out(kubectl, name, team, 3),  # type: ignore[misc]
            f"step 1 of {name}'s opt-out",
            webhook,
            timeout=bound_n(len(NAMES)) - (time.monotonic() - started),
        )
    print(f"namespace label off: step 1 for all after {time.monotonic() - started:.1f}s")

    for name in NAMES:
        pods_available(kubectl, name, team)
    started = time.monotonic()

    def all_plain() -> bool:
        for name in NAMES:
            finish_orphaning_delete(kubectl, name, team)  # the garbage collector's part
        return all(plain(kubectl, name, team) is not None for name in NAMES)

    eventually(all_plain, "every Deployment plain again", webhook, timeout=3 * BOUND_1)
    print(f"namespace label off: plain after {time.monotonic() - started:.1f}s")
    for name in NAMES:
        stored = plain(kubectl, name, team)
        assert stored is not None and stored["spec"]["replicas"] == 3
    assert len(reconcile_failures(webhook)) == failures
