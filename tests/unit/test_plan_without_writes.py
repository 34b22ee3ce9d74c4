"""``plan_without_writes``: what admission does for a user who may not create Rollouts.

Pure: a request, the plan the decision made, the permission check's answer in; the plan
to answer with out. No server, no cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from webhook.core.admission import plan_without_writes
from webhook.core.keys import DEFAULT_KEYS
from webhook.core.review import AdmissionPlan, AdmissionRequest

WHY = "no RBAC rule allows it"
ROLLOUT = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"}}


def deployment(*, converted: bool = False) -> dict[str, Any]:
    annotations = {DEFAULT_KEYS.rollout_name: "web"} if converted else {}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "annotations": annotations},
        "spec": {"replicas": 3},
    }


def request(
    kind: str,
    operation: str,
    obj: dict[str, Any],
    *,
    old: dict[str, Any] | None = None,
    user: str | None = "bob",
) -> AdmissionRequest:
    review: dict[str, Any] = {
        "uid": "u-1",
        "kind": {"group": "", "version": "v1", "kind": kind},
        "operation": operation,
        "namespace": "shop",
        "name": "web",
        "object": obj,
        "oldObject": old,
        "userInfo": {} if user is None else {"username": user},
    }
    return review  # type: ignore[return-value]


def converting(mutated: dict[str, Any]) -> AdmissionPlan:
    """The plan of a conversion: a patch and a Rollout to write."""
    return AdmissionPlan(
        "convert",
        "converted",
        environment="prod",
        strategy="canary",
        mutated=mutated,
        changes=(ROLLOUT,),
        warnings=("an earlier warning",),
    )


def refused_copy(obj: dict[str, Any], who: str) -> dict[str, Any]:
    meta = obj["metadata"]
    annotations = {
        **meta["annotations"],
        DEFAULT_KEYS.refused: f"{who} may not create rollouts.argoproj.io",
    }
    return {**obj, "metadata": {**meta, "annotations": annotations}}


def denial(who: str) -> str:
    return f"{who} may not create rollouts.argoproj.io in namespace shop ({WHY})"


HPA = {
    "apiVersion": "autoscaling/v2",
    "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": "web"},
}
ROUTE = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "HTTPRoute",
    "metadata": {"name": "web"},
}
RETARGETED = {**HPA, "spec": {"scaleTargetRef": {"kind": "Rollout", "name": "web"}}}


@dataclass(frozen=True)
class Case:
    request: AdmissionRequest
    plan: AdmissionPlan
    decision: str
    reason: str
    mutated: dict[str, Any] | None
    warning: str


CASES = {
    "a new Deployment is not converted, and marked for the reconciler": Case(
        request("Deployment", "CREATE", deployment()),
        converting(deployment(converted=True)),
        "refuse",
        denial("bob"),
        refused_copy(deployment(), "bob"),
        f"not converted: {denial('bob')}",
    ),
    "an update of a Deployment never converted is not converted either": Case(
        request("Deployment", "UPDATE", deployment(), old=deployment()),
        converting(deployment(converted=True)),
        "refuse",
        denial("bob"),
        refused_copy(deployment(), "bob"),
        f"not converted: {denial('bob')}",
    ),
    "a request with no user name is refused in the name of '?'": Case(
        request("Deployment", "CREATE", deployment(), user=None),
        converting(deployment(converted=True)),
        "refuse",
        denial("?"),
        refused_copy(deployment(), "?"),
        f"not converted: {denial('?')}",
    ),
    "an update of a converted Deployment keeps its patch, only the writes go": Case(
        request("Deployment", "UPDATE", deployment(), old=deployment(converted=True)),
        converting(deployment(converted=True)),
        "convert",
        f"converted; no changes written: {denial('bob')}",
        deployment(converted=True),
        f"no changes written on your behalf: {denial('bob')}",
    ),
    "an HPA of a converted Deployment keeps its re-target, only the writes go": Case(
        request("HorizontalPodAutoscaler", "CREATE", HPA),
        converting(RETARGETED),
        "convert",
        f"converted; no changes written: {denial('bob')}",
        RETARGETED,
        f"no changes written on your behalf: {denial('bob')}",
    ),
    "a route keeps its canary backend, only the writes go": Case(
        request("HTTPRoute", "UPDATE", ROUTE, old=ROUTE),
        converting({**ROUTE, "spec": {"rules": []}}),
        "convert",
        f"converted; no changes written: {denial('bob')}",
        {**ROUTE, "spec": {"rules": []}},
        f"no changes written on your behalf: {denial('bob')}",
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_plan_without_writes(case: Case) -> None:
    plan = plan_without_writes(case.request, case.plan, WHY, keys=DEFAULT_KEYS)
    assert plan.decision == case.decision
    assert plan.reason == case.reason
    assert plan.mutated == case.mutated
    assert plan.changes == ()
    assert plan.warnings == ("an earlier warning", case.warning)
    # What the decision found stays in the record.
    assert (plan.environment, plan.strategy) == ("prod", "canary")


def test_the_request_object_is_not_changed() -> None:
    sent = deployment()
    plan_without_writes(
        request("Deployment", "CREATE", sent),
        converting(deployment(converted=True)),
        WHY,
        keys=DEFAULT_KEYS,
    )
    assert sent == deployment()
