"""The reverse plan: what to restore when a service leaves progressive delivery.

The order matters and is the reconciler's job (restore the Deployment and the HPA, wait
until the Deployment's pods are available, only then delete the Rollout): removing a
Rollout first leaves the Deployment at 0 replicas and takes the service down
(argo-rollouts#3855). This module only says what the objects should become.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webhook.core.convert import Neighbours
from webhook.core.hpa import clamp_to_hpa, restore_hpa, targets
from webhook.core.keys import DEFAULT_KEYS, Keys
from webhook.core.objects import (
    Obj,
    annotations_of,
    is_generated,
    json_copy,
    labels_of,
    name_of,
    spec_of,
)
from webhook.core.routes import (
    remove_canary_backend_httproute,
    remove_canary_destination_virtualservice,
)


@dataclass(frozen=True)
class Restoration:
    deployment: Obj
    replicas: int
    hpas: tuple[Obj, ...]
    routes: tuple[Obj, ...]
    delete_rollout: str | None
    delete_services: tuple[str, ...]


def plan_opt_out(
    deployment: Mapping[str, Any], neighbours: Neighbours, keys: Keys = DEFAULT_KEYS
) -> Restoration:
    name = name_of(deployment)
    annotations = annotations_of(deployment)
    recorded = annotations.get(keys.original_replicas, "")
    current = spec_of(deployment).get("replicas")
    replicas = int(recorded) if recorded.isdigit() else (current if isinstance(current, int) else 1)
    hpas = [h for h in neighbours.hpas if targets(h, "Rollout", name)]
    if hpas:
        replicas = clamp_to_hpa(replicas, hpas[0])
    replicas = max(replicas, current if isinstance(current, int) else 0)

    restored = json_copy(dict(deployment))
    restored.setdefault("spec", {})["replicas"] = replicas
    kept = {k: v for k, v in annotations.items() if k not in keys.written_annotations()}
    restored.setdefault("metadata", {})["annotations"] = kept

    generated = [
        s
        for s in neighbours.services
        if is_generated(s, keys) and labels_of(s).get(keys.generated_for) == name
    ]
    routes: list[Obj] = []
    for svc in generated:
        canary = name_of(svc)
        stable = canary.rsplit("-", 1)[0]
        for route in neighbours.http_routes:
            patch = remove_canary_backend_httproute(route, stable, canary)
            if patch.changed:
                routes.append(patch.route)
        for vs in neighbours.virtual_services:
            patch = remove_canary_destination_virtualservice(vs, stable, canary)
            if patch.changed:
                routes.append(patch.route)
    rollout = neighbours.rollout_named(name)
    return Restoration(
        deployment=restored,
        replicas=replicas,
        hpas=tuple(restore_hpa(h, name) for h in hpas),
        routes=tuple(routes),
        delete_rollout=name if rollout is not None and is_generated(rollout, keys) else None,
        delete_services=tuple(sorted(name_of(s) for s in generated)),
    )
