"""Small builders for Kubernetes objects as dicts, so tables of cases stay readable."""

from __future__ import annotations

import datetime as dt
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

Obj = dict[str, Any]


def deployment(
    name: str = "web",
    ns: str = "prod",
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    replicas: int = 3,
    pod_labels: dict[str, str] | None = None,
    strategy: Obj | None = None,
    uid: str | None = None,
) -> Obj:
    pods = pod_labels or {"app": name}
    meta: Obj = {"name": name, "namespace": ns, "labels": dict(labels or {})}
    if annotations:
        meta["annotations"] = dict(annotations)
    if uid:
        meta["uid"] = uid
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(pods)},
            "strategy": strategy
            or {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "template": {
                "metadata": {"labels": dict(pods)},
                "spec": {"containers": [{"name": "app", "image": "example/app:1"}]},
            },
        },
    }


def opted_in(name: str = "web", ns: str = "prod", **kw: Any) -> Obj:
    labels = {"rollout-webhook.io/enabled": "true", **kw.pop("labels", {})}
    return deployment(name, ns, labels=labels, **kw)


def namespace(name: str, labels: dict[str, str] | None = None) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels or {}},
    }


def service(name: str = "web", ns: str = "prod", selector: dict[str, str] | None = None) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "selector": selector if selector is not None else {"app": name},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
        },
    }


def hpa(
    target: str = "web", ns: str = "prod", kind: str = "Deployment", lo: int = 2, hi: int = 10
) -> Obj:
    api = "apps/v1" if kind == "Deployment" else "argoproj.io/v1alpha1"
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": target, "namespace": ns},
        "spec": {
            "scaleTargetRef": {"apiVersion": api, "kind": kind, "name": target},
            "minReplicas": lo,
            "maxReplicas": hi,
        },
    }


def httproute(name: str = "web", ns: str = "prod", rules: list[Obj] | None = None) -> Obj:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "parentRefs": [{"name": "gw", "namespace": "infra"}],
            "rules": rules
            if rules is not None
            else [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [{"name": "web", "port": 80}],
                }
            ],
        },
    }


def virtualservice(name: str = "web", ns: str = "prod", http: list[Obj] | None = None) -> Obj:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "hosts": ["web.example.com"],
            "http": http
            if http is not None
            else [{"route": [{"destination": {"host": "web", "port": {"number": 80}}}]}],
        },
    }


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
