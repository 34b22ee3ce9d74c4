"""Generated objects for the benchmark: the caches' contents and the request bodies. Pure.

A service here is what a team ships: a labelled Deployment, its Service, an HPA and an
HTTPRoute. The objects the caches hold are those the API server would store once the
service is converted (the Deployment patched, the Rollout, the canary Service, the
HPA re-targeted, the route given its canary backend), made by the conversion core
itself so that they are exactly what the product would produce. The caches strip
``managedFields``, so the generated objects carry none either.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from webhook.core.convert import Neighbours, plan_conversion
from webhook.core.keys import DEFAULT_KEYS
from webhook.core.policy import Policy

PER_NAMESPACE = 10
"""Services per namespace: a team's namespace, the unit each admission lists."""
USER = {
    "username": "system:serviceaccount:argocd:argocd-application-controller",
    "uid": "4a4c5b4e-9a59-4c0a-8f1e-1b5d2b9d0c11",
    "groups": [
        "system:serviceaccounts",
        "system:serviceaccounts:argocd",
        "system:authenticated",
    ],
}
REQUEST_NAMESPACE = "prod-bench"
"""The namespace of the measured requests: prod (the longest canary) with one service."""


def namespace_name(index: int) -> str:
    return f"prod-team-{index // PER_NAMESPACE:03d}"


def deployment(name: str, namespace: str, *, opted_in: bool = True) -> dict[str, Any]:
    """A Deployment as a chart renders it: two containers, probes, resources, env."""
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "shop"}
    if opted_in:
        labels[DEFAULT_KEYS.enabled] = "true"
    pod_labels = {"app": name, "version": "v1"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 3,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
                },
                "spec": {
                    "serviceAccountName": name,
                    "terminationGracePeriodSeconds": 30,
                    "containers": [
                        {
                            "name": "app",
                            "image": f"registry.example.com/shop/{name}:1.42.0",
                            "ports": [
                                {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                                {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
                            ],
                            "env": [
                                {"name": "LOG_LEVEL", "value": "info"},
                                {"name": "SERVICE_NAME", "value": name},
                                {
                                    "name": "POD_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                },
                            ],
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "128Mi"},
                                "limits": {"memory": "256Mi"},
                            },
                            "readinessProbe": {
                                "httpGet": {"path": "/ready", "port": "http"},
                                "periodSeconds": 5,
                            },
                            "livenessProbe": {
                                "httpGet": {"path": "/live", "port": "http"},
                                "initialDelaySeconds": 10,
                            },
                        },
                        {
                            "name": "log-shipper",
                            "image": "registry.example.com/infra/log-shipper:3.1.0",
                            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                        },
                    ],
                },
            },
        },
    }


def service(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "type": "ClusterIP",
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def hpa(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": 3,
            "maxReplicas": 10,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }


def httproute(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": "public", "namespace": "gateway"}],
            "hostnames": [f"{name}.shop.example.com"],
            "rules": [{"backendRefs": [{"name": name, "port": 80}]}],
        },
    }


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def _stored(obj: dict[str, Any], serial: int) -> dict[str, Any]:
    """The object as a list from the API server returns it: uid, resourceVersion, time."""
    meta = dict(obj.get("metadata") or {})
    meta.setdefault("uid", f"00000000-0000-4000-8000-{serial:012d}")
    meta.setdefault("resourceVersion", str(1000 + serial))
    meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
    return {**obj, "metadata": meta}


def converted_service(name: str, ns: str, policy: Policy) -> list[dict[str, Any]]:
    """Every object of one opted-in service, as stored after its conversion."""
    svc, scaler, route = service(name, ns), hpa(name, ns), httproute(name, ns)
    conversion = plan_conversion(
        deployment(name, ns),
        Neighbours(namespace=namespace(ns), services=(svc,), hpas=(scaler,), http_routes=(route,)),
        policy,
        operation="CREATE",
    )
    if not conversion.converted:
        raise ValueError(f"{ns}/{name} was not converted: {conversion.reason}")
    objects = {(o["kind"], o["metadata"]["name"]): o for o in (svc, scaler, route)}
    for obj in conversion.objects():
        objects[(obj["kind"], obj["metadata"]["name"])] = obj
    return list(objects.values())


def cluster_objects(
    services: int, policy: Policy, *, crowded: bool = False, crowded_services: int = 0
) -> Iterator[dict[str, Any]]:
    """``services`` converted services in namespaces of ``PER_NAMESPACE``, their Namespaces,
    and the measured requests' namespace (its one Service, HPA and stored Deployments).

    ``crowded``: every service in the requests' namespace instead, the worst case for a
    request, whose planning reads its whole namespace. ``crowded_services``: only that
    many of them there (the last ones), the others spread: a fleet with one crowded
    namespace, where the measured requests land."""
    serial = 0
    spread = 0 if crowded else max(0, services - crowded_services)
    for index in range(services):
        ns = REQUEST_NAMESPACE if index >= spread else namespace_name(index)
        if index < spread and index % PER_NAMESPACE == 0:
            serial += 1
            yield _stored(namespace(ns), serial)
        for obj in converted_service(f"svc-{index:04d}", ns, policy):
            serial += 1
            yield _stored(obj, serial)
    yield _stored(namespace(REQUEST_NAMESPACE), serial + 1)
    for obj in request_namespace_objects(policy):
        serial += 1
        yield _stored(obj, serial + 1)


def request_namespace_objects(policy: Policy) -> list[dict[str, Any]]:
    """What the measured requests find in their namespace.

    ``web``: its Service, and the Deployment as it is stored after the CREATE being
    measured (in a cluster the watch delivers it right after the answer; the write worker
    waits for exactly that before it applies the Rollout). ``api``: converted, so that an
    UPDATE of its HPA is re-targeted. ``legacy``: not opted in.
    """
    web = service("web", REQUEST_NAMESPACE)
    stored_web = plan_conversion(
        deployment("web", REQUEST_NAMESPACE),
        Neighbours(namespace=namespace(REQUEST_NAMESPACE), services=(web,)),
        policy,
        operation="CREATE",
    ).deployment
    return [
        web,
        stored_web,
        *converted_service("api", REQUEST_NAMESPACE, policy),
        service("legacy", REQUEST_NAMESPACE),
        deployment("legacy", REQUEST_NAMESPACE, opted_in=False),
    ]


def review(
    uid: str,
    kind: tuple[str, str, str],
    operation: str,
    obj: dict[str, Any],
    old: dict[str, Any] | None = None,
) -> dict[str, Any]:
    group, version, name = kind
    plural = {"Deployment": "deployments", "HorizontalPodAutoscaler": "horizontalpodautoscalers"}
    meta = obj["metadata"]
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": version, "kind": name},
            "resource": {"group": group, "version": version, "resource": plural[name]},
            "requestKind": {"group": group, "version": version, "kind": name},
            "namespace": meta["namespace"],
            "name": meta["name"],
            "operation": operation,
            "userInfo": USER,
            "object": obj,
            "oldObject": old,
            "dryRun": False,
            "options": {
                "apiVersion": "meta.k8s.io/v1",
                "kind": f"{operation.capitalize()}Options",
                "fieldManager": "argocd-controller",
            },
        },
    }


def request_bodies() -> dict[str, bytes]:
    """The body of each measured case, as the API server sends it (compact JSON)."""
    ns = REQUEST_NAMESPACE
    old_hpa = hpa("api", ns)
    new_hpa = hpa("api", ns)
    new_hpa["spec"]["maxReplicas"] = 12  # a chart upgrade changes it, targeting the Deployment
    cases = {
        "convert": review(
            "b0000000-0000-4000-8000-000000000001",
            ("apps", "v1", "Deployment"),
            "CREATE",
            deployment("web", ns),
        ),
        "not-opted-in": review(
            "b0000000-0000-4000-8000-000000000002",
            ("apps", "v1", "Deployment"),
            "CREATE",
            deployment("legacy", ns, opted_in=False),
        ),
        "hpa-update": review(
            "b0000000-0000-4000-8000-000000000003",
            ("autoscaling", "v2", "HorizontalPodAutoscaler"),
            "UPDATE",
            new_hpa,
            old_hpa,
        ),
    }
    bodies = {name: json.dumps(r, separators=(",", ":")).encode() for name, r in cases.items()}
    # The baseline gets the conversion's body: the same bytes to receive, none of the work.
    bodies["baseline"] = bodies["convert"]
    return bodies
