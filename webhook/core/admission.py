"""The mutating decision on one admission request, by kind. Pure.

- Deployment: ``plan_conversion`` with the namespace's cached neighbours; the patch
  turns the request object into the converted Deployment, and the Rollout, generated
  Services, re-targeted HPAs and changed routes are the cluster changes wanted.
- HorizontalPodAutoscaler: re-targeted at the Rollout when the Deployment it scales is
  converted (so an HPA applied after the conversion, e.g. by a chart, keeps pointing at
  what really scales the pods).
- HTTPRoute / VirtualService: given the canary backend when a Service they send traffic
  to belongs to a converted Deployment.
- The scale subresource of a Deployment (``kubectl scale deployment``, an HPA still aimed
  at the Deployment): for a converted Deployment the Scale is patched back to the count
  the Deployment has, and the count asked for goes to the Rollout.

"Converted" is always decided by ``plan_conversion`` itself on the cached Deployment, so
the webhook, the reconciler and the offline preview cannot disagree. Re-sending an
already mutated object plans the same object again: the patch is empty.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from webhook.core.cluster import CREATE_ROLLOUTS, ClusterLister, ClusterReader, Permission
from webhook.core.convert import Conversion, ConversionOperation, Neighbours, plan_conversion
from webhook.core.crd_schema import RolloutSchema
from webhook.core.hpa import hpas_for, retarget_hpa, targets
from webhook.core.index import backend_keys, selecting_keys, target_key
from webhook.core.keys import Keys
from webhook.core.objects import (
    Obj,
    annotations_of,
    json_copy,
    labels_of,
    name_of,
    pod_labels,
    spec_of,
)
from webhook.core.policy import Policy
from webhook.core.review import (
    AdmissionPlan,
    AdmissionRequest,
    is_deployment_scale,
    request_kind,
    request_username,
)
from webhook.core.routes import httproute_references, virtualservice_references
from webhook.core.services import selects_pods

ROUTE_KINDS = {"HTTPRoute": "http_routes", "VirtualService": "virtual_services"}


def neighbours_of(reader: ClusterLister, namespace: str) -> Neighbours:
    return Neighbours(
        namespace=reader.get("Namespace", "", namespace),
        services=reader.list("Service", namespace),
        hpas=reader.list("HorizontalPodAutoscaler", namespace),
        http_routes=reader.list("HTTPRoute", namespace),
        virtual_services=reader.list("VirtualService", namespace),
        rollouts=reader.list("Rollout", namespace),
        destination_rules=reader.list("DestinationRule", namespace),
        analysis_templates=reader.list("AnalysisTemplate", namespace),
        cluster_analysis_templates=reader.list("ClusterAnalysisTemplate", ""),
    )


def deployment_neighbours(
    reader: ClusterReader, namespace: str, deployment: Mapping[str, Any]
) -> Neighbours:
    """What a Deployment's conversion reads of its namespace, found through the caches'
    index: the Services that may select its pods, the routes to them, the HPAs and the
    Rollout of its name. ``plan_conversion`` reads nothing else of its neighbours, so it
    plans the same as with the whole namespace (tested), at the cost of the matches."""
    name = name_of(deployment)
    services = reader.indexed("Service", namespace, selecting_keys(pod_labels(deployment)))
    backends = backend_keys({name, *(name_of(s) for s in services)})
    rollout = reader.get("Rollout", namespace, name)
    return Neighbours(
        namespace=reader.get("Namespace", "", namespace),
        services=services,
        hpas=reader.indexed("HorizontalPodAutoscaler", namespace, {target_key(name)}),
        http_routes=reader.indexed("HTTPRoute", namespace, backends),
        virtual_services=reader.indexed("VirtualService", namespace, backends),
        rollouts=() if rollout is None else (rollout,),
        destination_rules=reader.indexed("DestinationRule", namespace, backends),
        analysis_templates=reader.list("AnalysisTemplate", namespace),
        cluster_analysis_templates=reader.list("ClusterAnalysisTemplate", ""),
    )


def _with(neighbours: Neighbours, field_name: str, obj: Mapping[str, Any]) -> Neighbours:
    """The neighbours with ``obj`` in place of its cached version (the request wins)."""
    current: tuple[Mapping[str, Any], ...] = getattr(neighbours, field_name)
    others = tuple(o for o in current if name_of(o) != name_of(obj))
    changes: dict[str, Any] = {field_name: (*others, obj)}
    return replace(neighbours, **changes)


def _changes(conversion: Conversion) -> tuple[Obj, ...]:
    rollout = () if conversion.rollout is None else (conversion.rollout,)
    # The templates first: the Rollout's analysis may start as soon as it exists.
    templates = conversion.analysis_templates
    return (*templates, *rollout, *conversion.services, *conversion.hpas, *conversion.routes)


def _namespace(request: AdmissionRequest, obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return str(request.get("namespace") or meta.get("namespace") or "")


def _with_namespace(obj: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """The object as the conversion sees it: on CREATE the body may lack its namespace."""
    copy = dict(obj)
    meta = dict(copy.get("metadata") or {})
    meta.setdefault("namespace", namespace)
    copy["metadata"] = meta
    return copy


def decide_deployment(
    request: AdmissionRequest,
    reader: ClusterReader,
    policy: Policy,
    *,
    keys: Keys,
    rollout_schema: RolloutSchema | None = None,
) -> AdmissionPlan:
    obj = request.get("object") or {}
    namespace = _namespace(request, obj)
    if not (obj.get("metadata") or {}).get("name"):
        # generateName: the API server names the object after admission, and the Rollout
        # must carry the Deployment's name. The reconciler converts it once it is stored.
        return AdmissionPlan(
            "skip", "the Deployment has no name yet (generateName); the reconciler converts it"
        )
    operation: ConversionOperation = "CREATE" if request["operation"] == "CREATE" else "UPDATE"
    deployment = _with_namespace(obj, namespace)
    conversion = plan_conversion(
        deployment,
        deployment_neighbours(reader, namespace, deployment),
        policy,
        operation=operation,
        old_deployment=request.get("oldObject"),
        keys=keys,
        rollout_schema=rollout_schema,
    )
    mutated = None
    if conversion.converted:
        # The conversion saw the object with its namespace filled in; the patch must
        # not add one the API server fills in itself. A refusal marker left by an
        # earlier request (see ``mark_refused``) goes: this request converts.
        mutated = dict(conversion.deployment)
        meta = dict(mutated.get("metadata") or {})
        if "namespace" not in (obj.get("metadata") or {}):
            meta.pop("namespace", None)
        annotations = dict(meta.get("annotations") or {})
        if annotations.pop(keys.refused, None) is not None:
            meta["annotations"] = annotations
        mutated["metadata"] = meta
    return AdmissionPlan(
        decision=conversion.decision,
        reason=conversion.reason,
        environment=conversion.environment,
        strategy=conversion.strategy,
        mutated=mutated,
        changes=_changes(conversion) if conversion.converted else (),
        warnings=conversion.warnings,
    )


def mark_refused(deployment: Mapping[str, Any], why: str, *, keys: Keys) -> dict[str, Any]:
    """The Deployment as sent, plus the annotation that tells the reconciler to leave it
    unconverted: its requester may not create Rollouts, and the reconciler, acting under
    its own name, must not do for them what the webhook would not."""
    marked = json_copy(dict(deployment))
    meta = marked.setdefault("metadata", {})
    meta["annotations"] = {**(meta.get("annotations") or {}), keys.refused: why}
    return marked


WRITE_PERMISSIONS = {
    "Rollout": CREATE_ROLLOUTS,
    "Service": Permission("create", "", "services"),
    "HorizontalPodAutoscaler": Permission("patch", "autoscaling", "horizontalpodautoscalers"),
    "HTTPRoute": Permission("patch", "gateway.networking.k8s.io", "httproutes"),
    "VirtualService": Permission("patch", "networking.istio.io", "virtualservices"),
    # The policy's templates, written into the namespace of the Rollout that uses them.
    "AnalysisTemplate": Permission("create", "argoproj.io", "analysistemplates"),
}
"""What the requester must be allowed to do for each kind a plan writes on their behalf:
the product's account could do all of it, and must not do for a user what the user could
not (a server-side apply that creates is authorized as create; one that changes an object
another tool owns, as patch)."""

POLICY_WRITES = frozenset({"ClusterAnalysisTemplate"})
"""Kinds a plan writes that no requester chooses or could be expected to create: the
cluster-scoped templates of the policy (docs/policy.md#analysis), the same whoever asks."""


def permissions_for(plan: AdmissionPlan) -> tuple[Permission, ...]:
    """The rights the plan's writes need of the requester, each once, in a stable order."""
    kinds = {str(change.get("kind", "")) for change in plan.changes} - POLICY_WRITES
    unknown = kinds - WRITE_PERMISSIONS.keys()
    if unknown:  # a new kind of write must say what it needs before it is ever made
        raise ValueError(f"no permission known for writing {', '.join(sorted(unknown))}")
    return tuple(sorted({WRITE_PERMISSIONS[kind] for kind in kinds}))


def plan_without_writes(
    request: AdmissionRequest,
    plan: AdmissionPlan,
    why: str,
    *,
    keys: Keys,
    missing: tuple[Permission, ...] = (CREATE_ROLLOUTS,),
) -> AdmissionPlan:
    """The plan for a user who may not make all of its writes (``missing``: the rights
    they lack; ``why``: the permission check's answer): nothing written for them.

    A conversion is all or nothing: a Rollout whose canary Service or route backend is
    missing cannot run its steps. So a new conversion is not made at all: the Deployment
    is admitted as sent, marked so the reconciler leaves it too. An object that belongs to
    a conversion someone allowed earlier (an HPA or route of a converted Deployment, an
    update of a converted Deployment) keeps its patch, which only holds the conversion in
    place, since dropping it would leave the Deployment and the Rollout both running pods
    (argo-rollouts#4935); only the writes go, and the reconciler makes them under its own
    name.
    """
    who = request_username(request) or "?"
    namespace = request.get("namespace", "")
    # Rollouts first: the right most teams lack, and the one the marker has always named.
    ordered = sorted(missing, key=lambda p: (p != CREATE_ROLLOUTS, p))
    lacking = ", ".join(str(p) for p in ordered)
    denial = f"{who} may not {lacking} in namespace {namespace} ({why})"
    old = request.get("oldObject") or {}
    already = bool(((old.get("metadata") or {}).get("annotations") or {}).get(keys.rollout_name))
    if request_kind(request) == "Deployment" and not already:
        # The reason first in the warning: Kubernetes clips a warning at 120 characters.
        warning = f"not converted ({why}): {who} may not {lacking} in namespace {namespace}"
        refused = plan.unconverted("refuse", denial, warning)
        obj = request.get("object") or {}
        return replace(refused, mutated=mark_refused(obj, f"{who} may not {lacking}", keys=keys))
    return replace(
        plan,
        reason=f"{plan.reason}; no changes written: {denial}",
        changes=(),
        warnings=(
            *plan.warnings,
            f"no changes written on your behalf ({why}): {who} may not {lacking}",
        ),
    )


def plan_without_policy(
    request: AdmissionRequest, reader: ClusterReader, why: str, *, keys: Keys
) -> AdmissionPlan:
    """The plan when no valid policy is in force (``why``: what was refused): nothing new
    is converted and nothing is written, but what is converted stays as it is.

    The policy ConfigMap was refused when the server started (an edit made while the
    policy webhook was down, or a chart installed with a broken policy), so there is no
    last good one. The built-in policy would be a guess at what the admin meant: it could
    convert a service the broken policy switched off. So an update of a converted
    Deployment keeps its replicas and the product's annotations (dropping them would run
    the Deployment's pods beside the Rollout's, argo-rollouts#4935), an HPA of a converted
    Deployment keeps scaling the Rollout, and everything else is admitted as sent.
    """
    kind = request_kind(request)
    obj = request.get("object") or {}
    old = request.get("oldObject") or {}
    if kind == "Deployment" and annotations_of(old).get(keys.rollout_name):
        return AdmissionPlan(
            "skip",
            f"no valid policy in force ({why}): the conversion is held as it is",
            mutated=_held_conversion(obj, old, keys),
            warnings=(f"no valid policy in force ({why}); replicas and annotations held",),
        )
    if kind == "HorizontalPodAutoscaler":
        namespace = _namespace(request, obj)
        target = ((obj.get("spec") or {}).get("scaleTargetRef") or {}).get("name", "")
        if targets(obj, "Deployment", target) and _converted_deployments(
            reader, namespace, keys, lambda n: n == target
        ):
            return AdmissionPlan(
                "skip",
                f"no valid policy in force ({why}): the HPA keeps scaling Rollout {target}",
                mutated=retarget_hpa(obj, target),
            )
    reason = f"no valid policy in force ({why}): admitted as sent"
    if kind == "Deployment" and _opted_in(obj, reader, _namespace(request, obj), keys):
        return AdmissionPlan("skip", reason, warnings=(f"not converted: {reason}",))
    return AdmissionPlan("skip", reason)


def _opted_in(obj: Mapping[str, Any], reader: ClusterLister, namespace: str, keys: Keys) -> bool:
    own = labels_of(obj).get(keys.enabled)
    if own is not None:
        return own == "true"
    return labels_of(reader.get("Namespace", "", namespace) or {}).get(keys.enabled) == "true"


def _held_conversion(obj: Mapping[str, Any], old: Mapping[str, Any], keys: Keys) -> Obj:
    """``obj`` with the replicas and the product's annotations of the stored ``old``."""
    held = json_copy(dict(obj))
    metadata = held.setdefault("metadata", {})
    annotations = metadata.setdefault("annotations", {})
    stored = annotations_of(old)
    annotations.update({k: stored[k] for k in keys.written_annotations() if k in stored})
    replicas = (old.get("spec") or {}).get("replicas")
    if replicas is not None:
        held.setdefault("spec", {})["replicas"] = replicas
    return held


def _converted_deployments(
    reader: ClusterReader, namespace: str, keys: Keys, wanted: Callable[[str], bool]
) -> list[dict[str, Any]]:
    """Cached Deployments the product has converted (annotated), filtered by name."""
    return [
        d
        for d in reader.list("Deployment", namespace)
        if annotations_of(d).get(keys.rollout_name) and wanted(name_of(d))
    ]


def decide_hpa(
    request: AdmissionRequest, reader: ClusterReader, policy: Policy, *, keys: Keys
) -> AdmissionPlan:
    hpa = request.get("object") or {}
    namespace = _namespace(request, hpa)
    target = ((hpa.get("spec") or {}).get("scaleTargetRef") or {}).get("name", "")
    if not targets(hpa, "Deployment", target):
        return AdmissionPlan("skip", "the HPA does not scale a Deployment")
    candidates = _converted_deployments(reader, namespace, keys, lambda n: n == target)
    if not candidates:
        return AdmissionPlan("skip", f"Deployment {target} is not converted")
    neighbours = _with(neighbours_of(reader, namespace), "hpas", _with_namespace(hpa, namespace))
    conversion = plan_conversion(
        candidates[0],
        neighbours,
        policy,
        operation="UPDATE",
        old_deployment=candidates[0],
        keys=keys,
    )
    if not conversion.converted:
        return AdmissionPlan("skip", f"Deployment {target}: {conversion.reason}")
    rollout = () if conversion.rollout is None else (conversion.rollout,)
    return AdmissionPlan(
        decision="convert",
        reason=f"HPA re-targeted at Rollout {target}, which manages Deployment {target}",
        environment=conversion.environment,
        strategy=conversion.strategy,
        mutated=retarget_hpa(hpa, target),
        changes=rollout,
    )


def decide_route(
    request: AdmissionRequest, reader: ClusterReader, policy: Policy, *, keys: Keys
) -> AdmissionPlan:
    route = request.get("object") or {}
    kind = request["kind"]["kind"]
    namespace = _namespace(request, route)
    field_name = ROUTE_KINDS[kind]
    current: dict[str, Any] = _with_namespace(route, namespace)
    neighbours = neighbours_of(reader, namespace)
    changes: list[Obj] = []
    served: list[str] = []
    last: Conversion | None = None
    # Only Deployments behind a Service this route sends traffic to can change it: the
    # conversion is planned for those alone, however many a namespace holds.
    references = httproute_references if kind == "HTTPRoute" else virtualservice_references
    routed = [s for s in neighbours.services if references(current, name_of(s))]
    behind = {
        name_of(d)
        for d in reader.list("Deployment", namespace)
        if any(selects_pods(s, d) for s in routed)
    }
    for deployment in _converted_deployments(reader, namespace, keys, behind.__contains__):
        conversion = plan_conversion(
            deployment,
            _with(neighbours, field_name, current),
            policy,
            operation="UPDATE",
            old_deployment=deployment,
            keys=keys,
        )
        if not conversion.converted:
            continue
        mine = [
            r for r in conversion.routes if r.get("kind") == kind and name_of(r) == name_of(route)
        ]
        if not mine:
            continue
        current = mine[0]
        served.append(name_of(deployment))
        if conversion.rollout is not None:
            changes.append(conversion.rollout)
        changes.extend(conversion.services)
        last = conversion
    if not served or last is None:
        return AdmissionPlan("skip", f"the {kind} sends no traffic to a converted Deployment")
    mutated = current
    if "namespace" not in (route.get("metadata") or {}):
        meta = dict(mutated.get("metadata") or {})
        meta.pop("namespace", None)
        mutated = {**mutated, "metadata": meta}
    return AdmissionPlan(
        decision="convert",
        reason=f"canary backend added for {', '.join(served)}",
        environment=last.environment,
        strategy=last.strategy,
        mutated=mutated,
        changes=tuple(changes),
        warnings=last.warnings,
    )


SCALE_EXTRA = {"subresource": "scale"}
"""What the audit record of a Scale's decision adds: it is kept under kind Deployment."""


def scale_replicas(scale: Mapping[str, Any] | None) -> int | None:
    """The count of an autoscaling/v1 Scale. The field is ``omitempty``: a Scale of a
    Deployment at 0 carries none, so a missing count is 0 (None: not a count)."""
    if scale is None:
        return None
    value = spec_of(scale).get("replicas", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _with_replicas(deployment: Mapping[str, Any], replicas: int) -> dict[str, Any]:
    return {**deployment, "spec": {**spec_of(deployment), "replicas": replicas}}


def _scale_skip(reason: str) -> AdmissionPlan:
    return AdmissionPlan("skip", reason, extra=SCALE_EXTRA)


def decide_deployment_scale(
    request: AdmissionRequest, reader: ClusterReader, policy: Policy, *, keys: Keys
) -> AdmissionPlan:
    """A Scale of a Deployment. Converted: the Scale is patched back to the count the
    Deployment has (0, or what Argo is still draining), so the Deployment never runs pods
    of its own, and the Rollout, planned as any admission plans it, gets the count asked
    for. Not converted, or opting out: the Scale goes through untouched.

    A Scale carries no labels and no annotations (the API server copies only the name,
    namespace, uid, resourceVersion and creation time into it), so "converted" is read from
    the cached Deployment. Every Scale is a request for a size, also one equal to the
    Deployment's count (``kubectl scale --replicas=0`` of a drained Deployment stops the
    service). An HPA sizes a Rollout it scales: then nothing is written, with a warning.
    """
    scale = request.get("object") or {}
    namespace = _namespace(request, scale)
    name = request.get("name") or name_of(scale)
    cached = reader.get("Deployment", namespace, name)
    if cached is None or not annotations_of(cached).get(keys.rollout_name):
        return _scale_skip(f"Deployment {name} is not converted")
    wanted = scale_replicas(scale)
    current = scale_replicas(request.get("oldObject"))
    if current is None:
        current = int(spec_of(cached).get("replicas") or 0)
    if wanted is None:
        return _scale_skip("the Scale carries no replica count")
    neighbours = deployment_neighbours(reader, namespace, cached)
    conversion = plan_conversion(
        _with_replicas(cached, wanted),
        neighbours,
        policy,
        operation="UPDATE",
        old_deployment=_with_replicas(cached, current),
        keys=keys,
        # A scale is no change of the service: it never brings in the policy's new steps.
        update_strategy=False,
    )
    if not conversion.converted or conversion.rollout is None:
        return _scale_skip(f"Deployment {name}: {conversion.reason}")
    mutated = json_copy(dict(scale))
    if wanted != current:
        mutated.setdefault("spec", {})["replicas"] = current
    plan = AdmissionPlan(
        decision="convert",
        reason=f"scale of Deployment {name} to {wanted} sent to Rollout {name}",
        environment=conversion.environment,
        strategy=conversion.strategy,
        mutated=mutated,
        extra=SCALE_EXTRA,
    )
    hpas = hpas_for(neighbours.hpas, name)
    if hpas:
        why = f"Rollout {name} is sized by HPA {name_of(hpas[0])}"
        return replace(
            plan,
            reason=f"{why}; scale of Deployment {name} to {wanted} not applied",
            warnings=(f"{why}: nothing scaled; change the HPA's min/maxReplicas instead",),
        )
    rollout = conversion.rollout
    sized = {**rollout, "spec": {**rollout["spec"], "replicas": wanted}}
    return replace(
        plan,
        changes=(sized,),
        warnings=(
            f"Deployment {name} is managed by Rollout {name}: scaled the Rollout to {wanted}; "
            f"the Deployment stays at {current}",
        ),
    )


def plan_scale_refused(request: AdmissionRequest, why: str) -> AdmissionPlan:
    """The plan for a Scale of a converted Deployment by a user who may not scale its
    Rollout (``why``: the permission check's answer): denied, naming the command that
    scales the Rollout. Admitting it would start pods of the Deployment beside the
    Rollout's; admitting it patched back would drop the scale without a word."""
    who = request_username(request) or "?"
    namespace = request.get("namespace", "")
    name = request.get("name", "")
    wanted = scale_replicas(request.get("object"))
    count = "N" if wanted is None else str(wanted)
    message = (
        f"{who} may not scale rollouts.argoproj.io/{name} in namespace {namespace} ({why}); "
        f"Deployment {name} is managed by Rollout {name}: "
        f"kubectl scale rollout {name} --replicas={count}"
    )
    return AdmissionPlan("deny", message, extra=SCALE_EXTRA)


def decide_mutation(
    request: AdmissionRequest,
    reader: ClusterReader,
    policy: Policy,
    *,
    keys: Keys,
    rollout_schema: RolloutSchema | None = None,
) -> AdmissionPlan:
    """The plan for a CREATE or UPDATE of any kind the mutating webhook is sent; with
    ``rollout_schema``, a Deployment whose Rollout it refuses is not converted."""
    kind = request["kind"]["kind"]
    if is_deployment_scale(request):
        return decide_deployment_scale(request, reader, policy, keys=keys)
    if kind == "Deployment":
        return decide_deployment(request, reader, policy, keys=keys, rollout_schema=rollout_schema)
    if kind == "HorizontalPodAutoscaler":
        return decide_hpa(request, reader, policy, keys=keys)
    if kind in ROUTE_KINDS:
        return decide_route(request, reader, policy, keys=keys)
    return AdmissionPlan("skip", f"{kind} is not a kind this webhook changes")
