"""Leaving progressive delivery, and losing the Deployment (issues 7 and 5).

No kube-controller-manager runs: no pod ever becomes available, and a Deployment's status
is written by nobody. The opt-out test writes the status subresource itself (as the
Deployment controller would once the pods are up), so the order can be checked: the
Deployment's replicas and the HPA's target come back while the Rollout still exists, and
the Rollout goes only once the Deployment reports its pods available. Nor is there a
garbage collector: a Rollout whose Deployment is deleted is removed by the reconciler's
orphan clean-up (a 5 s grace here, see conftest.py).
"""

from __future__ import annotations

import json

from tests.e2e import harness
from tests.e2e.scenarios.support import (
    ENABLED,
    PREFIX,
    Manifest,
    Webhook,
    annotations_of,
    apply,
    audit_records,
    converted,
    deployment,
    eventually,
    get,
    holds,
    hpa,
    scale_target,
    service,
)


def test_opt_out_restores_replicas_and_hpa_then_removes_the_rollout(
    webhook: Webhook, team: str, kubectl: harness.Tool
) -> None:
    apply(kubectl, service("web", team), hpa("web", team, "web", low=2, high=5))
    apply(kubectl, deployment("web", team, replicas=3))
    eventually(lambda: converted(kubectl, "web", team), "web converted", webhook)
    eventually(
        lambda: scale_target(get(kubectl, "hpa", "web", team)) == ("Rollout", "web"),
        "the HPA to target the Rollout",
        webhook,
    )
    stored = get(kubectl, "deployment", "web", team)
    assert stored is not None and stored["spec"]["replicas"] == 0

    kubectl("label", "deployment", "web", "-n", team, f"{ENABLED}=false", "--overwrite")

    def restored() -> Manifest | None:
        found = get(kubectl, "deployment", "web", team)
        back = scale_target(get(kubectl, "hpa", "web", team)) == ("Deployment", "web")
        return found if back and found and found["spec"]["replicas"] == 3 else None

    deployment_back = eventually(restored, "the Deployment's replicas and HPA back", webhook)
    # Restored first: the Rollout is still there, told to leave the Deployment's pods alone.
    rollout = get(kubectl, "rollout", "web", team)
    assert rollout is not None
    assert rollout["spec"]["workloadRef"].get("scaleDown") == "never"

    # And it stays while the Deployment reports no pods available (the reconciler looks
    # again every 2 s).
    def rollout_alive() -> bool:
        found = get(kubectl, "rollout", "web", team)
        return found is not None and not found["metadata"].get("deletionTimestamp")

    holds(rollout_alive, "the Rollout stays while no pod of the Deployment is available", 5)

    # What the Deployment controller would write once the 3 pods are up.
    status = {
        "observedGeneration": deployment_back["metadata"]["generation"],
        "replicas": 3,
        "updatedReplicas": 3,
        "readyReplicas": 3,
        "availableReplicas": 3,
    }
    kubectl(
        "patch", "deployment", "web", "-n", team, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip

    def rollout_deleted() -> Manifest | None:
        found = get(kubectl, "rollout", "web", team)
        if found is None:
            return {"gone": True}
        return found if found["metadata"].get("deletionTimestamp") else None

    def rollout_deletes() -> int:
        return sum(
            1
            for r in audit_records(webhook.audit_file)
            if r["operation"] == "RECONCILE" and (r["namespace"], r["name"]) == (team, "web")
            for c in r["changes"]["made"]
            if (c["action"], c["kind"]) == ("delete", "Rollout")
        )

    deleted = eventually(
        rollout_deleted, "the Rollout to be deleted once the Deployment serves", webhook
    )
    if "gone" not in deleted:
        # Deleted with its dependents orphaned (its ReplicaSets keep serving): the API
        # server left the orphan finalizer for the garbage collector, which does not run
        # here. Do its part, as the status above did the Deployment controller's.
        assert deleted["metadata"]["finalizers"] == ["orphan"]
        # Meanwhile the reconciler waits (it looks again every 2 s) instead of deleting again.
        holds(lambda: rollout_deletes() == 1, "one delete of the Rollout", 3)
        kubectl(
            "patch", "rollout", "web", "-n", team, "--type=merge",
            "-p", json.dumps({"metadata": {"finalizers": None}}),
        )  # fmt: skip
    eventually(
        lambda: get(kubectl, "rollout", "web", team) is None, "the Rollout to be gone", webhook
    )
    eventually(
        lambda: get(kubectl, "service", "web-canary", team) is None,
        "the canary Service to go",
        webhook,
    )
    plain = eventually(
        lambda: (
            found
            if f"{PREFIX}rollout-name"
            not in annotations_of(found := get(kubectl, "deployment", "web", team))
            else None
        ),
        "the Deployment to lose the conversion's annotations",
        webhook,
    )
    assert plain is not None and plain["spec"]["replicas"] == 3
    assert scale_target(get(kubectl, "hpa", "web", team)) == ("Deployment", "web")

    # The reconciler's own records say the same order.
    changes = [
        (c["action"], c["kind"])
        for r in audit_records(webhook.audit_file)
        if r["operation"] == "RECONCILE" and r["namespace"] == team and r["name"] == "web"
        for c in r["changes"]["made"]
        if c["result"] == "applied"
    ]
    deleted_at = changes.index(("delete", "Rollout"))
    assert ("patch", "Deployment") in changes[:deleted_at]
    assert ("apply", "HorizontalPodAutoscaler") in changes[:deleted_at]


def test_deleting_a_deployment_removes_its_rollout(
    webhook: Webhook, team: str, kubectl: harness.Tool
) -> None:
    apply(kubectl, service("gone", team), deployment("gone", team))
    eventually(lambda: converted(kubectl, "gone", team), "gone converted", webhook)
    eventually(lambda: get(kubectl, "service", "gone-canary", team), "gone-canary", webhook)

    kubectl("delete", "deployment", "gone", "-n", team)
    eventually(
        lambda: get(kubectl, "rollout", "gone", team) is None,
        "the reconciler to delete the orphaned Rollout",
        webhook,
    )
    eventually(
        lambda: get(kubectl, "service", "gone-canary", team) is None,
        "the reconciler to delete the orphaned canary Service",
        webhook,
    )
    assert get(kubectl, "service", "gone", team) is not None  # the team's own Service stays
