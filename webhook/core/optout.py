"""Opt-out: a service leaves progressive delivery, in an order that keeps it serving.

The order is what keeps the service up (argo-rollouts#3855, flagger#686: removing a
Rollout first leaves the Deployment at 0 replicas), so opt-out is a sequence across
several reconciler passes. ``next_opt_out_step`` looks at the cluster as it is now and
returns the one step that is due:

1. the Rollout stops scaling the Deployment down (``workloadRef.scaleDown: never``), the
   Deployment gets its replicas back, the HPA targets it again, routes lose the canary
   backend;
2. wait until the Deployment's pods are available;
3. the Rollout stops naming the Services and routes (Argo then lets go of them);
4. drop the ``rollouts-pod-template-hash`` Argo added to the stable Service's selector, so
   it selects the Deployment's pods too; delete the Rollout, orphaning its ReplicaSets so
   its pods keep serving, and the generated Services;
5. once the Rollout is gone, delete its orphaned ReplicaSets (where the Deployment
   controller has not adopted them already) and remove the product's annotations from
   the Deployment.

``plan_opt_out`` says what the objects become (the Deployment's replicas, the HPAs, the
routes, what to delete); the steps above say when each change is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webhook.core.actions import (
    Apply,
    ClusterAction,
    Delete,
    DeleteOrphanReplicaSets,
    Emit,
    Patch,
)
from webhook.core.convert import Neighbours
from webhook.core.hpa import clamp_to_hpa, restore_hpa, targets
from webhook.core.keys import DEFAULT_KEYS, Keys
from webhook.core.objects import (
    Obj,
    annotations_of,
    is_generated,
    json_copy,
    labels_of,
    meta,
    name_of,
    spec_of,
)
from webhook.core.routes import (
    Subsets,
    remove_canary_backend_httproute,
    remove_canary_destination_virtualservice,
)
from webhook.core.services import POD_TEMPLATE_HASH, selects_pods

OPT_OUT_POLL_SECONDS = 2.0
"""How soon to look again while a step waits on the cluster (pods, a deletion)."""

RELEASE_SERVICES: Obj = {
    "blueGreen": None,
    "canary": {
        "stableService": None,
        "canaryService": None,
        "trafficRouting": None,
        "steps": [],
    },
}
"""The merge patch of a Rollout's strategy that leaves it naming no Service and no route
(a blue-green Rollout cannot name none: it becomes a canary without steps, which starts
no new revision since the pod template does not change)."""


@dataclass(frozen=True)
class Restoration:
    deployment: Obj
    replicas: int
    hpas: tuple[Obj, ...]
    routes: tuple[Obj, ...]
    delete_rollout: str | None
    delete_services: tuple[str, ...]


def plan_opt_out(
    deployment: Mapping[str, Any], neighbours: Neighbours, keys: Keys = DEFAULT_KEYS
) -> Restoration:
    name = name_of(deployment)
    annotations = annotations_of(deployment)
    rollout = neighbours.rollout_named(name)
    recorded = annotations.get(keys.original_replicas, "")
    current = spec_of(deployment).get("replicas")
    replicas = int(recorded) if recorded.isdigit() else (current if isinstance(current, int) else 1)
    # The Rollout's size is the service's (an HPA or a person may have scaled it since the
    # annotation was last mirrored).
    sized = spec_of(rollout).get("replicas") if rollout is not None else None
    if isinstance(sized, int) and not isinstance(sized, bool):
        replicas = sized
    hpas = [h for h in neighbours.hpas if targets(h, "Rollout", name)]
    if hpas:
        replicas = clamp_to_hpa(replicas, hpas[0])
    replicas = max(replicas, current if isinstance(current, int) else 0)

    restored = json_copy(dict(deployment))
    restored.setdefault("spec", {})["replicas"] = replicas
    kept = {k: v for k, v in annotations.items() if k not in keys.written_annotations()}
    restored.setdefault("metadata", {})["annotations"] = kept

    generated = _generated_services(deployment, neighbours, keys)
    return Restoration(
        deployment=restored,
        replicas=replicas,
        hpas=tuple(restore_hpa(h, name) for h in hpas),
        routes=(
            *routes_without_canary(generated, neighbours),
            *routes_without_canary_subset(rollout, neighbours),
        ),
        delete_rollout=name if rollout is not None and is_generated(rollout, keys) else None,
        delete_services=tuple(sorted(name_of(s) for s in generated)),
    )


def _generated_services(
    deployment: Mapping[str, Any], neighbours: Neighbours, keys: Keys
) -> list[Mapping[str, Any]]:
    name = name_of(deployment)
    return [
        s
        for s in neighbours.services
        if is_generated(s, keys) and labels_of(s).get(keys.generated_for) == name
    ]


def routes_without_canary(generated: list[Mapping[str, Any]], neighbours: Neighbours) -> list[Obj]:
    """The routes that still send traffic to a generated canary Service, without it."""
    routes: list[Obj] = []
    for svc in generated:
        canary = name_of(svc)
        stable = canary.rsplit("-", 1)[0]
        for route in neighbours.http_routes:
            patch = remove_canary_backend_httproute(route, stable, canary)
            if patch.changed:
                routes.append(patch.route)
        for vs in neighbours.virtual_services:
            patch = remove_canary_destination_virtualservice(vs, stable, canary)
            if patch.changed:
                routes.append(patch.route)
    return routes


def routes_without_canary_subset(
    rollout: Mapping[str, Any] | None, neighbours: Neighbours
) -> list[Obj]:
    """Subset-level routing: the VirtualServices without their canary subset destination.

    No canary Service exists then; the Rollout's DestinationRule says which subsets, and
    the rule's host which Service."""
    strategy = spec_of(rollout).get("strategy") if rollout is not None else None
    canary = (strategy or {}).get("canary") if isinstance(strategy, Mapping) else None
    routing = (canary or {}).get("trafficRouting") if isinstance(canary, Mapping) else None
    istio = (routing or {}).get("istio") if isinstance(routing, Mapping) else None
    rule_ref = (istio or {}).get("destinationRule") if isinstance(istio, Mapping) else None
    if not isinstance(rule_ref, Mapping):
        return []
    rule = next(
        (r for r in neighbours.destination_rules if name_of(r) == rule_ref.get("name")), None
    )
    host = spec_of(rule).get("host") if rule is not None else None
    if not isinstance(host, str):
        return []
    subsets = Subsets(
        str(rule_ref.get("name")),
        str(rule_ref.get("stableSubsetName")),
        str(rule_ref.get("canarySubsetName")),
    )
    stable = host.split(".", 1)[0]
    routes: list[Obj] = []
    for vs in neighbours.virtual_services:
        patch = remove_canary_destination_virtualservice(vs, stable, "", subsets=subsets)
        if patch.changed:
            routes.append(patch.route)
    return routes


@dataclass(frozen=True)
class OptOutStep:
    """The step of the sequence that is due: its actions, and when to look again (None:
    the sequence needs nothing more unless the cluster changes)."""

    summary: str
    actions: tuple[ClusterAction, ...] = ()
    requeue_after: float | None = None

    @property
    def finished(self) -> bool:
        """Nothing left to do: the Deployment is a plain Deployment again."""
        return not self.actions and self.requeue_after is None


def next_opt_out_step(
    deployment: Mapping[str, Any], neighbours: Neighbours, reason: str, keys: Keys
) -> OptOutStep:
    """The step of the opt-out sequence (the module's docstring) that the cluster is at.

    ``reason`` says why the service opts out (the label that says so).
    """
    rollout = neighbours.rollout_named(name_of(deployment))
    if rollout is None or not is_generated(rollout, keys):
        return _after_the_rollout(deployment, neighbours, reason, keys)
    if meta(rollout).get("deletionTimestamp"):
        # Deleted with orphaned dependents: the garbage collector is taking its ReplicaSets'
        # owner references off, then removes it. Deleting again changes nothing, and the
        # next step (deleting those ReplicaSets) must wait until they have no owner.
        return OptOutStep(
            "waiting for the Rollout's deletion to finish", requeue_after=OPT_OUT_POLL_SECONDS
        )
    restoration = plan_opt_out(deployment, neighbours, keys)
    restoring = _restore_the_deployment(deployment, rollout, restoration)
    if restoring:
        opting_out = Emit("OptingOut", f"{reason}: restoring the Deployment first")
        return OptOutStep(reason, (opting_out, *restoring), OPT_OUT_POLL_SECONDS)
    waiting = _waiting_for_pods(deployment, restoration.replicas)
    if waiting is not None:
        return OptOutStep(waiting, requeue_after=OPT_OUT_POLL_SECONDS)
    if _references_services(rollout):
        return OptOutStep(reason, (_release_services(deployment),), OPT_OUT_POLL_SECONDS)
    return OptOutStep(
        reason,
        tuple(_delete_the_rollout(deployment, neighbours, restoration, keys)),
        OPT_OUT_POLL_SECONDS,
    )


def _namespace(deployment: Mapping[str, Any]) -> str:
    return str(meta(deployment).get("namespace", ""))


def _restore_the_deployment(
    deployment: Mapping[str, Any], rollout: Mapping[str, Any], restoration: Restoration
) -> list[ClusterAction]:
    """Step 1: the Deployment runs its pods again, while the Rollout's still serve."""
    namespace, name = _namespace(deployment), name_of(deployment)
    want = restoration.replicas
    actions: list[ClusterAction] = []
    if (spec_of(rollout).get("workloadRef") or {}).get("scaleDown") != "never":
        actions.append(
            Patch(
                "Rollout",
                namespace,
                name,
                {"spec": {"workloadRef": {"scaleDown": "never"}}},
                "stop the Rollout scaling the Deployment down",
            )
        )
    if spec_of(deployment).get("replicas") != want:
        actions.append(
            Patch(
                "Deployment",
                namespace,
                name,
                {"spec": {"replicas": want}},
                f"give the Deployment its {want} replicas back",
            )
        )
    actions.extend(
        Apply(h, f"HPA {name_of(h)} scales the Deployment again") for h in restoration.hpas
    )
    actions.extend(
        Apply(r, f"remove the canary backend from {r['kind']} {name_of(r)}")
        for r in restoration.routes
    )
    return actions


def _waiting_for_pods(deployment: Mapping[str, Any], want: int) -> str | None:
    """Step 2: what the sequence waits for while the Deployment's pods are not all
    available (None: they are)."""
    status = deployment.get("status") or {}
    available = int(status.get("availableReplicas") or 0)
    current = int(status.get("observedGeneration") or 0) >= int(
        meta(deployment).get("generation") or 0
    )
    if available < want or not current:
        return f"waiting for the Deployment's pods: {available} of {want} available"
    return None


def _references_services(rollout: Mapping[str, Any]) -> bool:
    strategy = spec_of(rollout).get("strategy") or {}
    canary = strategy.get("canary") or {}
    return "blueGreen" in strategy or any(
        canary.get(k) for k in ("stableService", "canaryService", "trafficRouting")
    )


def _release_services(deployment: Mapping[str, Any]) -> Patch:
    """Step 3. While the Rollout names the Services, Argo pins their selectors to its own
    pods; once it names none, Argo lets go of them and re-pins nothing."""
    return Patch(
        "Rollout",
        _namespace(deployment),
        name_of(deployment),
        {"spec": {"strategy": RELEASE_SERVICES}},
        "the Rollout lets go of the Services and routes",
    )


def _delete_the_rollout(
    deployment: Mapping[str, Any], neighbours: Neighbours, restoration: Restoration, keys: Keys
) -> list[ClusterAction]:
    """Step 4. The Services select the Deployment's pods before the Rollout goes: once it
    is deleted, the Deployment controller adopts its orphaned ReplicaSets and scales them
    down, and a Service still pinned to them would have no endpoints."""
    namespace, name = _namespace(deployment), name_of(deployment)
    return [
        *_unpin_services(deployment, neighbours, keys),
        Delete("Rollout", namespace, name, "the Deployment serves again", orphan_dependents=True),
        *(
            Delete("Service", namespace, svc, "generated for the Rollout")
            for svc in restoration.delete_services
        ),
    ]


def _after_the_rollout(
    deployment: Mapping[str, Any], neighbours: Neighbours, reason: str, keys: Keys
) -> OptOutStep:
    """Step 5, with no Rollout left: what it leaves behind goes, and the Deployment stops
    saying it was converted. Nothing to do for a Deployment that never was."""
    namespace = _namespace(deployment)
    actions: list[ClusterAction] = [
        Delete("Service", namespace, name_of(svc), "generated for the Rollout")
        for svc in _generated_services(deployment, neighbours, keys)
    ]
    actions.extend(_unpin_services(deployment, neighbours, keys))
    if keys.rollout_name in annotations_of(deployment):
        actions.extend(_forget_the_conversion(deployment, reason, keys))
    return OptOutStep(reason, tuple(actions))


def _forget_the_conversion(
    deployment: Mapping[str, Any], reason: str, keys: Keys
) -> list[ClusterAction]:
    namespace = _namespace(deployment)
    actions: list[ClusterAction] = []
    match_labels = (spec_of(deployment).get("selector") or {}).get("matchLabels") or {}
    if match_labels:
        actions.append(
            DeleteOrphanReplicaSets(namespace, dict(match_labels), "pods of the deleted Rollout")
        )
    annotations = annotations_of(deployment)
    removed = {k: None for k in keys.written_annotations() if k in annotations}
    actions.append(
        Patch(
            "Deployment",
            namespace,
            name_of(deployment),
            {"metadata": {"annotations": removed}},
            "no longer managed by a Rollout",
        )
    )
    actions.append(Emit("OptedOut", f"{reason}: back to a plain Deployment"))
    return actions


def _unpin_services(
    deployment: Mapping[str, Any], neighbours: Neighbours, keys: Keys
) -> list[ClusterAction]:
    """Drop the pod-template hash Argo added from the Services of the Deployment's pods."""
    namespace = _namespace(deployment)
    return [
        Patch(
            "Service",
            namespace,
            name_of(svc),
            {"spec": {"selector": {POD_TEMPLATE_HASH: None}}},
            "select the Deployment's pods again",
        )
        for svc in neighbours.services
        if not is_generated(svc, keys)
        and POD_TEMPLATE_HASH in (spec_of(svc).get("selector") or {})
        and selects_pods(svc, deployment)
    ]
