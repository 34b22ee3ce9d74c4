"""One service opts out by its override annotation, and back in, within the documented bounds.

`rollout-webhook.io/rollout: "enabled: false"` on a converted Deployment (the built-in
policy allows service overrides) runs the opt-out sequence of docs/reconciler.md; removing
it converts the service again at admission. No Deployment controller and no garbage
collector run here: the test writes the Deployment's status and finishes the orphaning
delete of the Rollout itself (support.py).
"""

from __future__ import annotations

import time

from tests.e2e import harness
from tests.e2e.scenarios.support import (
    BOUND_1,
    PREFIX,
    Webhook,
    apply,
    converted,
    deployment,
    eventually,
    finish_orphaning_delete,
    opting_out,
    plain,
    pods_available,
    reconcile_failures,
    service,
)

OVERRIDE = f"{PREFIX}rollout"


def test_override_enabled_false_opts_out_and_removing_it_converts_again(
    webhook: Webhook, team: str, kubectl: harness.Tool
) -> None:
    apply(kubectl, service("web", team), deployment("web", team, replicas=3))
    eventually(lambda: converted(kubectl, "web", team), "web converted", webhook)

    started = time.monotonic()
    kubectl("annotate", "deployment", "web", "-n", team, f"{OVERRIDE}=enabled: false")
    eventually(
        lambda: opting_out(kubectl, "web", team, 3),
        "step 1 of the opt-out: the Deployment's 3 replicas back, the Rollout scales nothing",
        webhook,
        timeout=BOUND_1,
    )
    print(f"override: step 1 after {time.monotonic() - started:.1f}s")

    started = time.monotonic()
    pods_available(kubectl, "web", team)

    def gone() -> bool:
        finish_orphaning_delete(kubectl, "web", team)  # the garbage collector's part
        return plain(kubectl, "web", team) is not None

    eventually(gone, "web a plain Deployment again", webhook, timeout=2 * BOUND_1)
    print(f"override: plain after {time.monotonic() - started:.1f}s")
    stored = plain(kubectl, "web", team)
    assert stored is not None and stored["spec"]["replicas"] == 3
    assert stored["metadata"]["annotations"][OVERRIDE] == "enabled: false"
    assert reconcile_failures(webhook) == []

    # Back in: admission converts the running Deployment (it keeps its pods; Argo Rollouts
    # scales it down as scaleDown says) and writes the Rollout.
    started = time.monotonic()
    kubectl("annotate", "deployment", "web", "-n", team, f"{OVERRIDE}-")
    eventually(
        lambda: converted(kubectl, "web", team),
        "web converted again",
        webhook,
        timeout=BOUND_1,
    )
    print(f"override removed: converted after {time.monotonic() - started:.1f}s")
    assert reconcile_failures(webhook) == []
