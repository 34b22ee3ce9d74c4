"""The one path by which the product writes to the cluster, and its permission check.

Writes are server-side applies with one field manager (``rollout-webhook``), so the
admission side and the reconciler make the same idempotent call, and every field the
product sets is recorded as its own in ``managedFields``. Objects the product generates
(the Rollout, canary/preview Services) are applied whole; objects other tools own carry
only the fields the product changes (an HPA's ``scaleTargetRef``, a route's rules), so it
takes ownership of nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from webhook.core.cluster import CREATE_ROLLOUTS, AccessDecision, Permission
from webhook.core.review import UserInfo
from webhook.kube.http import KubeHttp
from webhook.kube.resources import resource_for

SAR_PATH = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
_SERVER_FIELDS = (
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)


def apply_body(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What to apply for a manifest: only the fields the product means to own. Pure."""
    meta = dict(manifest.get("metadata") or {})
    kind = str(manifest.get("kind", ""))
    spec = dict(manifest.get("spec") or {})
    head: dict[str, Any] = {
        "apiVersion": manifest.get("apiVersion"),
        "kind": kind,
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
    }
    if kind == "HorizontalPodAutoscaler":
        return {**head, "spec": {"scaleTargetRef": spec.get("scaleTargetRef")}}
    if kind == "HTTPRoute":
        # rules is an atomic list: the whole list is the smallest unit to apply.
        return {**head, "spec": {"rules": spec.get("rules") or []}}
    if kind == "VirtualService":
        return {**head, "spec": {"http": spec.get("http") or []}}
    body = {k: v for k, v in manifest.items() if k != "status"}
    body["metadata"] = {k: v for k, v in meta.items() if k not in _SERVER_FIELDS}
    return body


def access_review_body(
    user: UserInfo,
    namespace: str,
    permission: Permission = CREATE_ROLLOUTS,
    *,
    subresource: str = "",
    name: str = "",
) -> dict[str, Any]:
    """A SubjectAccessReview: may this user (groups and extra included) do ``permission``
    (by default: create Rollouts) in the namespace?"""
    attributes = {
        "namespace": namespace,
        "verb": permission.verb,
        "group": permission.group,
        "resource": permission.resource,
    }
    if subresource:
        attributes["subresource"] = subresource
    if name:
        attributes["name"] = name
    spec: dict[str, Any] = {
        "user": user.get("username", ""),
        "groups": list(user.get("groups", [])),
        "resourceAttributes": attributes,
    }
    if user.get("uid"):
        spec["uid"] = user["uid"]
    if user.get("extra"):
        spec["extra"] = {k: list(v) for k, v in user.get("extra", {}).items()}
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


class ClusterAdapter:
    """``webhook.core.cluster.ClusterWriter`` over the API server (blocking calls: never on
    the event loop)."""

    def __init__(self, http: KubeHttp, *, field_manager: str) -> None:
        self.http = http
        self.field_manager = field_manager

    def may(
        self, user: UserInfo, namespace: str, permission: Permission, *, timeout: float
    ) -> AccessDecision:
        return self._review(access_review_body(user, namespace, permission), timeout)

    def may_scale_rollout(
        self, user: UserInfo, namespace: str, name: str, *, timeout: float
    ) -> AccessDecision:
        # kubectl scale sends a merge patch of the scale subresource unless it is given a
        # precondition (--current-replicas, --resource-version), then a get and an update.
        scale = Permission("patch", "argoproj.io", "rollouts")
        body = access_review_body(user, namespace, scale, subresource="scale", name=name)
        return self._review(body, timeout)

    def _review(self, body: dict[str, Any], timeout: float) -> AccessDecision:
        answer = self.http.request("POST", SAR_PATH, body=body, timeout=timeout)
        status = answer.get("status") or {}
        allowed = bool(status.get("allowed")) and not status.get("denied")
        reason = str(status.get("reason") or status.get("evaluationError") or "")
        if not reason:
            reason = "allowed by RBAC" if allowed else "no RBAC rule allows it"
        return AccessDecision(allowed, reason)

    def apply(self, manifest: Mapping[str, Any], *, timeout: float) -> None:
        body = apply_body(manifest)
        meta = body["metadata"]
        resource = resource_for(str(body["kind"]), str(body.get("apiVersion") or ""))
        path = resource.object_path(str(meta.get("namespace") or ""), str(meta["name"]))
        self.http.request(
            "PATCH",
            path,
            query=[("fieldManager", self.field_manager), ("force", "true")],
            # JSON is YAML: the client sends the object as JSON under the apply type.
            body=body,
            content_type=APPLY_CONTENT_TYPE,
            timeout=timeout,
        )
