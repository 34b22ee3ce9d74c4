"""The writes that follow an admission, decided from the stored objects alone. Pure.

An AdmissionReview is a claim, not a fact: anything that reaches the admission port can
POST one, with a made-up user, another namespace's object, or a copy of an old review.
So the body of a review decides only the answer (the patch of the object under review)
and *which* object to look at afterwards. What is written (the Rollout, the generated
Services, the re-targeted HPAs, the routes' canary backends) is planned again, on a write
thread, from the watch-fed caches, once they show that the API server stored what the
admission answered:

- a Deployment: stored carrying the product's ``rollout-name`` (which only an admission
  patch or the reconciler writes) and no ``refused`` marker, at a version later than the
  one the review was based on; then its conversion is planned from that stored object, as
  the reconciler would, with two things the stored object records of its admission: the
  size asked for (``original-replicas``) and the policy version that chose its strategy;
- an HPA: stored aimed at the Rollout; the Rollout of its converted Deployment follows;
- an HTTPRoute / VirtualService: stored with its canary backends (the admission patch);
  the Rollouts and Services of the converted Deployments behind it follow;
- a Scale: the one request whose effect is not stored (its count goes to the Rollout and
  the Deployment keeps its own), see ``_scale_writes``.

A forged or replayed review therefore leads, at most, to the writes the stored objects
already call for, which the reconciler would make anyway: it changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

from webhook.core.admission import (
    ROUTE_KINDS,
    WRITE_PERMISSIONS,
    decide_deployment_scale,
    decide_route,
    deployment_neighbours,
)
from webhook.core.cluster import ClusterReader, Permission
from webhook.core.convert import Conversion, brings_policy_strategy, plan_conversion
from webhook.core.crd_schema import RolloutSchema
from webhook.core.hpa import hpas_for, targets
from webhook.core.keys import Keys
from webhook.core.objects import Obj, annotations_of, meta, spec_of
from webhook.core.policy import Policy
from webhook.core.references import names
from webhook.core.review import AdmissionRequest, is_deployment_scale, request_name

SCALE = "Deployment/scale"


@dataclass(frozen=True)
class WriteScope:
    """What the writes of one admitted request are looked up by: the kind, namespace and
    name of the object under review (the namespace is the request's, the one the
    requester's rights were checked in), the version the request was based on (an UPDATE's
    ``oldObject``), and for a Scale the Scale itself."""

    kind: str
    namespace: str
    name: str
    operation: str
    old_version: str | None = None
    scale: Mapping[str, Any] | None = None
    current_at_admission: bool = False
    """A Scale: whether the cached Deployment had the Scale's resourceVersion when it was
    admitted (it may change again before the write thread looks)."""


def scope_of(request: AdmissionRequest, reader: ClusterReader | None = None) -> WriteScope:
    kind = SCALE if is_deployment_scale(request) else request["kind"]["kind"]
    old = request.get("oldObject") or {}
    version = meta(old).get("resourceVersion") if request["operation"] == "UPDATE" else None
    namespace, name = request.get("namespace", ""), request_name(request)
    scale = request.get("object") if kind == SCALE else None
    cached = reader.get("Deployment", namespace, name) if scale and reader else None
    return WriteScope(
        kind=kind,
        namespace=namespace,
        name=name,
        operation=request["operation"],
        old_version=None if version is None else str(version),
        scale=scale,
        current_at_admission=cached is not None
        and meta(cached).get("resourceVersion") == meta(scale or {}).get("resourceVersion"),
    )


@dataclass(frozen=True)
class StoredWrites:
    """``wait``: the stored objects do not show the admission yet, look again later;
    ``write``: make ``changes``; ``none``: nothing to write, and why."""

    state: Literal["wait", "write", "none"]
    reason: str
    changes: tuple[Obj, ...] = ()


def _wait_or(expired: bool, reason: str) -> StoredWrites:
    return StoredWrites("none" if expired else "wait", reason)


def _none(reason: str) -> StoredWrites:
    return StoredWrites("none", reason)


def permissions_needed(changes: Iterable[Mapping[str, Any]]) -> tuple[Permission, ...]:
    """The rights of the requester that writing ``changes`` on their behalf takes."""
    kinds = {str(change.get("kind", "")) for change in changes}
    unknown = kinds - WRITE_PERMISSIONS.keys()
    if unknown:
        raise ValueError(f"no permission known for writing {', '.join(sorted(unknown))}")
    return tuple(sorted({WRITE_PERMISSIONS[kind] for kind in kinds}))


def without_kinds(changes: tuple[Obj, ...], refused: Iterable[Permission]) -> tuple[Obj, ...]:
    """``changes`` less those needing a right in ``refused``: the writer never does for a
    requester more than admission found them allowed to."""
    gone = set(refused)
    return tuple(c for c in changes if WRITE_PERMISSIONS[str(c.get("kind", ""))] not in gone)


def stored_conversion(
    deployment: Mapping[str, Any],
    reader: ClusterReader,
    policy: Policy,
    *,
    keys: Keys,
    rollout_schema: RolloutSchema | None = None,
) -> Conversion:
    """The conversion of a stored, converted Deployment, as its last admission decided it.

    The reconciler's plan of the same object differs in two things only an admission
    decides, and the admitted object records both: the policy version whose strategy it
    took (so under ``rolloutUpdates: nextChange`` an admitted change brings in the new
    steps, while a stored object that kept the old ones keeps them), and the size asked
    for (``original-replicas``: a GitOps sync or ``kubectl apply`` of a new count goes to
    the Rollout, argo-rollouts#4935), unless an HPA owns the size.
    """
    name = str(meta(deployment).get("name", ""))
    namespace = str(meta(deployment).get("namespace", ""))
    neighbours = deployment_neighbours(reader, namespace, deployment)
    conversion = plan_conversion(
        deployment,
        neighbours,
        policy,
        operation="UPDATE",
        old_deployment=deployment,
        keys=keys,
        update_strategy=brings_policy_strategy(deployment, policy, keys),
        rollout_schema=rollout_schema,
    )
    recorded = annotations_of(deployment).get(keys.original_replicas, "")
    rollout = conversion.rollout
    if rollout is None or not recorded.isdigit() or hpas_for(neighbours.hpas, name):
        return conversion
    sized = {**rollout, "spec": {**spec_of(rollout), "replicas": int(recorded)}}
    return replace(conversion, rollout=sized)


def _converted(deployment: Mapping[str, Any] | None, name: str, keys: Keys) -> str | None:
    """None when the stored Deployment is converted and not refused; else why not."""
    if deployment is None:
        return "is not stored"
    annotations = annotations_of(deployment)
    if keys.refused in annotations:
        return f"is stored refused ({annotations[keys.refused]})"
    if annotations.get(keys.rollout_name) != name:
        return "is not stored converted"
    return None


def _conversion_changes(conversion: Conversion) -> tuple[Obj, ...]:
    rollout = () if conversion.rollout is None else (conversion.rollout,)
    return (*rollout, *conversion.services, *conversion.hpas, *conversion.routes)


def _deployment_writes(
    scope: WriteScope,
    reader: ClusterReader,
    policy: Policy,
    keys: Keys,
    schema: RolloutSchema | None,
    expired: bool,
) -> StoredWrites:
    where = f"Deployment {scope.namespace}/{scope.name}"
    stored = reader.get("Deployment", scope.namespace, scope.name)
    if stored is None:
        return _wait_or(expired, f"{where} is not stored (refused by a later admission step?)")
    not_yet = _converted(stored, scope.name, keys)
    if not_yet is not None:
        return _wait_or(expired, f"{where} {not_yet}")
    if (
        scope.old_version is not None
        and meta(stored).get("resourceVersion") == scope.old_version
        and not expired
    ):
        return StoredWrites("wait", f"{where} is stored as it was before the request")
    conversion = stored_conversion(stored, reader, policy, keys=keys, rollout_schema=schema)
    if not conversion.converted:
        return _none(f"{where}: {conversion.reason}")
    return StoredWrites("write", f"{where} is stored converted", _conversion_changes(conversion))


def _hpa_writes(
    scope: WriteScope,
    reader: ClusterReader,
    policy: Policy,
    keys: Keys,
    schema: RolloutSchema | None,
    expired: bool,
) -> StoredWrites:
    where = f"HorizontalPodAutoscaler {scope.namespace}/{scope.name}"
    hpa = reader.get("HorizontalPodAutoscaler", scope.namespace, scope.name)
    target = str((spec_of(hpa or {}).get("scaleTargetRef") or {}).get("name", ""))
    if hpa is None or not targets(hpa, "Rollout", target):
        return _wait_or(expired, f"{where} is not stored scaling a Rollout")
    deployment = reader.get("Deployment", scope.namespace, target)
    not_converted = _converted(deployment, target, keys)
    if deployment is None or not_converted is not None:
        return _none(f"Deployment {scope.namespace}/{target} {not_converted}")
    conversion = stored_conversion(deployment, reader, policy, keys=keys, rollout_schema=schema)
    if conversion.rollout is None:
        return _none(f"Deployment {scope.namespace}/{target}: {conversion.reason}")
    why = f"{where} is stored scaling Rollout {target}"
    return StoredWrites("write", why, (conversion.rollout,))


def _stored_request(kind: str, obj: Mapping[str, Any], scope: WriteScope) -> AdmissionRequest:
    """A request for the stored object, as if it were sent again unchanged."""
    return cast(
        AdmissionRequest,
        {
            "uid": "stored",
            "kind": {"group": "", "version": "", "kind": kind},
            "operation": "UPDATE",
            "namespace": scope.namespace,
            "name": scope.name,
            "object": obj,
            "oldObject": obj,
        },
    )


def _route_writes(
    scope: WriteScope,
    reader: ClusterReader,
    policy: Policy,
    keys: Keys,
    schema: RolloutSchema | None,
    expired: bool,
) -> StoredWrites:
    """Once the route is stored with every canary backend the product adds (planning it
    again finds nothing to add), the Rollouts and Services of the converted Deployments
    whose Rollout names it."""
    where = f"{scope.kind} {scope.namespace}/{scope.name}"
    route = reader.get(scope.kind, scope.namespace, scope.name)
    if route is None:
        return _wait_or(expired, f"{where} is not stored")
    again = decide_route(_stored_request(scope.kind, route, scope), reader, policy, keys=keys)
    if again.decision == "convert":
        return _wait_or(expired, f"{where} is not stored with its canary backends")
    changes: list[Obj] = []
    for deployment in reader.list("Deployment", scope.namespace):
        name = str(meta(deployment).get("name", ""))
        if _converted(deployment, name, keys) is not None:
            continue
        conversion = stored_conversion(deployment, reader, policy, keys=keys, rollout_schema=schema)
        if conversion.rollout is not None and names(conversion.rollout, scope.kind, scope.name):
            changes.extend((conversion.rollout, *conversion.services))
    if not changes:
        return _none(f"{where} sends no traffic to a converted Deployment")
    return StoredWrites("write", f"{where} is stored with its canary backends", tuple(changes))


def _scale_writes(
    scope: WriteScope, reader: ClusterReader, policy: Policy, keys: Keys, expired: bool
) -> StoredWrites:
    """A Scale of a converted Deployment changes nothing stored (the Deployment keeps its
    count; the count asked for goes to the Rollout), so nothing stored can confirm it. It
    is written only for the Deployment the Scale was made from, as stored: the same uid (a
    random UUID a forger must have read) and the same resourceVersion, now or when it was
    admitted (a replay made after any change of the Deployment is stale; a change made
    just after a genuine Scale does not lose it). The Rollout is planned from the stored
    objects; only its count comes from the request. Mutual TLS (``serve --client-ca``)
    is what makes the request itself trustworthy."""
    where = f"Deployment {scope.namespace}/{scope.name}"
    scale = scope.scale or {}
    stored = reader.get("Deployment", scope.namespace, scope.name)
    not_converted = _converted(stored, scope.name, keys)
    if stored is None or not_converted is not None:
        return _none(f"{where} {not_converted}")
    if meta(stored).get("uid") != meta(scale).get("uid"):
        return _none(f"the Scale is not of {where} as stored (its uid differs)")
    current = meta(stored).get("resourceVersion") == meta(scale).get("resourceVersion")
    if not (current or scope.current_at_admission):
        return _wait_or(
            expired,
            f"the Scale is not of {where} as stored (its resourceVersion differs: stale)",
        )
    request = _stored_request("Scale", scale, scope)
    request["oldObject"] = None
    request["resource"] = {"group": "apps", "version": "v1", "resource": "deployments"}
    request["subResource"] = "scale"
    plan = decide_deployment_scale(request, reader, policy, keys=keys)
    if not plan.changes:
        return _none(f"{where}: {plan.reason}")
    return StoredWrites("write", f"{where} is stored as the Scale saw it", plan.changes)


def stored_writes(
    scope: WriteScope,
    reader: ClusterReader,
    policy: Policy,
    *,
    keys: Keys,
    rollout_schema: RolloutSchema | None = None,
    expired: bool = False,
) -> StoredWrites:
    """What to write after the admission ``scope`` names, from the stored objects.

    ``expired``: the wait for the stored objects is over; a ``wait`` becomes a ``none``
    (the reconciler takes it from there), except an UPDATE stored unchanged (a request
    that changed nothing), whose writes are planned from the object as it is.
    """
    if scope.kind == SCALE:
        return _scale_writes(scope, reader, policy, keys, expired)
    if scope.kind == "Deployment":
        return _deployment_writes(scope, reader, policy, keys, rollout_schema, expired)
    if scope.kind == "HorizontalPodAutoscaler":
        return _hpa_writes(scope, reader, policy, keys, rollout_schema, expired)
    if scope.kind in ROUTE_KINDS:
        return _route_writes(scope, reader, policy, keys, rollout_schema, expired)
    return _none(f"{scope.kind} leads to no writes")
