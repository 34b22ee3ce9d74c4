"""Pieces shared by sub-commands: loading the policy, printing objects."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import yaml

from webhook.cli.errors import UsageError
from webhook.cli.manifests import ManifestError, load_manifests, load_single_document
from webhook.core.analysis import template_schema_from_crd
from webhook.core.crd_schema import (
    ROLLOUT_CRD_NAME,
    RolloutSchema,
    SchemaUnusable,
    rollout_schema_from_crd,
)
from webhook.core.errors import PolicyInvalid
from webhook.core.policy import Policy, builtin_policy, policy_from_document


def load_policy(path: str | None, schema: RolloutSchema | None = None) -> Policy:
    """The policy in a file (policy document or ConfigMap), or the built-in one; with
    ``schema`` its strategies are checked against the Rollout CRD's schema too."""
    if path is None:
        return builtin_policy()
    try:
        doc = load_single_document(path)
        return policy_from_document(doc, source=path, name=path, rollout_schema=schema)
    except ManifestError as err:
        raise UsageError(str(err)) from None
    except PolicyInvalid as err:
        raise UsageError(str(err)) from None


def load_rollout_schema(path: str | None) -> RolloutSchema | None:
    """The Rollout CRD's schema from a file (a CRD manifest, or a multi-document file that
    holds it), or None without ``--crd``."""
    if path is None:
        return None
    try:
        docs = load_manifests([path])
    except ManifestError as err:
        raise UsageError(f"--crd {err}") from None
    for manifest in docs:
        obj = manifest.obj
        if obj.get("kind") == "CustomResourceDefinition" and (
            (obj.get("metadata") or {}).get("name") == ROLLOUT_CRD_NAME
        ):
            try:
                return rollout_schema_from_crd(obj, source=path)
            except SchemaUnusable as err:
                raise UsageError(f"--crd {err}") from None
    raise UsageError(f"--crd {path}: no CustomResourceDefinition {ROLLOUT_CRD_NAME} in it")


def load_template_schemas(paths: Sequence[str] | None) -> dict[str, RolloutSchema]:
    """The AnalysisTemplate / ClusterAnalysisTemplate CRDs' schemas (by kind) from files
    named by ``--analysis-crd``; each file may hold either or both."""
    schemas: dict[str, RolloutSchema] = {}
    for path in paths or ():
        try:
            docs = load_manifests([path])
        except ManifestError as err:
            raise UsageError(f"--analysis-crd {err}") from None
        found = 0
        for manifest in docs:
            try:
                kind, schema = template_schema_from_crd(manifest.obj, source=path)
            except SchemaUnusable:
                continue
            schemas[kind] = schema
            found += 1
        if not found:
            raise UsageError(
                f"--analysis-crd {path}: no CustomResourceDefinition of AnalysisTemplates or "
                "ClusterAnalysisTemplates in it"
            )
    return schemas


class _Dumper(yaml.SafeDumper):
    """Block-style YAML that keeps key order and writes multi-line strings as blocks."""


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def dump_yaml(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def render(objects: Sequence[dict[str, Any]], output: str) -> str:
    if output == "json":
        return (
            json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}, indent=2)
            + "\n"
        )
    return "".join(f"---\n{dump_yaml(obj)}" for obj in objects)
