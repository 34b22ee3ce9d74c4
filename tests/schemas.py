"""Validating objects against the real schemas: the released CRDs and Kubernetes' own.

The CRDs are read from ../shared/crds/ (beside the repository), never copied into it.
Object schemas are made strict (``additionalProperties: false`` wherever the CRD lists
its properties and does not preserve unknown fields): the API server would silently
prune a misspelt field, and a test must see it instead.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[1]
CRD_DIR = Path(os.environ.get("ROLLOUT_WEBHOOK_CRDS", REPO.parent / "shared" / "crds"))
KUBERNETES_VERSION = "1.35"


@functools.cache
def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema for every version of every CRD in CRD_DIR."""
    if not CRD_DIR.is_dir():
        raise FileNotFoundError(f"CRD directory {CRD_DIR} is missing (expected ../shared/crds)")
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group = doc["spec"]["group"]
            kind = doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                schema = version.get("schema", {}).get("openAPIV3Schema")
                if schema:
                    schemas[(f"{group}/{version['name']}", kind)] = _strict(schema)
    return schemas


def _strict(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_kinds() -> set[tuple[str, str]]:
    return set(_crd_schemas())


def validate_crd_object(obj: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError if obj breaks its CRD's schema."""
    key = (obj["apiVersion"], obj["kind"])
    schema = _crd_schemas().get(key)
    if schema is None:
        raise LookupError(f"no CRD for {key} in {CRD_DIR}")
    # metadata is validated by the API server itself, not by the CRD schema; some CRDs
    # (Istio's) leave apiVersion and kind out of their properties.
    body = {k: v for k, v in obj.items() if k != "metadata"}
    envelope = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {}}
    jsonschema.validate(
        body, {**schema, "properties": {**envelope, **schema.get("properties", {})}}
    )


def validate_builtin_object(obj: dict[str, Any]) -> None:
    """Raise if obj breaks the Kubernetes schema of its kind (strict: unknown fields fail)."""
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def validate_object(obj: dict[str, Any]) -> None:
    if (obj["apiVersion"], obj["kind"]) in crd_kinds():
        validate_crd_object(obj)
    else:
        validate_builtin_object(obj)
