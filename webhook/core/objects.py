"""Small read helpers for Kubernetes objects as plain dicts (the core never sees client types)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, TypeVar

import orjson

from webhook.core.keys import ARGOCD_PREFIX, ARGOCD_TRACKING_LABEL, Keys

Obj = dict[str, Any]
T = TypeVar("T")


def json_copy(value: T) -> T:
    """A deep copy of JSON-shaped data (dicts, lists, tuples of scalars and each other).

    What the core copies is always parsed JSON or YAML; ``copy.deepcopy`` keeps a memo and
    dispatches on every value's type, several times the cost for the same result.
    """
    if isinstance(value, dict):
        return {k: json_copy(v) for k, v in value.items()}  # type: ignore[return-value]
    if isinstance(value, list):
        return [json_copy(v) for v in value]  # type: ignore[return-value]
    if isinstance(value, tuple):
        return tuple(json_copy(v) for v in value)  # type: ignore[return-value]
    return value


def _mapping(value: Any) -> Mapping[str, Any]:
    # dict first: the ABC check alone was a fifth of a crowded namespace's planning time
    return value if isinstance(value, (dict, Mapping)) else {}


def meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return _mapping(obj.get("metadata"))


def name_of(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("name") or "")


def namespace_of(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("namespace") or "")


def labels_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return _mapping(meta(obj).get("labels"))


def annotations_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return _mapping(meta(obj).get("annotations"))


def spec_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return _mapping(obj.get("spec"))


def pod_labels(deployment: Mapping[str, Any]) -> Mapping[str, str]:
    template = spec_of(deployment).get("template")
    if not isinstance(template, Mapping):
        return {}
    return labels_of(template)


def is_generated(obj: Mapping[str, Any], keys: Keys) -> bool:
    return labels_of(obj).get(keys.managed) == "true"


def carried_labels(labels: Mapping[str, str], keys: Keys) -> dict[str, str]:
    """Labels safe to copy onto a generated object.

    Never Argo CD's tracking label or annotations (the generated object is not part of
    the Argo CD Application, and copying them makes Argo CD prune it), nor the product's
    own opt-in labels (a generated object must not look like something to convert).
    """
    return {
        k: v
        for k, v in labels.items()
        if k != ARGOCD_TRACKING_LABEL
        and not k.startswith(ARGOCD_PREFIX)
        and not k.startswith(keys.prefix)
    }


def owner_reference(deployment: Mapping[str, Any]) -> list[Obj]:
    """An ownerReference to the Deployment, once it has a uid (not yet at CREATE admission)."""
    uid = meta(deployment).get("uid")
    if not uid:
        return []
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name_of(deployment),
            "uid": uid,
        }
    ]


def dns_label(base: str, suffix: str) -> str:
    """``base-suffix`` kept within the 63-character DNS label limit of Service names."""
    name = f"{base}-{suffix}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(base.encode()).hexdigest()[:6]
    keep = 63 - len(suffix) - len(digest) - 2
    return f"{base[:keep].rstrip('-')}-{digest}-{suffix}"


def applied_hash(manifest: Mapping[str, Any], keys: Keys) -> str:
    """The hash of a generated object's desired manifest, without its ``spec.replicas``
    (a count others set too: an HPA, a person scaling the Rollout) and without the hash itself.

    Recorded on the object (``keys.applied_hash``): the drift check compares it, so a
    field the product stopped sending is drift, and the server-side apply under the
    product's one field manager removes the field.
    """
    metadata = dict(meta(manifest))
    annotations = {k: v for k, v in annotations_of(manifest).items() if k != keys.applied_hash}
    metadata["annotations"] = annotations
    spec = {k: v for k, v in spec_of(manifest).items() if k != "replicas"}
    canonical = {**manifest, "metadata": metadata, "spec": spec}
    return hashlib.sha256(canonical_bytes(canonical)).hexdigest()[:16]


def canonical_bytes(value: Mapping[str, Any]) -> bytes:
    """Sorted compact JSON, byte for byte what ``json.dumps(value, sort_keys=True,
    separators=(",", ":"))`` writes, so hashes recorded on objects stay valid.

    orjson (compiled) writes the same bytes for ASCII text without floats; it writes
    other characters as UTF-8 where the standard codec escapes them, so such documents
    go to the standard codec. A float it would format differently (``1e16`` for
    ``1e+16``) is not caught here: manifests carry quantities as strings and counts as
    integers, and such a hash would only differ once, the object re-applied once.
    """
    try:
        data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer past 64 bits, a non-string key
        data = b""
    if data and data.isascii() and b"\x7f" not in data:
        return data
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def with_applied_hash(manifest: Obj, keys: Keys) -> Obj:
    """The manifest, stamped with its ``applied_hash`` annotation (in place, and returned)."""
    metadata = manifest.setdefault("metadata", {})
    metadata.setdefault("annotations", {})[keys.applied_hash] = applied_hash(manifest, keys)
    return manifest
