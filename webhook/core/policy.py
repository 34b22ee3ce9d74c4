"""The policy: which strategy each environment gets, and how services map to environments.

The document (docs/policy.md) is YAML. Each environment holds the seed document's
``rollout:`` block verbatim plus a few product settings. Validation collects every error
with its path instead of stopping at the first, and treats unknown keys as errors, so
a typo such as ``setWieght`` is refused rather than silently ignored.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Literal, cast

import yaml

from webhook.core.bounded_yaml import YAMLRefused, load_bounded
from webhook.core.default_policy import DEFAULT_POLICY_YAML
from webhook.core.durations import DurationError, parse_go_duration, pause_seconds
from webhook.core.errors import FieldError, PolicyInvalid
from webhook.core.objects import json_copy

Strategy = Literal["canary", "bluegreen"]
ScaleDown = Literal["never", "onsuccess", "progressively"]
TrafficRouting = Literal["auto", "gatewayAPI", "istio", "none"]
RolloutUpdates = Literal["immediate", "nextChange", "never"]

STRATEGIES: tuple[Strategy, ...] = ("canary", "bluegreen")
SCALE_DOWN_MODES: tuple[ScaleDown, ...] = ("never", "onsuccess", "progressively")
TRAFFIC_ROUTING_MODES: tuple[TrafficRouting, ...] = ("auto", "gatewayAPI", "istio", "none")
ROLLOUT_UPDATE_MODES: tuple[RolloutUpdates, ...] = ("immediate", "nextChange", "never")

POLICY_CONFIGMAP_KEY = "policy.yaml"
POLICY_API_VERSION = "rollout-webhook.io/v1alpha1"
POLICY_KIND = "Policy"
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

    def environment(self, name: str) -> Environment | None:
        return self.environments.get(name)

    def environment_for_namespace(self, namespace: str) -> str | None:
        for rule in self.namespaces:
            if rule.matches(namespace):
                return rule.environment
        return None


# ---------------------------------------------------------------------------
# Validation helpers: each takes the value, its path and the error list.

Errors = list[FieldError]


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


def _mapping(value: object, path: str, errors: Errors) -> Mapping[str, Any] | None:
    if isinstance(value, Mapping):
        return value
    errors.append(FieldError(path, f"must be a mapping, not {_type_name(value)}"))
    return None


def _known_keys(
    value: Mapping[str, Any], allowed: tuple[str, ...], path: str, errors: Errors
) -> None:
    for key in value:
        if key not in allowed:
            errors.append(
                FieldError(_join(path, str(key)), f"unknown key (allowed: {', '.join(allowed)})")
            )


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _int(
    value: object,
    path: str,
    errors: Errors,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        errors.append(FieldError(path, f"must be an integer, not {_type_name(value)}"))
        return
    if minimum is not None and maximum is not None and not minimum <= value <= maximum:
        errors.append(FieldError(path, f"must be between {minimum} and {maximum}"))
    elif minimum is not None and value < minimum:
        errors.append(FieldError(path, f"must be at least {minimum}"))


def _bool(value: object, path: str, errors: Errors) -> None:
    if not isinstance(value, bool):
        errors.append(FieldError(path, f"must be true or false, not {_type_name(value)}"))


def _str(value: object, path: str, errors: Errors) -> bool:
    if not isinstance(value, str) or not value:
        errors.append(FieldError(path, "must be a non-empty string"))
        return False
    return True


def _choice(value: object, choices: tuple[str, ...], path: str, errors: Errors) -> None:
    if value not in choices:
        errors.append(FieldError(path, f"must be one of {', '.join(choices)}, not {value!r}"))


def _list(value: object, path: str, errors: Errors, *, non_empty: bool = False) -> list[Any]:
    if not isinstance(value, list):
        errors.append(FieldError(path, f"must be a list, not {_type_name(value)}"))
        return []
    if non_empty and not value:
        errors.append(FieldError(path, "must not be empty"))
    return value


def _entries(
    value: object, path: str, errors: Errors, *, non_empty: bool = False
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Each mapping of a list with its path (``path[i]``); other items are reported."""
    for i, item in enumerate(_list(value, path, errors, non_empty=non_empty)):
        item_path = f"{path}[{i}]"
        mapping = _mapping(item, item_path, errors)
        if mapping is not None:
            yield item_path, mapping


def _int_or_percent(value: object, path: str, errors: Errors) -> None:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            errors.append(FieldError(path, "must not be negative"))
        return
    if isinstance(value, str) and value.endswith("%") and value[:-1].isdigit():
        return
    errors.append(FieldError(path, "must be an integer or a percentage such as 25%"))


# ---------------------------------------------------------------------------
# The seed's rollout: block.

_ROLLOUT_KEYS = ("enabled", "strategy", "canary", "blueGreen")
_CANARY_KEYS = (
    "steps",
    "analysis",
    "maxSurge",
    "maxUnavailable",
    "scaleDownDelaySeconds",
    "abortScaleDownDelaySeconds",
    "dynamicStableScale",
)
_BLUEGREEN_KEYS = (
    "autoPromotionEnabled",
    "autoPromotionSeconds",
    "scaleDownDelaySeconds",
    "abortScaleDownDelaySeconds",
    "previewReplicaCount",
    "prePromotionAnalysis",
    "postPromotionAnalysis",
)
STEP_ACTIONS = ("setWeight", "pause", "analysis", "setCanaryScale", "experiment")


def _analysis_args(value: object, path: str, errors: Errors) -> None:
    for arg_path, arg_map in _entries(value, path, errors):
        _known_keys(arg_map, ("name", "value", "valueFrom"), arg_path, errors)
        _str(arg_map.get("name"), _join(arg_path, "name"), errors)
        has_value = "value" in arg_map
        has_from = "valueFrom" in arg_map
        if has_value == has_from:
            errors.append(FieldError(arg_path, "needs exactly one of value or valueFrom"))
        if has_value and not isinstance(arg_map["value"], str):
            errors.append(FieldError(_join(arg_path, "value"), "must be a string (quote numbers)"))
        if has_from:
            source = _mapping(arg_map["valueFrom"], _join(arg_path, "valueFrom"), errors)
            if source is not None:
                _known_keys(
                    source,
                    ("podTemplateHashValue", "fieldRef"),
                    _join(arg_path, "valueFrom"),
                    errors,
                )


def _analysis(value: object, path: str, errors: Errors, *, background: bool = False) -> None:
    block = _mapping(value, path, errors)
    if block is None:
        return
    allowed: tuple[str, ...] = ("templates", "args", "dryRun", "measurementRetention")
    if background:
        allowed = (*allowed, "startingStep")
    _known_keys(block, allowed, path, errors)
    templates = block.get("templates")
    for t_path, t_map in _entries(templates, _join(path, "templates"), errors, non_empty=True):
        _known_keys(t_map, ("templateName", "clusterScope"), t_path, errors)
        _str(t_map.get("templateName"), _join(t_path, "templateName"), errors)
        if "clusterScope" in t_map:
            _bool(t_map["clusterScope"], _join(t_path, "clusterScope"), errors)
    if "args" in block:
        _analysis_args(block["args"], _join(path, "args"), errors)
    if "startingStep" in block:
        _int(block["startingStep"], _join(path, "startingStep"), errors, minimum=0)
    for key in ("dryRun", "measurementRetention"):
        if key in block:
            _list(block[key], _join(path, key), errors)


def _set_canary_scale(value: object, path: str, errors: Errors) -> None:
    block = _mapping(value, path, errors)
    if block is None:
        return
    _known_keys(block, ("weight", "replicas", "matchTrafficWeight"), path, errors)
    if len(block) != 1:
        errors.append(
            FieldError(path, "needs exactly one of weight, replicas or matchTrafficWeight")
        )
    if "weight" in block:
        _int(block["weight"], _join(path, "weight"), errors, minimum=0, maximum=100)
    if "replicas" in block:
        _int(block["replicas"], _join(path, "replicas"), errors, minimum=0)
    if "matchTrafficWeight" in block:
        _bool(block["matchTrafficWeight"], _join(path, "matchTrafficWeight"), errors)


def _experiment(value: object, path: str, errors: Errors) -> None:
    block = _mapping(value, path, errors)
    if block is None:
        return
    _known_keys(block, ("duration", "templates", "analyses"), path, errors)
    if "duration" in block:
        duration = block["duration"]
        try:
            if not isinstance(duration, str):
                raise DurationError("must be a duration string such as 10m")
            parse_go_duration(duration)
        except DurationError as err:
            errors.append(FieldError(_join(path, "duration"), str(err)))
    templates = block.get("templates")
    for t_path, t_map in _entries(templates, _join(path, "templates"), errors, non_empty=True):
        _known_keys(t_map, ("name", "specRef", "replicas", "weight"), t_path, errors)
        _str(t_map.get("name"), _join(t_path, "name"), errors)
        _choice(t_map.get("specRef"), ("stable", "canary"), _join(t_path, "specRef"), errors)
        if "replicas" in t_map:
            _int(t_map["replicas"], _join(t_path, "replicas"), errors, minimum=0)
        if "weight" in t_map:
            _int(t_map["weight"], _join(t_path, "weight"), errors, minimum=0, maximum=100)
    for a_path, a_map in _entries(block.get("analyses", []), _join(path, "analyses"), errors):
        _known_keys(
            a_map,
            ("name", "templateName", "clusterScope", "args", "requiredForCompletion"),
            a_path,
            errors,
        )
        _str(a_map.get("name"), _join(a_path, "name"), errors)
        _str(a_map.get("templateName"), _join(a_path, "templateName"), errors)
        if "args" in a_map:
            _analysis_args(a_map["args"], _join(a_path, "args"), errors)


def _step(value: object, path: str, errors: Errors) -> None:
    step = _mapping(value, path, errors)
    if step is None:
        return
    _known_keys(step, STEP_ACTIONS, path, errors)
    actions = [key for key in step if key in STEP_ACTIONS]
    if len(actions) != 1:
        found = f" (found {', '.join(actions)})" if actions else ""
        errors.append(
            FieldError(path, f"needs exactly one action of {', '.join(STEP_ACTIONS)}{found}")
        )
    if "setWeight" in step:
        _int(step["setWeight"], _join(path, "setWeight"), errors, minimum=0, maximum=100)
    if "pause" in step:
        pause = step["pause"]
        if pause is None:
            pause = {}
        pause_map = _mapping(pause, _join(path, "pause"), errors)
        if pause_map is not None:
            _known_keys(pause_map, ("duration",), _join(path, "pause"), errors)
            if "duration" in pause_map:
                try:
                    pause_seconds(pause_map["duration"])
                except DurationError as err:
                    errors.append(FieldError(_join(path, "pause.duration"), str(err)))
    if "analysis" in step:
        _analysis(step["analysis"], _join(path, "analysis"), errors)
    if "setCanaryScale" in step:
        _set_canary_scale(step["setCanaryScale"], _join(path, "setCanaryScale"), errors)
    if "experiment" in step:
        _experiment(step["experiment"], _join(path, "experiment"), errors)


def _canary(value: object, path: str, errors: Errors) -> None:
    block = _mapping(value, path, errors)
    if block is None:
        return
    _known_keys(block, _CANARY_KEYS, path, errors)
    for i, step in enumerate(_list(block.get("steps", []), _join(path, "steps"), errors)):
        _step(step, f"{_join(path, 'steps')}[{i}]", errors)
    if "analysis" in block:
        _analysis(block["analysis"], _join(path, "analysis"), errors, background=True)
    for key in ("maxSurge", "maxUnavailable"):
        if key in block:
            _int_or_percent(block[key], _join(path, key), errors)
    if block.get("maxSurge") in (0, "0%") and block.get("maxUnavailable") in (0, "0%"):
        errors.append(FieldError(path, "maxSurge and maxUnavailable cannot both be zero"))
    for key in ("scaleDownDelaySeconds", "abortScaleDownDelaySeconds"):
        if key in block:
            _int(block[key], _join(path, key), errors, minimum=0)
    if "dynamicStableScale" in block:
        _bool(block["dynamicStableScale"], _join(path, "dynamicStableScale"), errors)


def _blue_green(value: object, path: str, errors: Errors) -> None:
    block = _mapping(value, path, errors)
    if block is None:
        return
    _known_keys(block, _BLUEGREEN_KEYS, path, errors)
    if "autoPromotionEnabled" in block:
        _bool(block["autoPromotionEnabled"], _join(path, "autoPromotionEnabled"), errors)
    for key in (
        "autoPromotionSeconds",
        "scaleDownDelaySeconds",
        "abortScaleDownDelaySeconds",
        "previewReplicaCount",
    ):
        if key in block:
            _int(block[key], _join(path, key), errors, minimum=0)
    for key in ("prePromotionAnalysis", "postPromotionAnalysis"):
        if key in block:
            _analysis(block[key], _join(path, key), errors)


def validate_rollout_block(value: object, path: str) -> list[FieldError]:
    """Every error in a seed ``rollout:`` block (from the policy or a service annotation)."""
    errors: Errors = []
    block = _mapping(value, path, errors)
    if block is None:
        return errors
    _known_keys(block, _ROLLOUT_KEYS, path, errors)
    if "enabled" in block:
        _bool(block["enabled"], _join(path, "enabled"), errors)
    if "strategy" in block:
        _choice(block["strategy"], STRATEGIES, _join(path, "strategy"), errors)
    if "canary" in block:
        _canary(block["canary"], _join(path, "canary"), errors)
    if "blueGreen" in block:
        _blue_green(block["blueGreen"], _join(path, "blueGreen"), errors)
    return errors


# ---------------------------------------------------------------------------
# The whole document.

_TOP_KEYS = (
    "apiVersion",
    "kind",
    "defaultEnvironment",
    "rolloutUpdates",
    "namespaces",
    "environments",
)
_ENV_KEYS = ("rollout", "scaleDown", "allowServiceOverrides", "trafficRouting")


def _validate_document(doc: object) -> list[FieldError]:
    errors: Errors = []
    top = _mapping(doc, "", errors)
    if top is None:
        return [FieldError("(document)", f"must be a mapping, not {_type_name(doc)}")]
    _known_keys(top, _TOP_KEYS, "", errors)
    if "apiVersion" in top and top["apiVersion"] != POLICY_API_VERSION:
        errors.append(FieldError("apiVersion", f"must be {POLICY_API_VERSION}"))
    if "kind" in top and top["kind"] != POLICY_KIND:
        errors.append(FieldError("kind", f"must be {POLICY_KIND}"))
    if "rolloutUpdates" in top:
        _choice(top["rolloutUpdates"], ROLLOUT_UPDATE_MODES, "rolloutUpdates", errors)

    envs = top.get("environments")
    env_names: set[str] = set()
    if envs is None:
        errors.append(FieldError("environments", "is required"))
    else:
        env_map = _mapping(envs, "environments", errors)
        if env_map is not None:
            if not env_map:
                errors.append(FieldError("environments", "must name at least one environment"))
            for name, env in env_map.items():
                path = f"environments.{name}"
                env_names.add(str(name))
                env_block = _mapping(env, path, errors)
                if env_block is None:
                    continue
                _known_keys(env_block, _ENV_KEYS, path, errors)
                if "rollout" not in env_block:
                    errors.append(FieldError(_join(path, "rollout"), "is required"))
                else:
                    errors.extend(validate_rollout_block(env_block["rollout"], f"{path}.rollout"))
                if "scaleDown" in env_block:
                    _choice(env_block["scaleDown"], SCALE_DOWN_MODES, f"{path}.scaleDown", errors)
                if "allowServiceOverrides" in env_block:
                    _bool(
                        env_block["allowServiceOverrides"], f"{path}.allowServiceOverrides", errors
                    )
                if "trafficRouting" in env_block:
                    _choice(
                        env_block["trafficRouting"],
                        TRAFFIC_ROUTING_MODES,
                        f"{path}.trafficRouting",
                        errors,
                    )

    default = top.get("defaultEnvironment")
    if default is None:
        errors.append(FieldError("defaultEnvironment", "is required"))
    elif (
        _str(default, "defaultEnvironment", errors)
        and envs is not None
        and default not in env_names
    ):
        errors.append(FieldError("defaultEnvironment", f"names no environment: {default!r}"))

    for path, rule_map in _entries(top.get("namespaces", []), "namespaces", errors):
        _known_keys(rule_map, ("pattern", "environment"), path, errors)
        _str(rule_map.get("pattern"), f"{path}.pattern", errors)
        env = rule_map.get("environment")
        if _str(env, f"{path}.environment", errors) and envs is not None and env not in env_names:
            errors.append(FieldError(f"{path}.environment", f"names no environment: {env!r}"))
    return errors


def policy_digest(doc: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON form: the same policy hashes the same however written."""
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def parse_policy(
    doc: object, *, name: str = "built-in", resource_version: str = "", source: str = "policy"
) -> Policy:
    """Validate a parsed policy document and build the Policy; raises PolicyInvalid."""
    errors = _validate_document(doc)
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
    text: str, *, name: str = "built-in", resource_version: str = "", source: str = "policy"
) -> Policy:
    return parse_policy(
        load_yaml(text, source), name=name, resource_version=resource_version, source=source
    )


def policy_from_configmap(configmap: Mapping[str, Any], *, source: str | None = None) -> Policy:
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
        text, name=name, resource_version=str(meta.get("resourceVersion", "")), source=where
    )


def policy_from_document(doc: object, *, source: str, name: str | None = None) -> Policy:
    """A policy from a parsed file: either the policy itself or a ConfigMap holding it."""
    if isinstance(doc, Mapping) and doc.get("kind") == "ConfigMap":
        return policy_from_configmap(doc, source=source)
    return parse_policy(doc, name=name or source, source=source)


@functools.cache
def builtin_policy() -> Policy:
    """The built-in default (the seed's dev/staging/prod examples)."""
    return parse_policy_text(DEFAULT_POLICY_YAML, name="built-in", source="built-in policy")
