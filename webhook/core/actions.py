"""What the reconciler's plans ask of the cluster, as data the shell carries out.

Each action is one write, or one Event, that the reconciler loop
(``webhook/reconciler/controller.py``) carries out through ``webhook/kube/actions.py``. The
planners (``webhook.core.reconcile``, ``webhook.core.optout``) only say which, in which
order, and why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from webhook.core.objects import Obj


@dataclass(frozen=True)
class Apply:
    """Server-side apply with the product's field manager."""

    manifest: Obj
    why: str


@dataclass(frozen=True)
class Patch:
    """A JSON merge patch (``None`` values delete keys)."""

    kind: str
    namespace: str
    name: str
    patch: Obj
    why: str


@dataclass(frozen=True)
class Delete:
    kind: str
    namespace: str
    name: str
    why: str
    orphan_dependents: bool = False


@dataclass(frozen=True)
class DeleteOrphanReplicaSets:
    """Delete ReplicaSets left behind by a Rollout deleted with orphaned dependents: those
    with the pod-template hash label, matching the selector, and no owner."""

    namespace: str
    selector: Mapping[str, str]
    why: str


@dataclass(frozen=True)
class Emit:
    """A Kubernetes Event on the Deployment."""

    reason: str
    message: str
    type: Literal["Normal", "Warning"] = "Normal"


ClusterAction = Apply | Patch | Delete | DeleteOrphanReplicaSets | Emit
"""One thing a reconcile plan asks of the cluster: a write, or an Event."""
