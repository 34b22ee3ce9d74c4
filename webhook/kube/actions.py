"""The reconciler's writes over the API server: apply, merge patch, delete, Events.

Applies go through the same server-side apply (one field manager) as the admission side
(``ClusterAdapter.apply``). Patches are JSON merge patches of the few fields the product
changes on objects others own (a Deployment's replicas and annotations, a Service's
selector), so they take nothing else over.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from webhook.core.services import POD_TEMPLATE_HASH
from webhook.kube.http import KubeError
from webhook.kube.resources import Resource, resource_for
from webhook.kube.writer import ClusterAdapter

REPLICASET = Resource("ReplicaSet", "apps", "v1", "replicasets")
EVENT = Resource("Event", "", "v1", "events")
MERGE_PATCH = "application/merge-patch+json"
COMPONENT = "rollout-webhook"


def _selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def event_body(
    deployment: Mapping[str, Any], reason: str, message: str, event_type: str, now: datetime
) -> dict[str, Any]:
    """A core/v1 Event on the Deployment (what `kubectl describe deployment` shows)."""
    meta = deployment.get("metadata") or {}
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta.get('name', '')}.{uuid.uuid4().hex[:12]}",
            "namespace": meta.get("namespace", ""),
        },
        "involvedObject": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": meta.get("name", ""),
            "namespace": meta.get("namespace", ""),
            "uid": meta.get("uid", ""),
        },
        "reason": reason,
        "message": message[:1024],
        "type": event_type,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class ReconcileAdapter(ClusterAdapter):
    """``ReconcileWriter`` over the API server (blocking: worker threads only)."""

    def patch(
        self, kind: str, namespace: str, name: str, patch: Mapping[str, Any], *, timeout: float
    ) -> None:
        path = _resource(kind).object_path(namespace, name)
        self.http.request(
            "PATCH",
            path,
            query=[("fieldManager", self.field_manager)],
            body=dict(patch),
            content_type=MERGE_PATCH,
            timeout=timeout,
        )

    def delete(self, kind: str, namespace: str, name: str, *, orphan: bool, timeout: float) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Orphan" if orphan else "Background",
        }
        try:
            self.http.request(
                "DELETE", _resource(kind).object_path(namespace, name), body=body, timeout=timeout
            )
        except KubeError as err:
            if err.status != 404:  # already gone is what we wanted
                raise

    def delete_orphan_replicasets(
        self, namespace: str, selector: Mapping[str, str], *, timeout: float
    ) -> int:
        """ReplicaSets a Rollout left behind (deleted with Orphan): the Rollout's pod hash
        label, the Deployment's selector, and no owner any more."""
        found = self.http.request(
            "GET",
            REPLICASET.collection_path(namespace),
            query=[("labelSelector", f"{_selector(selector)},{POD_TEMPLATE_HASH}")],
            timeout=timeout,
        )
        deleted = 0
        for rs in found.get("items") or []:
            meta = rs.get("metadata") or {}
            if meta.get("ownerReferences"):
                continue
            self.delete("ReplicaSet", namespace, str(meta["name"]), orphan=False, timeout=timeout)
            deleted += 1
        return deleted

    def event(
        self,
        deployment: Mapping[str, Any],
        reason: str,
        message: str,
        event_type: str,
        *,
        timeout: float,
    ) -> None:
        body = event_body(deployment, reason, message, event_type, datetime.now(UTC))
        namespace = body["metadata"]["namespace"]
        self.http.request("POST", EVENT.collection_path(namespace), body=body, timeout=timeout)


def _resource(kind: str) -> Resource:
    if kind == "ReplicaSet":
        return REPLICASET
    return resource_for(kind)
