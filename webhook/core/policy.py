"""The policy: which strategy each environment gets, and how services map to environments.

The document (docs/policy.md) is YAML. Each environment holds the seed document's
``rollout:`` block verbatim plus a few product settings. A document is checked by
``webhook.core.policy_schema`` (every error, with its path) before a Policy is built.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, cast

import yaml

from webhook.core.analysis import (
    NO_ANALYSIS,
    AnalysisSettings,
    parse_analysis,
    validate_analysis,
    without_analysis,
)
from webhook.core.bounded_yaml import YAMLRefused, load_bounded
from webhook.core.crd_schema import RolloutSchema
from webhook.core.default_policy import DEFAULT_POLICY_YAML
from webhook.core.errors import FieldError, PolicyInvalid
from webhook.core.objects import json_copy
from webhook.core.policy_schema import (
    RolloutUpdates,
    ScaleDown,
    Strategy,
    TrafficRouting,
    validate_policy_document,
)

POLICY_CONFIGMAP_KEY = "policy.yaml"
MAX_POLICY_BYTES = 1024 * 1024
"""A ConfigMap holds at most 1 MiB of data."""

RolloutBlock = dict[str, Any]


@dataclass(frozen=True)
class Environment:
    """One environment: the seed's ``rollout:`` block and the product settings around it."""

    name: str
    rollout: Mapping[str, Any]
    scale_down: ScaleDown = "onsuccess"
    allow_service_overrides: bool = True
    traffic_routing: TrafficRouting = "auto"

    @property
    def enabled(self) -> bool:
        """The environment's kill switch: ``rollout.enabled: false`` converts nothing."""
        return bool(self.rollout.get("enabled", True))

    @property
    def strategy(self) -> Strategy:
        return cast(Strategy, self.rollout.get("strategy", "canary"))


@dataclass(frozen=True)
class NamespaceRule:
    """A namespace-name glob (``*-prod``) mapped to an environment; the first match wins."""

    pattern: str
    environment: str

    def matches(self, namespace: str) -> bool:
        return fnmatchcase(namespace, self.pattern)


@dataclass(frozen=True)
class PolicyVersion:
    """Where a policy came from, recorded on every decision made with it."""

    name: str
    resource_version: str
    sha256: str

    def __str__(self) -> str:
        rv = self.resource_version or "-"
        return f"{self.name}@{rv}/{self.sha256[:12]}"


@dataclass(frozen=True)
class Policy:
    default_environment: str
    environments: Mapping[str, Environment]
    namespaces: tuple[NamespaceRule, ...]
    rollout_updates: RolloutUpdates
    version: PolicyVersion
    document: Mapping[str, Any] = field(repr=False, compare=False)
    analysis: AnalysisSettings = field(default=NO_ANALYSIS, repr=False)
    """The templates the policy manages and each environment's default analysis."""

    def environment(self, name: str) -> Environment | None:
        return self.environments.get(name)

    def environment_for_namespace(self, namespace: str) -> str | None:
        for rule in self.namespaces:
            if rule.matches(namespace):
                return rule.environment
        return None


def policy_digest(doc: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON form: the same policy hashes the same however written."""
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def parse_policy(
    doc: object,
    *,
    name: str = "built-in",
    resource_version: str = "",
    source: str = "policy",
    rollout_schema: RolloutSchema | None = None,
) -> Policy:
    """Validate a parsed policy document and build the Policy; raises PolicyInvalid.
    With ``rollout_schema`` (the Rollout CRD's) strategy blocks are checked against it
    too; without, by the product's rules only. The analysis keys have their own module
    (webhook.core.analysis)."""
    errors = [
        *validate_policy_document(without_analysis(doc), rollout_schema),
        *validate_analysis(doc),
    ]
    if errors:
        raise PolicyInvalid(tuple(errors), source)
    top = cast(Mapping[str, Any], doc)
    environments = {
        str(env_name): Environment(
            name=str(env_name),
            rollout=json_copy(dict(env["rollout"])),
            scale_down=env.get("scaleDown", "onsuccess"),
            allow_service_overrides=env.get("allowServiceOverrides", True),
            traffic_routing=env.get("trafficRouting", "auto"),
        )
        for env_name, env in top["environments"].items()
    }
    rules = tuple(
        NamespaceRule(pattern=rule["pattern"], environment=rule["environment"])
        for rule in top.get("namespaces", [])
    )
    return Policy(
        default_environment=top["defaultEnvironment"],
        environments=environments,
        namespaces=rules,
        rollout_updates=top.get("rolloutUpdates", "nextChange"),
        version=PolicyVersion(name, resource_version, policy_digest(top)),
        document=json_copy(dict(top)),
        analysis=parse_analysis(top),
    )


def load_yaml(text: str, source: str) -> object:
    """Parse YAML text within bounds (``bounded_yaml``); a syntax error, an anchor or an
    alias becomes PolicyInvalid naming the line."""
    try:
        return load_bounded(text, max_bytes=MAX_POLICY_BYTES)
    except YAMLRefused as err:
        mark = err.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise PolicyInvalid((FieldError(where, f"refused: {err.problem}"),), source) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise PolicyInvalid((FieldError(where, f"not valid YAML: {problem}"),), source) from None


def parse_policy_text(
    text: str,
    *,
    name: str = "built-in",
    resource_version: str = "",
    source: str = "policy",
    rollout_schema: RolloutSchema | None = None,
) -> Policy:
    return parse_policy(
        load_yaml(text, source),
        name=name,
        resource_version=resource_version,
        source=source,
        rollout_schema=rollout_schema,
    )


def policy_from_configmap(
    configmap: Mapping[str, Any],
    *,
    source: str | None = None,
    rollout_schema: RolloutSchema | None = None,
) -> Policy:
    """The policy held by a ConfigMap under the ``policy.yaml`` key."""
    meta = configmap.get("metadata") or {}
    name = f"{meta.get('namespace', '')}/{meta.get('name', '')}".strip("/") or "configmap"
    where = source or f"ConfigMap {name}"
    data = configmap.get("data") or {}
    if not isinstance(data, Mapping) or POLICY_CONFIGMAP_KEY not in data:
        raise PolicyInvalid((FieldError(f"data.{POLICY_CONFIGMAP_KEY}", "is required"),), where)
    text = data[POLICY_CONFIGMAP_KEY]
    if not isinstance(text, str):
        raise PolicyInvalid(
            (FieldError(f"data.{POLICY_CONFIGMAP_KEY}", "must be a string"),), where
        )
    return parse_policy_text(
        text,
        name=name,
        resource_version=str(meta.get("resourceVersion", "")),
        source=where,
        rollout_schema=rollout_schema,
    )


def policy_from_document(
    doc: object,
    *,
    source: str,
    name: str | None = None,
    rollout_schema: RolloutSchema | None = None,
) -> Policy:
    """A policy from a parsed file: either the policy itself or a ConfigMap holding it."""
    if isinstance(doc, Mapping) and doc.get("kind") == "ConfigMap":
        return policy_from_configmap(doc, source=source, rollout_schema=rollout_schema)
    return parse_policy(doc, name=name or source, source=source, rollout_schema=rollout_schema)


@functools.cache
def builtin_policy() -> Policy:
    """The built-in default (the seed's dev/staging/prod examples)."""
    return parse_policy_text(DEFAULT_POLICY_YAML, name="built-in", source="built-in policy")
