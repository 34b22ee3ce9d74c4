"""The writer: server-side apply bodies and the SubjectAccessReview, on a scripted API."""

from __future__ import annotations

from typing import Any

from tests.webhook.kube.scripted_api import ScriptedApi
from webhook.core.cluster import CREATE_ROLLOUTS, Permission
from webhook.kube.writer import ClusterAdapter, access_review_body, apply_body


def test_apply_bodies_own_only_what_the_product_changes() -> None:
    hpa: dict[str, Any] = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "resourceVersion": "9",
            "labels": {"a": "b"},
        },
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "Rollout",
                "name": "web",
            },
            "minReplicas": 2,
            "maxReplicas": 9,
        },
        "status": {"currentReplicas": 3},
    }
    assert apply_body(hpa) == {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"scaleTargetRef": hpa["spec"]["scaleTargetRef"]},
    }
    rollout = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "shop", "uid": "x", "labels": {"a": "b"}},
        "spec": {"replicas": 3},
        "status": {"phase": "Healthy"},
    }
    assert apply_body(rollout) == {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"a": "b"}},
        "spec": {"replicas": 3},
    }


def test_access_review_carries_groups_and_extra() -> None:
    body = access_review_body(
        {
            "username": "alice",
            "uid": "42",
            "groups": ["dev"],
            "extra": {"scopes": ["a", "b"]},
        },
        "shop",
    )
    assert body["spec"] == {
        "user": "alice",
        "uid": "42",
        "groups": ["dev"],
        "extra": {"scopes": ["a", "b"]},
        "resourceAttributes": {
            "namespace": "shop",
            "verb": "create",
            "group": "argoproj.io",
            "resource": "rollouts",
        },
    }


def test_the_scale_review_asks_for_what_kubectl_scale_rollout_does() -> None:
    scale = Permission("patch", "argoproj.io", "rollouts")
    body = access_review_body({"username": "alice"}, "shop", scale, subresource="scale", name="web")
    assert body["spec"]["resourceAttributes"] == {
        "namespace": "shop",
        "verb": "patch",
        "group": "argoproj.io",
        "resource": "rollouts",
        "subresource": "scale",
        "name": "web",
    }
    api = ScriptedApi(lists=[{"status": {"allowed": False}}], watches=[])
    adapter = ClusterAdapter(api, field_manager="rollout-webhook")  # type: ignore[arg-type]
    answer = adapter.may_scale_rollout({"username": "bob"}, "shop", "web", timeout=1)
    assert (answer.allowed, answer.reason) == (False, "no RBAC rule allows it")
    assert api.calls == [("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", [])]


def test_adapter_reads_the_review_answer_and_applies_server_side() -> None:
    api = ScriptedApi(
        lists=[
            {"status": {"allowed": False, "reason": "no binding"}},
            {"status": {"allowed": True}},
            {},
        ],
        watches=[],
    )
    adapter = ClusterAdapter(api, field_manager="rollout-webhook")  # type: ignore[arg-type]
    denied = adapter.may({"username": "bob"}, "shop", CREATE_ROLLOUTS, timeout=1)
    assert (denied.allowed, denied.reason) == (False, "no binding")
    assert adapter.may({"username": "alice"}, "shop", CREATE_ROLLOUTS, timeout=1).allowed
    adapter.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web-canary", "namespace": "shop"},
        },
        timeout=1,
    )
    method, path, query = api.calls[-1]
    assert (method, path) == ("PATCH", "/api/v1/namespaces/shop/services/web-canary")
    assert query == [("fieldManager", "rollout-webhook"), ("force", "true")]
