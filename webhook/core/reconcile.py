"""The reconciler's decisions: what to do for one service, given what the caches show.

Admission alone cannot guarantee the result: the webhook may have been down
(failurePolicy Ignore), a later admission step may have rejected the object it saw,
a service may opt out, an admin may change the policy. For one Deployment key
(namespace, name) ``plan_reconcile`` compares the cluster with the policy and returns
the actions that close the gap, in order, plus when to look again. It is pure: the
clock is an argument, and the actions are data the shell carries out.

Opt-out is a sequence across several passes, in the order that keeps the service up:
``webhook.core.optout`` holds it, and this planner asks it for the step that is due.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from webhook.core.actions import Apply, ClusterAction, Delete, Emit, Patch
from webhook.core.convert import Conversion, Neighbours, plan_conversion
from webhook.core.hpa import hpas_for
from webhook.core.keys import DEFAULT_KEYS, Keys
from webhook.core.objects import (
    Obj,
    annotations_of,
    is_generated,
    labels_of,
    meta,
    name_of,
    spec_of,
)
from webhook.core.optout import next_opt_out_step
from webhook.core.policy import Policy
from webhook.core.selection import resolve_opt_in

ORPHAN_GRACE = timedelta(seconds=60)
"""How long a generated Rollout may exist before its Deployment does (admission writes the
Rollout moments before the API server stores the Deployment). The default of
``plan_reconcile``'s ``orphan_grace`` (serve's ``orphan_grace_seconds``)."""

ARGOCD_IGNORE_REPLICAS = (
    "ignoreDifferences: [{group: apps, kind: Deployment, jsonPointers: [/spec/replicas]}]"
)
"""The Argo CD Application setting that stops syncs fighting over a converted
Deployment's replicas (docs/gitops.md)."""


@dataclass(frozen=True)
class ReconcilePlan:
    """For one service: the actions that close the gap, in order, and when to look again."""

    namespace: str
    name: str
    state: str  # one word for logs and metrics: converted, converting, opting-out, ...
    summary: str
    actions: tuple[ClusterAction, ...] = ()
    requeue_after: float | None = None
    conversion: Conversion | None = field(default=None, compare=False)

    @property
    def writes(self) -> tuple[ClusterAction, ...]:
        return tuple(a for a in self.actions if not isinstance(a, Emit))


def contains(desired: Any, actual: Any) -> bool:
    """Whether ``actual`` already holds everything ``desired`` says (extra keys allowed).

    Other controllers add to what the product writes (Argo adds a selector key to the
    Services, the API server defaults fields); that is not drift.
    """
    if isinstance(desired, Mapping):
        return isinstance(actual, Mapping) and all(
            k in actual and contains(v, actual[k]) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(desired) == len(actual)
            and all(contains(d, a) for d, a in zip(desired, actual, strict=True))
        )
    return bool(desired == actual)


def _drift(desired: Obj, actual: Mapping[str, Any] | None) -> bool:
    if actual is None:
        return True
    want = {k: v for k, v in desired.items() if k in ("spec",)}
    want["metadata"] = {
        k: v for k, v in desired.get("metadata", {}).items() if k in ("labels", "annotations")
    }
    if "ownerReferences" in desired.get("metadata", {}):
        want["metadata"]["ownerReferences"] = desired["metadata"]["ownerReferences"]
    return not contains(want, actual)


def _find(objs: tuple[Mapping[str, Any], ...], name: str) -> Mapping[str, Any] | None:
    return next((o for o in objs if name_of(o) == name), None)


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _generated_for(neighbours: Neighbours, name: str, keys: Keys) -> list[Mapping[str, Any]]:
    return [
        o
        for o in (*neighbours.rollouts, *neighbours.services)
        if is_generated(o, keys) and labels_of(o).get(keys.generated_for) == name
    ]


def _orphans(
    namespace: str,
    name: str,
    neighbours: Neighbours,
    now: datetime,
    keys: Keys,
    grace: timedelta,
) -> ReconcilePlan:
    generated = _generated_for(neighbours, name, keys)
    if not generated:
        return ReconcilePlan(namespace, name, "absent", "no Deployment, nothing generated")
    waits: list[float] = []
    actions: list[ClusterAction] = []
    for obj in generated:
        created = _parse_time(meta(obj).get("creationTimestamp"))
        age = now - created if created is not None else grace
        if age < grace:
            waits.append((grace - age).total_seconds())
            continue
        actions.append(
            Delete(str(obj["kind"]), namespace, name_of(obj), f"Deployment {name} does not exist")
        )
    return ReconcilePlan(
        namespace,
        name,
        "orphaned",
        f"{len(generated)} generated object(s) without their Deployment",
        tuple(actions),
        requeue_after=max(waits) + 1 if waits else None,
    )


REVISION_ANNOTATION = "rollout.argoproj.io/revision"
"""Argo Rollouts' revision counter on the Rollout: 1 until the pod template first changes."""


def _argo_drained(rollout: Mapping[str, Any]) -> bool:
    """Whether Argo's own scale-down of the Deployment is over: it happens only at the
    Rollout's first revision, until it is Healthy (argo-rollouts#4935, #4681), so a
    Deployment scaled up later (a GitOps sync, a `kubectl scale` that got past the webhook)
    keeps its pods beside the Rollout's for good."""
    revision = annotations_of(rollout).get(REVISION_ANNOTATION, "")
    later = revision.isdigit() and int(revision) > 1
    return (rollout.get("status") or {}).get("phase") == "Healthy" or later


def _gitops_drain(
    deployment: Mapping[str, Any],
    rollout: Mapping[str, Any] | None,
    conversion: Conversion,
    policy: Policy,
    keys: Keys,
    scaled_by_hpa: bool = False,
) -> list[ClusterAction]:
    """argo-rollouts#4935: a GitOps sync (or a scale admitted while the webhook was down)
    puts replicas back on a scaled-down Deployment, and Argo does not scale it down again:
    capacity doubles for good. Drain it again, and give the count to the Rollout (unless an
    HPA sizes it): the Rollout's size is the service's, so it must carry the new count
    before the Deployment's annotation mirrors it."""
    env = policy.environment(conversion.environment or "")
    if env is None or env.scale_down == "never" or rollout is None:
        return []
    if keys.rollout_name not in annotations_of(deployment):
        return []  # a Deployment converted while running: Argo scales it down itself.
    status = rollout.get("status") or {}
    replicas = spec_of(deployment).get("replicas")
    ready = int(status.get("availableReplicas") or 0) >= int(spec_of(rollout).get("replicas") or 0)
    if not _argo_drained(rollout) or not ready or not isinstance(replicas, int):
        return []
    if replicas == 0:
        return []
    name = name_of(deployment)
    resized: list[ClusterAction] = []
    if conversion.rollout is not None and not scaled_by_hpa:
        sized = {**conversion.rollout, "spec": {**conversion.rollout["spec"], "replicas": replicas}}
        resized.append(Apply(sized, f"Rollout {name} runs the {replicas} replicas asked for"))
    # The Rollout first: should the drain then fail, the count asked for is not lost.
    return [
        *resized,
        Patch(
            "Deployment",
            str(meta(deployment).get("namespace", "")),
            name,
            {
                "metadata": {"annotations": {keys.original_replicas: str(replicas)}},
                "spec": {"replicas": 0},
            },
            "scaled back up while the Rollout runs the pods (a GitOps sync?)",
        ),
        Emit(
            "ReplicasDrained",
            f"spec.replicas was set to {replicas} while Rollout {name} runs the pods; set it "
            f"back to 0 and gave {replicas} to the Rollout. "
            f"With Argo CD add {ARGOCD_IGNORE_REPLICAS}",
            "Warning",
        ),
    ]


def _converge(
    deployment: Mapping[str, Any],
    neighbours: Neighbours,
    policy: Policy,
    keys: Keys,
) -> ReconcilePlan:
    namespace = str(meta(deployment).get("namespace", ""))
    name = name_of(deployment)
    conversion = plan_conversion(
        deployment,
        neighbours,
        policy,
        operation="UPDATE",
        old_deployment=deployment,
        keys=keys,
        update_strategy=policy.rollout_updates == "immediate",
    )
    if conversion.decision == "refuse":
        return ReconcilePlan(
            namespace,
            name,
            "refused",
            conversion.reason,
            (Emit("ConversionRefused", "; ".join(conversion.warnings)[:1000], "Warning"),),
            conversion=conversion,
        )
    existing_rollout = neighbours.rollout_named(name)
    actions: list[ClusterAction] = []
    for svc in conversion.services:
        if _drift(svc, _find(neighbours.services, name_of(svc))):
            actions.append(Apply(svc, f"generated Service {name_of(svc)}"))
    for route in conversion.routes:
        actions.append(Apply(route, f"canary backend for {route['kind']} {name_of(route)}"))
    assert conversion.rollout is not None
    if _drift(conversion.rollout, existing_rollout):
        verb = "create" if existing_rollout is None else "update"
        actions.append(Apply(conversion.rollout, f"{verb} Rollout {name}"))
    for hpa in conversion.hpas:
        actions.append(Apply(hpa, f"HPA {name_of(hpa)} scales the Rollout"))
    wanted = annotations_of(conversion.deployment)
    have = annotations_of(deployment)
    changed = {k: v for k, v in wanted.items() if have.get(k) != v}
    if changed:
        actions.append(
            Patch(
                "Deployment",
                namespace,
                name,
                {"metadata": {"annotations": changed}},
                "record the conversion on the Deployment",
            )
        )
    by_hpa = bool(hpas_for(neighbours.hpas, name))
    actions.extend(_gitops_drain(deployment, existing_rollout, conversion, policy, keys, by_hpa))
    writes = [a for a in actions if not isinstance(a, Emit)]
    if writes and existing_rollout is None:
        actions.append(
            Emit(
                "Converted",
                f"converted to a Rollout ({conversion.environment} {conversion.strategy})",
            )
        )
    state = "converting" if writes else "converted"
    return ReconcilePlan(
        namespace, name, state, conversion.reason, tuple(actions), conversion=conversion
    )


def _opt_out(
    deployment: Mapping[str, Any],
    neighbours: Neighbours,
    reason: str,
    keys: Keys,
) -> ReconcilePlan:
    step = next_opt_out_step(deployment, neighbours, reason, keys)
    return ReconcilePlan(
        str(meta(deployment).get("namespace", "")),
        name_of(deployment),
        "plain" if step.finished else "opting-out",
        step.summary,
        step.actions,
        step.requeue_after,
    )


def plan_reconcile(
    namespace: str,
    name: str,
    deployment: Mapping[str, Any] | None,
    neighbours: Neighbours,
    policy: Policy,
    *,
    now: datetime,
    keys: Keys = DEFAULT_KEYS,
    orphan_grace: timedelta = ORPHAN_GRACE,
) -> ReconcilePlan:
    """What to do for the service keyed (namespace, name), and when to look again.

    ``orphan_grace``: how old a generated object without its Deployment must be before it
    is deleted (where no garbage collector follows its ownerReference, this is the clean-up).
    """
    if deployment is None:
        return _orphans(namespace, name, neighbours, now, keys, orphan_grace)
    if meta(deployment).get("deletionTimestamp"):
        return ReconcilePlan(namespace, name, "deleting", "the Deployment is being deleted")
    opt_in = resolve_opt_in(deployment, neighbours.namespace, keys)
    if keys.refused in annotations_of(deployment):
        return ReconcilePlan(
            namespace,
            name,
            "refused",
            f"admission refused: {annotations_of(deployment)[keys.refused]}",
        )
    if opt_in.opted_in:
        converged = _converge(deployment, neighbours, policy, keys)
        if converged.state != "refused" and converged.conversion is not None:
            if converged.conversion.converted:
                return converged
            return _opt_out(deployment, neighbours, converged.conversion.reason, keys)
        return converged
    return _opt_out(deployment, neighbours, opt_in.reason, keys)
