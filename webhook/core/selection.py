"""Who is opted in, which environment applies, and which strategy results.

The rules of docs/labels.md, as pure functions:

- opt-in: the Deployment's ``enabled`` label wins ("false" opts out even in an opted-in
  Namespace); otherwise the Namespace's label decides;
- environment: the Deployment's ``environment`` label, else the Namespace's, else the
  first policy namespace pattern that matches, else ``defaultEnvironment``;
- strategy: the environment's ``rollout:`` block, with the Deployment's ``strategy`` and
  ``rollout`` annotations merged over it where the environment allows service overrides.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from webhook.core.bounded_yaml import YAMLRefused, load_bounded
from webhook.core.crd_schema import RolloutSchema
from webhook.core.errors import Finding, error, warning
from webhook.core.keys import Keys
from webhook.core.objects import annotations_of, json_copy, labels_of, name_of, namespace_of
from webhook.core.policy import Environment, Policy
from webhook.core.policy_notifications import subscription_annotations
from webhook.core.policy_schema import STRATEGIES, Strategy, validate_rollout_block

MAX_OVERRIDE_BYTES = 16 * 1024
"""A rollout block is a few hundred bytes; the API server allows 256 KiB for all of an
object's annotations together, far more than an override needs."""


@dataclass(frozen=True)
class OptIn:
    opted_in: bool
    reason: str
    findings: tuple[Finding, ...] = ()


def resolve_opt_in(
    deployment: Mapping[str, Any], namespace: Mapping[str, Any] | None, keys: Keys
) -> OptIn:
    own = labels_of(deployment).get(keys.enabled)
    ns_value = labels_of(namespace).get(keys.enabled) if namespace else None
    ns = name_of(namespace) if namespace else namespace_of(deployment)
    # An invalid value counts as no label, and is said on every path: a Deployment
    # labelled "yes" in an opted-in Namespace is converted, but its owner hears why.
    findings = tuple(
        warning(
            "label-value",
            f'label {keys.enabled}={value!r} on {where} is neither "true" nor "false"; ignored',
        )
        for value, where in ((own, "the Deployment"), (ns_value, f"Namespace {ns}"))
        if value is not None and value not in ("true", "false")
    )
    if own == "false":
        return OptIn(False, f"opted out by label {keys.enabled}=false on the Deployment", findings)
    if own == "true":
        return OptIn(True, f"opted in by label {keys.enabled}=true on the Deployment", findings)
    if ns_value == "true":
        return OptIn(True, f"opted in by label {keys.enabled}=true on Namespace {ns}", findings)
    return OptIn(False, "not opted in", findings)


@dataclass(frozen=True)
class EnvironmentChoice:
    name: str
    source: str


def resolve_environment(
    deployment: Mapping[str, Any],
    namespace: Mapping[str, Any] | None,
    policy: Policy,
    keys: Keys,
    forced: str | None = None,
) -> EnvironmentChoice:
    if forced:
        return EnvironmentChoice(forced, "the --environment option")
    own = labels_of(deployment).get(keys.environment)
    if own:
        return EnvironmentChoice(own, f"label {keys.environment} on the Deployment")
    if namespace is not None:
        ns_label = labels_of(namespace).get(keys.environment)
        if ns_label:
            return EnvironmentChoice(ns_label, f"label {keys.environment} on the Namespace")
    ns_name = namespace_of(deployment) or (name_of(namespace) if namespace else "")
    for rule in policy.namespaces:
        if rule.matches(ns_name):
            return EnvironmentChoice(rule.environment, f"namespace pattern {rule.pattern!r}")
    return EnvironmentChoice(policy.default_environment, "the policy's defaultEnvironment")


def merge_blocks(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, anything else (lists included) is replaced."""
    merged = json_copy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_blocks(merged[key], value)
        else:
            merged[key] = json_copy(value)
    return merged


@dataclass(frozen=True)
class StrategyChoice:
    """The strategy a service gets: ``block`` holds only the chosen strategy's settings."""

    enabled: bool
    strategy: Strategy
    block: Mapping[str, Any]
    findings: tuple[Finding, ...]
    notifications: Mapping[str, str] = field(default_factory=dict)
    """The Rollout's notification annotations (``webhook.core.policy_notifications``)."""


def _parse_rollout_annotation(
    text: str, keys: Keys, schema: RolloutSchema | None
) -> tuple[dict[str, Any] | None, list[Finding]]:
    """The override block, or the findings that refuse it. The same annotation is judged
    on every admission and reconcile pass of its Deployment, and judging it by the schema
    costs milliseconds: the judgement is remembered per text and schema."""
    parsed, findings = _judged_annotation(text, keys, schema)
    return (json_copy(parsed) if parsed is not None else None), list(findings)


@functools.lru_cache(maxsize=512)  # at most 16 KiB each: a few MiB
def _judged_annotation(
    text: str, keys: Keys, schema: RolloutSchema | None
) -> tuple[dict[str, Any] | None, tuple[Finding, ...]]:
    parsed, findings = _parse_and_check(text, keys, schema)
    return parsed, tuple(findings)


def _parse_and_check(
    text: str, keys: Keys, schema: RolloutSchema | None
) -> tuple[dict[str, Any] | None, list[Finding]]:
    where = f"annotation {keys.rollout}"
    try:
        value = load_bounded(text, max_bytes=MAX_OVERRIDE_BYTES)
    except YAMLRefused as err:
        mark = err.problem_mark
        at = f" at line {mark.line + 1}" if mark is not None else ""
        return None, [error("annotation-yaml", f"{where}: refused{at}: {err.problem}")]
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        return None, [error("annotation-yaml", f"{where}: not valid YAML{at}")]
    # The seed writes the block under a top-level `rollout:` key; accept it with or without.
    if isinstance(value, Mapping) and set(value) == {"rollout"}:
        value = value["rollout"]
    problems = validate_rollout_block(value, "rollout", schema)
    if problems:
        return None, [error("annotation-invalid", f"{where}: {p}") for p in problems]
    assert isinstance(value, dict)
    return value, []


def resolve_strategy(
    deployment: Mapping[str, Any],
    env: Environment,
    keys: Keys,
    schema: RolloutSchema | None = None,
) -> StrategyChoice:
    """The environment's block with the service's overrides merged over it; with
    ``schema`` (the Rollout CRD's) the override is also checked against it."""
    annotations = annotations_of(deployment)
    findings: list[Finding] = []
    # A shallow copy: only top-level keys are set below, merge_blocks makes new dicts, and
    # the settings returned are copied.
    block: dict[str, Any] = dict(env.rollout)
    strategy_override = annotations.get(keys.strategy)
    rollout_override = annotations.get(keys.rollout)
    overrides = [
        k for k, v in ((keys.strategy, strategy_override), (keys.rollout, rollout_override)) if v
    ]
    if overrides and not env.allow_service_overrides:
        findings.append(
            warning(
                "overrides-not-allowed",
                f"environment {env.name} does not allow service overrides; ignored "
                + ", ".join(overrides),
            )
        )
    elif overrides:
        if rollout_override:
            parsed, problems = _parse_rollout_annotation(rollout_override, keys, schema)
            findings.extend(problems)
            if parsed is not None:
                # The environment's kill switch cannot be turned back on by a service.
                if parsed.get("enabled") is True:
                    parsed = {k: v for k, v in parsed.items() if k != "enabled"}
                block = merge_blocks(block, parsed)
        if strategy_override:
            if strategy_override in STRATEGIES:
                block["strategy"] = strategy_override
            else:
                findings.append(
                    error(
                        "annotation-strategy",
                        f"annotation {keys.strategy}={strategy_override!r}: must be one of "
                        + ", ".join(STRATEGIES),
                    )
                )
    strategy: Strategy = block.get("strategy", "canary")
    settings_key = "canary" if strategy == "canary" else "blueGreen"
    settings = block.get(settings_key) or {}
    return StrategyChoice(
        enabled=bool(block.get("enabled", True)) and env.enabled,
        strategy=strategy,
        block=json_copy(settings),
        findings=tuple(findings),
        notifications=subscription_annotations(block.get("notifications")),
    )
