"""What the watch caches keep of each object they are sent: the fields the product reads. Pure.

With 10,000 services cached, the objects are nearly all of the server's memory
(docs/benchmarks.md), and most of a Deployment is its pod template, of which the product
reads the labels alone. ``cached_form`` is applied where the watches' objects enter the
caches (``webhook.kube.cache.slim``), so every reader of the caches sees this form:

- admission planning (``webhook.core.admission``, ``webhook.core.convert``): a cached
  Deployment's labels, annotations, uid, ``spec`` but for its pod template, and the pod
  template's labels; the Services' selectors, types and ports; the HPAs' specs; the routes'
  specs; a cached Rollout's spec (its strategy is kept as it is), phase and annotations;
  the Namespace's labels;
- the writes planned from stored objects (``webhook.core.stored_writes``) and the
  reconciler (``webhook.core.reconcile``, ``webhook.core.optout``): the same, plus the
  Deployment's ``generation``, ``resourceVersion``, ``deletionTimestamp`` and the
  ``availableReplicas`` and ``observedGeneration`` of its status, the Rollout's
  ``availableReplicas``, and the ``creationTimestamp`` of generated objects;
- the drift checks and hashes: a generated Rollout, Service or analysis template is
  compared by its ``spec``, labels, annotations and ownerReferences, every one of them
  kept whole (a Service's spec keeps the three fields the product writes); the hashes are
  of the manifests planned, which are made of the fields above only;
- the writes that copy a cached object (an HPA re-targeted, a route given its backend):
  the writer sends only the field the product changes (``webhook.kube.writer.apply_body``),
  and the HPA's and the route's specs are kept whole;
- ``rollout-webhook status``: the Rollout's phase and strategy, the HPA's target, the
  Deployment's annotations; and the caches' index (``webhook.core.index``).

Nothing reads an object's ``status`` but for the fields kept above, nor
``managedFields``, nor kubectl's copy of the last applied manifest: each is dropped. A
reader that needs more than this must change this function (and its tests) first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
"""What ``kubectl apply`` records of the manifest it applied: a copy of the whole object."""

STATUS_KEPT: Mapping[str, tuple[str, ...]] = {
    # The opt-out waits for the Deployment's pods (``optout._waiting_for_pods``).
    "Deployment": ("availableReplicas", "observedGeneration"),
    # Kept strategies (``convert._kept_strategy``), drains (``reconcile._gitops_drain``),
    # and the phase ``rollout-webhook status`` shows.
    "Rollout": ("phase", "availableReplicas"),
}
"""The fields of ``status`` read, by kind; every other kind's status is read by nothing."""

SERVICE_SPEC_KEPT = ("type", "selector", "ports")
"""What is read of a Service's spec: which pods it selects (``services.own_selector``),
whether it is an ExternalName, and the ports a canary or preview Service copies; also all
a generated Service's drift check compares."""


def cached_form(kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` as the caches keep it: a new top-level dict (and new dicts where something
    is dropped), sharing everything kept with ``obj``."""
    out = {k: v for k, v in obj.items() if k != "status"}
    out["metadata"] = _metadata(obj.get("metadata"))
    status = obj.get("status")
    kept_status = STATUS_KEPT.get(kind, ())
    if isinstance(status, Mapping) and kept_status:
        out["status"] = {k: status[k] for k in kept_status if k in status}
    spec = obj.get("spec")
    if isinstance(spec, Mapping):
        if kind == "Deployment":
            out["spec"] = _deployment_spec(spec)
        elif kind == "Service":
            out["spec"] = {k: spec[k] for k in SERVICE_SPEC_KEPT if k in spec}
        elif kind == "Namespace":
            del out["spec"]  # its finalizers: read by nothing
    return out


def _metadata(value: object) -> dict[str, Any]:
    meta = (
        {k: v for k, v in value.items() if k != "managedFields"}
        if isinstance(value, Mapping)
        else {}
    )
    annotations = meta.get("annotations")
    if isinstance(annotations, Mapping) and LAST_APPLIED in annotations:
        meta["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    return meta


def _deployment_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """All but the pod template, and of the template its labels: which Services select
    the pods (``services.selects_pods``), found through ``objects.pod_labels``. The rest
    of the spec (replicas, selector, strategy, the fields a Rollout copies) is kept."""
    out = {k: v for k, v in spec.items() if k != "template"}
    template = spec.get("template")
    if isinstance(template, Mapping):
        template_meta = template.get("metadata")
        labels = template_meta.get("labels") if isinstance(template_meta, Mapping) else None
        out["template"] = {"metadata": {"labels": labels}} if labels is not None else {}
    return out
