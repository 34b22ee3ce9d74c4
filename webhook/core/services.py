"""Finding the stable Service of a Deployment and cloning the canary or preview Service."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from webhook.core.keys import Keys
from webhook.core.objects import (
    Obj,
    carried_labels,
    is_generated,
    json_copy,
    labels_of,
    name_of,
    namespace_of,
    owner_reference,
    pod_labels,
    spec_of,
)

POD_TEMPLATE_HASH = "rollouts-pod-template-hash"
"""The selector key Argo Rollouts adds to the stable/canary/active/preview Services to pin
each to one ReplicaSet's pods. The Deployment's template never has it."""


def own_selector(service: Mapping[str, Any]) -> dict[str, Any]:
    """The Service's selector as its owner wrote it, without the key Argo Rollouts adds."""
    selector = spec_of(service).get("selector")
    if not isinstance(selector, Mapping):
        return {}
    return {k: v for k, v in selector.items() if k != POD_TEMPLATE_HASH}


def selects_pods(service: Mapping[str, Any], deployment: Mapping[str, Any]) -> bool:
    """Argo's rule: a Service fronts the pods when its selector is a subset of their labels.

    Judged on the owner's selector: once Argo has pinned a converted service's Services to
    a ReplicaSet, they still belong to the Deployment.
    """
    return _selects(service, pod_labels(deployment))


def _selects(service: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    selector = own_selector(service)
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def candidate_services(
    deployment: Mapping[str, Any], services: Sequence[Mapping[str, Any]], keys: Keys
) -> list[Mapping[str, Any]]:
    """Services that select the Deployment's pods, excluding the ones this product generated."""
    labels = pod_labels(deployment)  # read once, not once per Service of the namespace
    found = [
        svc
        for svc in services
        if not is_generated(svc, keys)
        and spec_of(svc).get("type", "ClusterIP") != "ExternalName"
        and _selects(svc, labels)
    ]
    return sorted(found, key=name_of)


def clone_service(
    stable: Mapping[str, Any],
    name: str,
    deployment: Mapping[str, Any],
    keys: Keys,
) -> Obj:
    """The canary/preview Service: the stable one's selector and ports under its own name.

    Always ClusterIP: the second Service only needs to be reachable inside the cluster
    (by the Gateway or mesh); node ports and load balancers stay with the stable one.
    """
    spec = spec_of(stable)
    ports = []
    for port in spec.get("ports") or []:
        ports.append(
            {
                k: json_copy(v)
                for k, v in port.items()
                if k in ("name", "port", "targetPort", "protocol", "appProtocol")
            }
        )
    labels = carried_labels(labels_of(stable), keys)
    labels[keys.managed] = "true"
    labels[keys.generated_for] = name_of(deployment)
    metadata: Obj = {"name": name, "namespace": namespace_of(stable), "labels": labels}
    owners = owner_reference(deployment)
    if owners:
        metadata["ownerReferences"] = owners
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": "ClusterIP",
            # Never the stable Service's pinned hash: the canary Service would point at
            # the stable pods (Argo pins each Service to its own ReplicaSet itself).
            "selector": json_copy(own_selector(stable)),
            "ports": ports,
        },
    }
