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
from webhook.core.convert import Conversion, Neighbours, brings_policy_strategy, plan_conversion
from webhook.core.crd_schema import RolloutSchema
from webhook.core.hpa import hpas_for
from webhook.core.keys import DEFAULT_KEYS, Keys
from webhook.core.objects import (
    Obj,
    annotations_of,
    is_generated,
    labels_of,
    meta,
    name_of,
    namespace_of,
    spec_of,
)
from webhook.core.optout import next_opt_out_step, routes_without_canary
from webhook.core.policy import Policy
from webhook.core.references import names, rollouts_naming
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
    """Whether the object differs from what the plan wants of it.

    ``contains`` alone accepts extra keys, so it cannot see a field the plan stopped
    sending (``stableService`` of a deleted Service, ``trafficRouting`` of a deleted
    route, a policy key removed). Generated objects carry the hash of their desired
    manifest (``Keys.applied_hash``) among the annotations compared here: when the
    manifest changes in any way, so does the hash, and the server-side apply under the
    product's field manager then removes the fields it no longer sends.
    """
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


def _claimed_by(
    svc: Mapping[str, Any], neighbours: Neighbours, name: str, keys: Keys
) -> str | None:
    """The other Deployment a generated Service still belongs to, if any: the one it is
    labelled for, while that Deployment's Rollout exists and names it.

    Two Deployments whose pods one Service selects (a Deployment renamed: the new one
    created before the old one is deleted) want the same ``<stable>-canary`` Service.
    Taking it over while the other Rollout uses it would make the two conversions relabel
    it in turn for as long as both exist; the other one keeps it until its Rollout goes.
    """
    current = _find(neighbours.services, name_of(svc))
    if current is None or not is_generated(current, keys):
        return None
    owner = labels_of(current).get(keys.generated_for)
    if not owner or owner == name:
        return None
    rollout = neighbours.rollout_named(owner)
    if rollout is None or not names(rollout, "Service", name_of(svc)):
        return None
    return owner


def _generated_services(
    conversion: Conversion, neighbours: Neighbours, name: str, keys: Keys
) -> list[ClusterAction]:
    actions: list[ClusterAction] = []
    for svc in conversion.services:
        owner = _claimed_by(svc, neighbours, name, keys)
        if owner is not None:
            actions.append(
                Emit(
                    "ServiceShared",
                    f"Service {name_of(svc)} is generated for Deployment {owner}, whose Rollout "
                    f"still uses it; it is taken over once that Rollout is gone",
                    "Warning",
                )
            )
        elif _drift(svc, _find(neighbours.services, name_of(svc))):
            actions.append(Apply(svc, f"generated Service {name_of(svc)}"))
    return actions


def _retired_services(
    conversion: Conversion, neighbours: Neighbours, name: str, keys: Keys
) -> list[ClusterAction]:
    """Generated Services this conversion no longer wants (the ``-canary`` of a deleted
    stable Service, the ``-preview`` after a switch to canary), once nothing names them.

    The plan applies the Rollout before it gets here, so the Rollout this pass leaves in
    the cluster is the planned one. The routes lose the Service as a backend first.
    A route this pass changes anyway is left to the next pass (its own event brings it).
    """
    wanted = {name_of(s) for s in conversion.services}
    planned = conversion.rollout or {}
    changing = {(str(r["kind"]), name_of(r)) for r in conversion.routes}
    actions: list[ClusterAction] = []
    for svc in neighbours.services:
        svc_name = name_of(svc)
        if labels_of(svc).get(keys.generated_for) != name or svc_name in wanted:
            continue
        if not is_generated(svc, keys) or names(planned, "Service", svc_name):
            continue
        if _named_by_another(neighbours, name, svc_name):
            continue
        routes = routes_without_canary([svc], neighbours)
        if any((str(r["kind"]), name_of(r)) in changing for r in routes):
            continue
        actions.extend(
            Apply(r, f"remove backend {svc_name} from {r['kind']} {name_of(r)}") for r in routes
        )
        actions.append(
            Delete(
                "Service",
                namespace_of(conversion.deployment),
                svc_name,
                "a generated Service the conversion no longer uses",
            )
        )
    return actions


def _named_by_another(neighbours: Neighbours, name: str, service: str) -> bool:
    """Whether a Rollout other than ``name``'s names the Service (it is shared)."""
    others = [r for r in neighbours.rollouts if name_of(r) != name]
    return bool(rollouts_naming(others, "Service", service))


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _generated_for(neighbours: Neighbours, name: str, keys: Keys) -> list[Mapping[str, Any]]:
    """What was generated for the Deployment ``name``, except the Services another
    Rollout names: those go to the Deployment that took the Service over (a rename)."""
    return [
        o
        for o in (*neighbours.rollouts, *neighbours.services)
        if is_generated(o, keys)
        and labels_of(o).get(keys.generated_for) == name
        and not (o.get("kind") == "Service" and _named_by_another(neighbours, name, name_of(o)))
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


def _conversion(
    deployment: Mapping[str, Any],
    neighbours: Neighbours,
    policy: Policy,
    keys: Keys,
    rollout_schema: RolloutSchema | None = None,
) -> Conversion:
    """The conversion as the reconciler plans it: an UPDATE of the stored Deployment.

    Under ``rolloutUpdates: immediate`` the reconciler moves an existing Rollout to the
    policy's strategy; under ``nextChange`` only once the next admitted change of the
    Deployment recorded the policy version on it (``brings_policy_strategy``), and under
    ``never`` nothing does (``_kept_strategy`` in the conversion). With ``rollout_schema``,
    a Rollout the served schema refuses makes a refusal.
    """
    return plan_conversion(
        deployment,
        neighbours,
        policy,
        operation="UPDATE",
        old_deployment=deployment,
        keys=keys,
        update_strategy=brings_policy_strategy(deployment, policy, keys),
        rollout_schema=rollout_schema,
    )


def _refused(deployment: Mapping[str, Any], conversion: Conversion) -> ReconcilePlan:
    """The policy cannot convert this service as it is: nothing is written, and nothing is
    tried again until the Deployment, a neighbour or the policy changes (a new event)."""
    return ReconcilePlan(
        str(meta(deployment).get("namespace", "")),
        name_of(deployment),
        "refused",
        conversion.reason,
        (Emit("ConversionRefused", "; ".join(conversion.warnings)[:1000], "Warning"),),
        conversion=conversion,
    )


def _analysis_templates(conversion: Conversion, neighbours: Neighbours) -> list[ClusterAction]:
    """The policy's templates the Rollout uses, where they differ from the cluster's (first:
    an analysis may start as soon as the Rollout changes)."""
    actions: list[ClusterAction] = []
    for template in conversion.analysis_templates:
        pool = (
            neighbours.cluster_analysis_templates
            if template["kind"] == "ClusterAnalysisTemplate"
            else neighbours.analysis_templates
        )
        if _drift(template, _find(pool, name_of(template))):
            actions.append(Apply(template, f"{template['kind']} {name_of(template)} of the policy"))
    return actions


def _converge(
    deployment: Mapping[str, Any],
    neighbours: Neighbours,
    policy: Policy,
    keys: Keys,
    conversion: Conversion,
    rollout: Obj,
) -> ReconcilePlan:
    """The writes that make the cluster hold ``conversion`` (whose Rollout is ``rollout``)."""
    namespace = str(meta(deployment).get("namespace", ""))
    name = name_of(deployment)
    existing_rollout = neighbours.rollout_named(name)
    actions: list[ClusterAction] = list(_analysis_templates(conversion, neighbours))
    actions.extend(_generated_services(conversion, neighbours, name, keys))
    for route in conversion.routes:
        actions.append(Apply(route, f"canary backend for {route['kind']} {name_of(route)}"))
    if _drift(rollout, existing_rollout):
        verb = "create" if existing_rollout is None else "update"
        actions.append(Apply(rollout, f"{verb} Rollout {name}"))
    for hpa in conversion.hpas:
        actions.append(Apply(hpa, f"HPA {name_of(hpa)} scales the Rollout"))
    actions.extend(_retired_services(conversion, neighbours, name, keys))
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
    invalid_labels = [f.message for f in conversion.findings if f.code == "label-value"]
    if writes and invalid_labels:
        # Said when the reconciler acts on the service, not on every pass (admission
        # answers its requester with the same warning).
        actions.append(Emit("InvalidLabel", "; ".join(invalid_labels)[:1000], "Warning"))
    state = "converting" if writes else "converted"
    return ReconcilePlan(
        namespace, name, state, conversion.reason, tuple(actions), conversion=conversion
    )


def _opt_out(
    deployment: Mapping[str, Any],
    neighbours: Neighbours,
    reason: str,
    keys: Keys,
    conversion: Conversion | None = None,
) -> ReconcilePlan:
    step = next_opt_out_step(deployment, neighbours, reason, keys)
    return ReconcilePlan(
        str(meta(deployment).get("namespace", "")),
        name_of(deployment),
        "plain" if step.finished else "opting-out",
        step.summary,
        step.actions,
        step.requeue_after,
        conversion=conversion,
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
    rollout_schema: RolloutSchema | None = None,
) -> ReconcilePlan:
    """What to do for the service keyed (namespace, name), and when to look again.

    ``rollout_schema``: the Rollout CRD the cluster serves; a Rollout it refuses is a
    refusal (nothing written, no retry until the Deployment or the policy changes).

    ``orphan_grace``: how old a generated object without its Deployment must be before it
    is deleted (where no garbage collector follows its ownerReference, this is the clean-up).
    """
    if deployment is None:
        return _orphans(namespace, name, neighbours, now, keys, orphan_grace)
    if meta(deployment).get("deletionTimestamp"):
        return ReconcilePlan(namespace, name, "deleting", "the Deployment is being deleted")
    opt_in = resolve_opt_in(deployment, neighbours.namespace, keys)
    if keys.refused in annotations_of(deployment):
        marker = annotations_of(deployment)[keys.refused]
        # Left alone: the reconciler, acting under the webhook's own account, must not do
        # what admission refused to do for the requester. The Event says what to grant.
        told = (
            Emit(
                "ConversionRefused",
                f"not converted at admission: {marker}; once granted (docs/security.md), "
                "update the Deployment to have it converted"[:1000],
                "Warning",
            ),
        )
        return ReconcilePlan(
            namespace,
            name,
            "refused",
            f"admission refused: {marker}",
            told if opt_in.opted_in else (),
        )
    if not opt_in.opted_in:
        return _opt_out(deployment, neighbours, opt_in.reason, keys)
    conversion = _conversion(deployment, neighbours, policy, keys, rollout_schema)
    if conversion.decision == "refuse":
        return _refused(deployment, conversion)
    if conversion.rollout is None:
        # Opted in, and still not to be converted: its environment is switched off
        # (rollout.enabled: false, the kill switch) or its override annotation says
        # enabled: false. With a Rollout that is an opt-out; without one there is nothing
        # to do (a plain Deployment, converged).
        return _opt_out(deployment, neighbours, conversion.reason, keys, conversion)
    return _converge(deployment, neighbours, policy, keys, conversion, conversion.rollout)
