"""The one place the tests build their objects: Kubernetes objects as dicts, AdmissionReview
requests, audit records, and the JSON merge patch the fakes apply.

Every builder takes the name and namespace first and the rest as keywords; the defaults make
the unit tests' objects (namespace ``prod``, a RollingUpdate Deployment of three replicas,
its Service ``web`` on port 80). A tier with other defaults (the server tests' ``shop``, the
end-to-end tier's images) keeps a thin function of its own that calls these.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from webhook.core.audit import (
    GENESIS,
    RECORD_KIND,
    ChangeOutcome,
    DecisionFacts,
    build_record,
    canonical_json,
    record_hash,
)
from webhook.core.review import UserInfo
from webhook.server.audit_trail import AuditTrail

Obj = dict[str, Any]

ENABLED = "rollout-webhook.io/enabled"
OPTED_IN: Mapping[str, str] = {ENABLED: "true"}
"""The labels that opt a Deployment in."""
ROLLING_UPDATE: Mapping[str, Any] = {
    "type": "RollingUpdate",
    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
}
"""The strategy ``deployment`` writes unless told otherwise (``strategy=None``: none)."""
HTTP_PORTS: tuple[Mapping[str, Any], ...] = ({"name": "http", "port": 80, "targetPort": 8080},)
GATEWAY: tuple[Mapping[str, Any], ...] = ({"name": "gw", "namespace": "infra"},)
ROLLOUT_API = "argoproj.io/v1alpha1"
POD_TEMPLATE_HASH = "rollouts-pod-template-hash"


def merge(target: Obj, patch: Mapping[str, Any]) -> Obj:
    """``target`` with a JSON merge patch applied (RFC 7386), as the API server applies one;
    neither argument is changed."""
    out = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping):  # RFC 7386: nulls inside a new object add nothing
            current = out.get(key)
            out[key] = merge(current if isinstance(current, dict) else {}, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def server_side_apply(current: Obj, manifest: Mapping[str, Any]) -> Obj:
    """What the API server stores for a server-side apply of ``manifest`` under the
    product's one field manager, as far as the fakes need it: a generated object (labelled
    ``rollout-webhook.io/managed``, applied whole) loses what the manifest no longer sends,
    except what others own (the pod-template hash Argo adds to a Service's selector);
    objects others own (applied in part) are merged."""
    result = merge(current, manifest)
    metadata = manifest.get("metadata") or {}
    if (metadata.get("labels") or {}).get("rollout-webhook.io/managed") != "true":
        return result
    result["spec"] = copy.deepcopy(dict(manifest.get("spec") or {}))
    result["metadata"]["labels"] = dict(metadata.get("labels") or {})
    result["metadata"]["annotations"] = dict(metadata.get("annotations") or {})
    if "ownerReferences" in metadata:
        result["metadata"]["ownerReferences"] = copy.deepcopy(metadata["ownerReferences"])
    pinned = ((current.get("spec") or {}).get("selector") or {}).get(POD_TEMPLATE_HASH)
    if manifest.get("kind") == "Service" and pinned:
        result["spec"]["selector"][POD_TEMPLATE_HASH] = pinned
    return result


def deployment(
    name: str = "web",
    ns: str = "prod",
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    replicas: int | None = 3,
    pod_labels: Mapping[str, str] | None = None,
    strategy: Mapping[str, Any] | None = ROLLING_UPDATE,
    image: str = "example/app:1",
    uid: str | None = None,
    grace_period: int | None = None,
) -> Obj:
    """A Deployment whose pods carry ``pod_labels`` (default ``app: <name>``), selected by
    the same labels. ``replicas=None`` and ``strategy=None`` leave those fields out;
    ``grace_period`` sets the pods' terminationGracePeriodSeconds."""
    pods = dict(pod_labels or {"app": name})
    meta: Obj = {"name": name, "namespace": ns, "labels": dict(labels or {})}
    if annotations:
        meta["annotations"] = dict(annotations)
    if uid:
        meta["uid"] = uid
    pod_spec: Obj = {"containers": [{"name": "app", "image": image}]}
    if grace_period is not None:
        pod_spec["terminationGracePeriodSeconds"] = grace_period
    spec: Obj = {}
    if replicas is not None:
        spec["replicas"] = replicas
    spec["selector"] = {"matchLabels": dict(pods)}
    if strategy is not None:
        spec["strategy"] = copy.deepcopy(dict(strategy))
    spec["template"] = {"metadata": {"labels": dict(pods)}, "spec": pod_spec}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}


def opted_in(name: str = "web", ns: str = "prod", **kw: Any) -> Obj:
    """A ``deployment`` labelled in (its other ``labels`` kept)."""
    labels = {**OPTED_IN, **kw.pop("labels", {})}
    return deployment(name, ns, labels=labels, **kw)


def namespace(name: str, labels: Mapping[str, str] | None = None) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": dict(labels or {})},
    }


def service(
    name: str = "web",
    ns: str = "prod",
    selector: Mapping[str, str] | None = None,
    *,
    ports: Iterable[Mapping[str, Any]] = HTTP_PORTS,
) -> Obj:
    """A Service selecting ``selector`` (default ``app: <name>``)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "selector": dict(selector) if selector is not None else {"app": name},
            "ports": [dict(p) for p in ports],
        },
    }


def hpa(
    target: str = "web",
    ns: str = "prod",
    kind: str = "Deployment",
    lo: int = 2,
    hi: int = 10,
    *,
    name: str | None = None,
) -> Obj:
    """An HPA scaling the Deployment (or Rollout, by ``kind``) ``target``; named as its
    target unless ``name`` says otherwise."""
    api = "apps/v1" if kind == "Deployment" else ROLLOUT_API
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name or target, "namespace": ns},
        "spec": {
            "scaleTargetRef": {"apiVersion": api, "kind": kind, "name": target},
            "minReplicas": lo,
            "maxReplicas": hi,
        },
    }


def backend_rule(*services: str, port: int = 80) -> Obj:
    """An HTTPRoute rule sending traffic to these Services, with no match."""
    return {"backendRefs": [{"name": s, "port": port} for s in services]}


def httproute(
    name: str = "web",
    ns: str = "prod",
    rules: list[Obj] | None = None,
    *,
    parents: Iterable[Mapping[str, Any]] | None = GATEWAY,
) -> Obj:
    """An HTTPRoute (default: every path to Service ``web``); ``parents=None`` leaves out
    its parentRefs."""
    spec: Obj = {}
    if parents is not None:
        spec["parentRefs"] = [dict(p) for p in parents]
    spec["rules"] = (
        rules
        if rules is not None
        else [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [{"name": "web", "port": 80}],
            }
        ]
    )
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def virtualservice(
    name: str = "web",
    ns: str = "prod",
    http: list[Obj] | None = None,
    *,
    hosts: Iterable[str] = ("web.example.com",),
) -> Obj:
    """An Istio VirtualService (default: one route to host ``web``, port 80)."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "hosts": list(hosts),
            "http": http
            if http is not None
            else [{"route": [{"destination": {"host": "web", "port": {"number": 80}}}]}],
        },
    }


def destinationrule(
    name: str = "web",
    ns: str = "prod",
    *,
    host: str = "web",
    subsets: Iterable[str] = ("stable", "canary"),
    app: str = "web",
) -> Obj:
    """An Istio DestinationRule for ``host`` with these subsets, each selecting the app."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "host": host,
            "subsets": [{"name": s, "labels": {"app": app}} for s in subsets],
        },
    }


def subset_virtualservice(
    name: str = "web", ns: str = "prod", subsets: Iterable[str] = ("stable",)
) -> Obj:
    """A VirtualService whose one route sends to subsets of host ``web`` (the first at 100)."""
    route = [
        {
            "destination": {"host": "web", "subset": s, "port": {"number": 80}},
            "weight": 100 if i == 0 else 0,
        }
        for i, s in enumerate(subsets)
    ]
    return virtualservice(name, ns, http=[{"route": route}])


def rollout(
    name: str = "web",
    ns: str = "prod",
    *,
    replicas: int = 3,
    strategy: Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Obj:
    """A Rollout running the pods of Deployment ``name`` (workloadRef); a canary of one
    20% step unless ``strategy`` says otherwise."""
    meta: Obj = {"name": name, "namespace": ns}
    if annotations:
        meta["annotations"] = dict(annotations)
    return {
        "apiVersion": ROLLOUT_API,
        "kind": "Rollout",
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "strategy": copy.deepcopy(dict(strategy))
            if strategy is not None
            else {"canary": {"steps": [{"setWeight": 20}]}},
        },
    }


# --- admission requests -----------------------------------------------------------------------

ALICE: UserInfo = {"username": "alice", "uid": "u-alice", "groups": ["dev", "system:authenticated"]}
"""The user of ``admission_request`` unless told otherwise."""


def admission_request(
    obj: Mapping[str, Any] | None,
    *,
    uid: str = "0a1b2c3d-0000-4000-8000-000000000001",
    operation: str = "CREATE",
    user: UserInfo | None = None,
    dry_run: bool = False,
    old: Mapping[str, Any] | None = None,
    kind: tuple[str, str, str] = ("apps", "v1", "Deployment"),
    namespace: str | None = None,
) -> dict[str, Any]:
    """The ``request`` of an AdmissionReview for ``obj`` (``old`` on UPDATE and DELETE), its
    namespace and name taken from the object unless ``namespace`` is given (a CREATE whose
    body has none); ``kind`` is (group, version, kind)."""
    source = obj or old or {}
    meta = source.get("metadata") or {}
    request: dict[str, Any] = {
        "uid": uid,
        "kind": {"group": kind[0], "version": kind[1], "kind": kind[2]},
        "resource": {"group": kind[0], "version": kind[1], "resource": kind[2].lower() + "s"},
        "namespace": meta.get("namespace", "") if namespace is None else namespace,
        "name": meta.get("name", ""),
        "operation": operation,
        "userInfo": dict(user if user is not None else ALICE),
        "object": dict(obj) if obj is not None else None,
        "oldObject": dict(old) if old is not None else None,
        "dryRun": dry_run,
    }
    return request


def scale(name: str = "web", ns: str = "prod", replicas: int = 3) -> Obj:
    """The autoscaling/v1 Scale of Deployment ``name`` as the API server sends it: the
    Deployment's name and namespace only, and ``spec.replicas`` left out at 0 (omitempty)."""
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}"},
        "spec": {"replicas": replicas} if replicas else {},
        "status": {"replicas": replicas, "selector": f"app={name}"},
    }


def scale_request(
    name: str = "web", ns: str = "prod", *, replicas: int, current: int, **kw: Any
) -> dict[str, Any]:
    """The request of ``kubectl scale deployment NAME --replicas=REPLICAS`` for a Deployment
    at ``current``: an UPDATE of the ``deployments/scale`` subresource, whose object is a
    Scale (kubernetes/kubernetes#84530: only the subresource's admission runs)."""
    request = admission_request(
        scale(name, ns, replicas),
        operation="UPDATE",
        old=scale(name, ns, current),
        kind=("autoscaling", "v1", "Scale"),
        **kw,
    )
    deployments = {"group": "apps", "version": "v1", "resource": "deployments"}
    request.update(
        resource=deployments,
        subResource="scale",
        requestKind={"group": "autoscaling", "version": "v1", "kind": "Scale"},
        requestResource=deployments,
        requestSubResource="scale",
    )
    return request


# --- audit records ----------------------------------------------------------------------------

AUDIT_START = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
"""When the first record of ``audit_lines`` was written; each next one a minute later."""
AUDIT_PATCH = [
    {
        "op": "add",
        "path": "/metadata/annotations",
        "value": {"rollout-webhook.io/rollout-name": "web"},
    },
    {"op": "replace", "path": "/spec/replicas", "value": 0},
]


def decision_facts(uid: str, **overrides: Any) -> DecisionFacts:
    """The facts of one admission decision: a converted Deployment shop/web, by default."""
    values: dict[str, Any] = {
        "uid": uid,
        "user": "alice",
        "operation": "CREATE",
        "kind": "Deployment",
        "namespace": "shop",
        "name": "web",
        "dry_run": False,
        "decision": "convert",
        "reason": "opted in",
        "environment": "prod",
        "strategy": "canary",
        "policy_name": "rollout-system/rollout-webhook-policy",
        "policy_resource_version": "42",
        "policy_sha256": "ab" * 32,
        "patch": AUDIT_PATCH,
        "changes_wanted": (ChangeOutcome("Rollout", "shop", "web"),),
        "changes_made": (ChangeOutcome("Rollout", "shop", "web", result="applied"),),
        "warnings": ("no Service selects the pods",),
        "latency_seconds": 0.0021,
    }
    values.update(overrides)
    return DecisionFacts(**values)


def audit_lines(*items: DecisionFacts | tuple[DecisionFacts, str]) -> list[str]:
    """An audit trail of these records (a ``(facts, kind)`` pair for another kind), chained
    from the genesis hash, one line each as the sink writes them."""
    prev = GENESIS
    lines = []
    for i, entry in enumerate(items):
        item, kind = entry if isinstance(entry, tuple) else (entry, RECORD_KIND)
        at = AUDIT_START + dt.timedelta(minutes=i)
        record = build_record(item, at=at, prev=prev, version="0.1.0", kind=kind)
        lines.append(canonical_json(record))
        prev = record_hash(record)
    return lines


def recovered_audit_lines(tmp_path: Path) -> list[str]:
    """A trail of three decisions whose writer crashed in mid-record and started again:
    line 4 is torn, line 5 is its recovery record."""
    path = tmp_path / "audit.jsonl"
    lines = audit_lines(decision_facts("a"), decision_facts("b"), decision_facts("c"))
    path.write_text("\n".join(lines) + "\n" + lines[0][:25])
    AuditTrail(file=path, stream=io.StringIO(), clock=lambda: AUDIT_START).close()
    return path.read_text().splitlines()
