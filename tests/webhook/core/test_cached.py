"""What the caches keep of each kind (``cached_form``), and that every reader of the caches
decides the same from that form as from the whole objects the API server stores."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.builders import (
    admission_request,
    hpa,
    httproute,
    namespace,
    opted_in,
    rollout,
    scale_request,
    service,
)
from webhook.core.actions import Apply, ClusterAction
from webhook.core.admission import decide_mutation, neighbours_of
from webhook.core.cached import LAST_APPLIED, cached_form
from webhook.core.convert import Neighbours, plan_conversion
from webhook.core.keys import DEFAULT_KEYS
from webhook.core.policy import builtin_policy
from webhook.core.reconcile import plan_reconcile
from webhook.core.review import AdmissionPlan
from webhook.core.stored_writes import SCALE, WriteScope, scope_of, stored_writes
from webhook.kube.view import MemoryClusterView
from webhook.kube.writer import apply_body

POLICY = builtin_policy()
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
MANAGED = [{"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:spec": {}}}]
POD_SPEC = {"containers": [{"name": "app", "image": "example/app:1", "ports": []}]}
META = {
    "name": "web",
    "namespace": "prod",
    "uid": "u-1",
    "resourceVersion": "7",
    "generation": 2,
    "labels": {"app": "web"},
    "annotations": {"team": "shop", LAST_APPLIED: "{}"},
    "managedFields": MANAGED,
}
KEPT_META = {k: v for k, v in META.items() if k != "managedFields"} | {
    "annotations": {"team": "shop"}
}


@pytest.mark.parametrize(
    ("kind", "obj", "kept"),
    [
        pytest.param(
            "Deployment",
            {
                "metadata": META,
                "spec": {
                    "replicas": 3,
                    "selector": {"matchLabels": {"app": "web"}},
                    "strategy": {"type": "RollingUpdate"},
                    "minReadySeconds": 5,
                    "template": {
                        "metadata": {"labels": {"app": "web"}, "annotations": {"a": "b"}},
                        "spec": POD_SPEC,
                    },
                },
                "status": {"availableReplicas": 3, "observedGeneration": 2, "conditions": [{}]},
            },
            {
                "metadata": KEPT_META,
                "spec": {
                    "replicas": 3,
                    "selector": {"matchLabels": {"app": "web"}},
                    "strategy": {"type": "RollingUpdate"},
                    "minReadySeconds": 5,
                    "template": {"metadata": {"labels": {"app": "web"}}},
                },
                "status": {"availableReplicas": 3, "observedGeneration": 2},
            },
            id="deployment: no pod spec, no template annotations, two status fields",
        ),
        pytest.param(
            "Deployment",
            {"metadata": {"name": "web"}, "spec": {"template": {"spec": POD_SPEC}}},
            {"metadata": {"name": "web"}, "spec": {"template": {}}},
            id="deployment whose template has no labels",
        ),
        pytest.param(
            "Rollout",
            {
                "metadata": META,
                "spec": {"replicas": 3, "strategy": {"canary": {"steps": [{"setWeight": 5}]}}},
                "status": {"phase": "Healthy", "availableReplicas": 3, "stableRS": "abc"},
            },
            {
                "metadata": KEPT_META,
                "spec": {"replicas": 3, "strategy": {"canary": {"steps": [{"setWeight": 5}]}}},
                "status": {"phase": "Healthy", "availableReplicas": 3},
            },
            id="rollout: whole spec, phase and available replicas",
        ),
        pytest.param(
            "Service",
            {
                "metadata": META,
                "spec": {
                    "type": "ClusterIP",
                    "selector": {"app": "web"},
                    "ports": [{"port": 80, "targetPort": 8080}],
                    "clusterIP": "10.0.0.1",
                    "clusterIPs": ["10.0.0.1"],
                    "ipFamilies": ["IPv4"],
                    "sessionAffinity": "None",
                },
                "status": {"loadBalancer": {}},
            },
            {
                "metadata": KEPT_META,
                "spec": {
                    "type": "ClusterIP",
                    "selector": {"app": "web"},
                    "ports": [{"port": 80, "targetPort": 8080}],
                },
            },
            id="service: type, selector and ports",
        ),
        pytest.param(
            "HorizontalPodAutoscaler",
            {
                "metadata": META,
                "spec": {"scaleTargetRef": {"name": "web"}, "metrics": [{"type": "Resource"}]},
                "status": {"currentReplicas": 3, "conditions": [{}]},
            },
            {
                "metadata": KEPT_META,
                "spec": {"scaleTargetRef": {"name": "web"}, "metrics": [{"type": "Resource"}]},
            },
            id="hpa: whole spec, no status",
        ),
        pytest.param(
            "HTTPRoute",
            {"metadata": META, "spec": {"rules": [{}], "hostnames": ["x"]}, "status": {"p": 1}},
            {"metadata": KEPT_META, "spec": {"rules": [{}], "hostnames": ["x"]}},
            id="route: whole spec, no status",
        ),
        pytest.param(
            "Namespace",
            {"metadata": META, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "x"}},
            {"metadata": KEPT_META},
            id="namespace: metadata only",
        ),
        pytest.param(
            "AnalysisTemplate",
            {"metadata": {"name": "t", "managedFields": MANAGED}, "spec": {"metrics": [{}]}},
            {"metadata": {"name": "t"}, "spec": {"metrics": [{}]}},
            id="analysis template: whole spec",
        ),
        pytest.param(
            "Deployment",
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}},
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}},
            id="an object with no spec and no status stays as it is",
        ),
    ],
)
def test_cached_form(kind: str, obj: dict[str, Any], kept: dict[str, Any]) -> None:
    before = copy.deepcopy(obj)
    assert cached_form(kind, obj) == kept
    assert obj == before  # the object handed in is never changed


# --- the readers decide the same from the cached form -----------------------------------------


def _as_stored(obj: Mapping[str, Any], serial: int) -> dict[str, Any]:
    """``obj`` as the API server stores and a watch delivers it: managedFields, kubectl's
    last-applied copy, and the fields servers and controllers add."""
    stored = copy.deepcopy(dict(obj))
    meta = stored.setdefault("metadata", {})
    meta.setdefault("uid", f"uid-{meta['name']}")
    meta.setdefault("resourceVersion", str(100 + serial))
    meta.setdefault("creationTimestamp", "2029-12-31T00:00:00Z")
    meta["managedFields"] = MANAGED
    meta["annotations"] = {**(meta.get("annotations") or {}), LAST_APPLIED: json.dumps(obj)}
    kind = stored["kind"]
    spec = stored.get("spec") or {}
    if kind == "Deployment":
        spec["template"]["spec"] = copy.deepcopy(POD_SPEC)
        stored["status"] = {
            "replicas": spec.get("replicas", 1),
            "availableReplicas": spec.get("replicas", 1),
            "observedGeneration": meta.get("generation", 1),
            "conditions": [{"type": "Available", "status": "True"}],
        }
    elif kind == "Service":
        spec.update(clusterIP="10.0.0.9", clusterIPs=["10.0.0.9"], sessionAffinity="None")
        stored["status"] = {"loadBalancer": {}}
    elif kind == "Rollout":
        stored["status"] = {
            "phase": "Healthy",
            "availableReplicas": spec.get("replicas", 1),
            "stableRS": "5d8f",
            "conditions": [{"type": "Healthy", "status": "True"}],
        }
    elif kind in ("HorizontalPodAutoscaler", "HTTPRoute"):
        stored["status"] = {"conditions": [{"type": "Ready", "status": "True"}]}
    return stored


def _converted(name: str, deployment: dict[str, Any]) -> list[dict[str, Any]]:
    """The objects of a service as stored once converted."""
    svc, scaler, route = service(name), hpa(name), httproute(name)
    conversion = plan_conversion(
        deployment,
        Neighbours(
            namespace=namespace("prod"), services=(svc,), hpas=(scaler,), http_routes=(route,)
        ),
        POLICY,
        operation="CREATE",
    )
    return [svc, route, *conversion.objects()]


def _scenarios() -> dict[str, list[dict[str, Any]]]:
    converted = _converted("web", opted_in(uid="uid-web"))
    scaled_up = copy.deepcopy(converted)
    for obj in scaled_up:
        if obj["kind"] == "Deployment":
            obj["spec"]["replicas"] = 4  # a GitOps sync put replicas back: drained
    opting_out = copy.deepcopy(converted)
    for obj in opting_out:
        if obj["kind"] == "Deployment":
            obj["metadata"]["labels"][DEFAULT_KEYS.enabled] = "false"
    # Opting out, the Deployment given its replicas back: the next step waits for its pods.
    restored = [
        o
        for o in copy.deepcopy(opting_out)
        if o["kind"] not in ("HTTPRoute", "HorizontalPodAutoscaler")
    ]
    for obj in restored:
        if obj["kind"] == "Deployment":
            obj["spec"]["replicas"] = 3
        if obj["kind"] == "Rollout":
            obj["spec"]["workloadRef"]["scaleDown"] = "never"
    drifted = [
        o for o in converted if o["kind"] != "Service" or "canary" not in o["metadata"]["name"]
    ]
    for obj in drifted:
        if obj["kind"] == "Rollout":
            obj["spec"]["strategy"] = {"canary": {"steps": [{"setWeight": 50}]}}
    return {
        "unconverted": [
            namespace("prod"),
            opted_in(),
            service(),
            hpa(),
            httproute(),
            opted_in("api", pod_labels={"app": "api"}),
            service("api"),
        ],
        "converted": [namespace("prod"), *converted],
        "scaled up after the conversion": [namespace("prod"), *scaled_up],
        "opting out": [namespace("prod"), *opting_out],
        "opting out, replicas back": [namespace("prod"), *restored],
        "drifted": [namespace("prod"), *drifted, rollout("api")],
    }


SCENARIOS = _scenarios()


def _views(objects: list[dict[str, Any]]) -> tuple[MemoryClusterView, MemoryClusterView]:
    stored = [_as_stored(o, i) for i, o in enumerate(objects)]
    return MemoryClusterView(stored), MemoryClusterView(cached_form(o["kind"], o) for o in stored)


def _sent(action: ClusterAction) -> object:
    """What carrying out the action sends (an apply sends ``apply_body`` of its manifest)."""
    return ("apply", apply_body(action.manifest)) if isinstance(action, Apply) else action


def _sent_changes(changes: tuple[dict[str, Any], ...]) -> list[object]:
    return [apply_body(c) for c in changes]


def _answer(plan: AdmissionPlan) -> object:
    return (
        plan.decision,
        plan.reason,
        plan.environment,
        plan.strategy,
        plan.warnings,
        _sent_changes(plan.changes),
    )


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_reconciler_plans_the_same_from_the_cached_form(scenario: str) -> None:
    whole, cached = _views(SCENARIOS[scenario])
    for name in ("web", "api"):
        plans = [
            plan_reconcile(
                "prod",
                name,
                view.get("Deployment", "prod", name),
                neighbours_of(view, "prod"),
                POLICY,
                now=NOW,
            )
            for view in (whole, cached)
        ]
        assert [_sent(a) for a in plans[0].actions] == [_sent(a) for a in plans[1].actions]
        assert (plans[0].state, plans[0].summary, plans[0].requeue_after) == (
            plans[1].state,
            plans[1].summary,
            plans[1].requeue_after,
        )
        rollouts = [p.conversion.rollout if p.conversion else None for p in plans]
        assert rollouts[0] == rollouts[1]  # the same manifest, so the same applied hash


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_writes_after_an_admission_are_the_same_from_the_cached_form(scenario: str) -> None:
    whole, cached = _views(SCENARIOS[scenario])
    stored = whole.get("Deployment", "prod", "web")
    assert stored is not None
    scopes = [
        WriteScope("Deployment", "prod", "web", "UPDATE", old_version="1"),
        WriteScope("HorizontalPodAutoscaler", "prod", "web", "UPDATE"),
        WriteScope("HTTPRoute", "prod", "web", "UPDATE"),
    ]
    scale = scale_request(replicas=5, current=3)["object"]
    scale["metadata"].update(uid=stored["metadata"]["uid"], resourceVersion="7")
    scopes.append(WriteScope(SCALE, "prod", "web", "UPDATE", scale=scale))
    for scope in scopes:
        writes = [stored_writes(scope, view, POLICY, keys=DEFAULT_KEYS) for view in (whole, cached)]
        assert (writes[0].state, writes[0].reason) == (writes[1].state, writes[1].reason)
        assert _sent_changes(writes[0].changes) == _sent_changes(writes[1].changes)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_admissions_decide_the_same_from_the_cached_form(scenario: str) -> None:
    whole, cached = _views(SCENARIOS[scenario])
    requests = [
        admission_request(opted_in(), operation="CREATE"),
        admission_request(
            hpa(),
            operation="UPDATE",
            old=hpa(),
            kind=("autoscaling", "v2", "HorizontalPodAutoscaler"),
        ),
        admission_request(
            httproute(),
            operation="UPDATE",
            old=httproute(),
            kind=("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        ),
        scale_request(replicas=5, current=3),
    ]
    for request in requests:
        plans = [
            decide_mutation(request, view, POLICY, keys=DEFAULT_KEYS)  # type: ignore[arg-type]
            for view in (whole, cached)
        ]
        assert _answer(plans[0]) == _answer(plans[1])
        assert plans[0].mutated == plans[1].mutated
        scopes = [scope_of(request, view) for view in (whole, cached)]  # type: ignore[arg-type]
        assert scopes[0] == scopes[1]
