"""HorizontalPodAutoscalers: which ones scale a workload, and re-targeting them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from webhook.core.objects import Obj, json_copy, spec_of

ROLLOUT_REF = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout"}
DEPLOYMENT_REF = {"apiVersion": "apps/v1", "kind": "Deployment"}


def _target(hpa: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = spec_of(hpa).get("scaleTargetRef")
    return ref if isinstance(ref, Mapping) else {}


def targets(hpa: Mapping[str, Any], kind: str, name: str) -> bool:
    ref = _target(hpa)
    return ref.get("kind") == kind and ref.get("name") == name


def hpas_for(hpas: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    """HPAs scaling the Deployment, or already its Rollout (both share the name)."""
    return [h for h in hpas if targets(h, "Deployment", name) or targets(h, "Rollout", name)]


def retarget_hpa(hpa: Mapping[str, Any], rollout_name: str) -> Obj:
    """A copy of the HPA scaling the Rollout instead of the Deployment; nothing else changes."""
    updated = json_copy(dict(hpa))
    updated["spec"]["scaleTargetRef"] = {**ROLLOUT_REF, "name": rollout_name}
    return updated


def restore_hpa(hpa: Mapping[str, Any], deployment_name: str) -> Obj:
    """The reverse of retarget_hpa, for opt-out."""
    updated = json_copy(dict(hpa))
    updated["spec"]["scaleTargetRef"] = {**DEPLOYMENT_REF, "name": deployment_name}
    return updated


def clamp_to_hpa(replicas: int, hpa: Mapping[str, Any]) -> int:
    """Replicas inside the HPA's bounds (minReplicas defaults to 1, as in the API)."""
    spec = spec_of(hpa)
    low = int(spec.get("minReplicas") or 1)
    high = int(spec.get("maxReplicas") or max(low, replicas))
    return max(low, min(high, replicas))
