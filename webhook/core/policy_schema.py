"""The policy document's schema: the values it allows, and the validator that checks it.

Validation collects every error with its path (``environments.prod.rollout.canary
.steps[2].setWeight``) instead of stopping at the first, and treats unknown keys as
errors, so a typo such as ``setWieght`` is refused rather than silently ignored. The
seed's ``rollout:`` block is checked against what Argo Rollouts accepts for the keys the
product passes on (``validate_rollout_block``, also used for a service's annotation).

Each check takes the value, its path and the error list, and appends to the list.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal

from webhook.core.durations import DurationError, parse_go_duration, pause_seconds
from webhook.core.errors import FieldError

Strategy = Literal["canary", "bluegreen"]
ScaleDown = Literal["never", "onsuccess", "progressively"]
TrafficRouting = Literal["auto", "gatewayAPI", "istio", "none"]
RolloutUpdates = Literal["immediate", "nextChange", "never"]

STRATEGIES: tuple[Strategy, ...] = ("canary", "bluegreen")
SCALE_DOWN_MODES: tuple[ScaleDown, ...] = ("never", "onsuccess", "progressively")
TRAFFIC_ROUTING_MODES: tuple[TrafficRouting, ...] = ("auto", "gatewayAPI", "istio", "none")
ROLLOUT_UPDATE_MODES: tuple[RolloutUpdates, ...] = ("immediate", "nextChange", "never")

POLICY_API_VERSION = "rollout-webhook.io/v1alpha1"
POLICY_KIND = "Policy"

Errors = list[FieldError]


# ---------------------------------------------------------------------------
# Checks of one value.


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


def _ints(
    block: Mapping[str, Any], keys: tuple[str, ...], path: str, errors: Errors, *, minimum: int
) -> None:
    """The integer settings of a block, those of ``keys`` it has."""
    for key in keys:
        if key in block:
            _int(block[key], _join(path, key), errors, minimum=minimum)


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
STEP_ACTIONS = (
    "setWeight",
    "pause",
    "analysis",
    "setCanaryScale",
    "experiment",
    "setHeaderRoute",
    "setMirrorRoute",
)


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
        _experiment_duration(block["duration"], _join(path, "duration"), errors)
    templates = block.get("templates")
    for t_path, t_map in _entries(templates, _join(path, "templates"), errors, non_empty=True):
        _experiment_template(t_map, t_path, errors)
    for a_path, a_map in _entries(block.get("analyses", []), _join(path, "analyses"), errors):
        _experiment_analysis(a_map, a_path, errors)


def _experiment_duration(value: object, path: str, errors: Errors) -> None:
    try:
        if not isinstance(value, str):
            raise DurationError("must be a duration string such as 10m")
        parse_go_duration(value)
    except DurationError as err:
        errors.append(FieldError(path, str(err)))


def _experiment_template(template: Mapping[str, Any], path: str, errors: Errors) -> None:
    _known_keys(template, ("name", "specRef", "replicas", "weight"), path, errors)
    _str(template.get("name"), _join(path, "name"), errors)
    _choice(template.get("specRef"), ("stable", "canary"), _join(path, "specRef"), errors)
    if "replicas" in template:
        _int(template["replicas"], _join(path, "replicas"), errors, minimum=0)
    if "weight" in template:
        _int(template["weight"], _join(path, "weight"), errors, minimum=0, maximum=100)


def _experiment_analysis(analysis: Mapping[str, Any], path: str, errors: Errors) -> None:
    _known_keys(
        analysis,
        ("name", "templateName", "clusterScope", "args", "requiredForCompletion"),
        path,
        errors,
    )
    _str(analysis.get("name"), _join(path, "name"), errors)
    _str(analysis.get("templateName"), _join(path, "templateName"), errors)
    if "args" in analysis:
        _analysis_args(analysis["args"], _join(path, "args"), errors)


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
        _pause(step["pause"], _join(path, "pause"), errors)
    if "analysis" in step:
        _analysis(step["analysis"], _join(path, "analysis"), errors)
    if "setCanaryScale" in step:
        _set_canary_scale(step["setCanaryScale"], _join(path, "setCanaryScale"), errors)
    if "experiment" in step:
        _experiment(step["experiment"], _join(path, "experiment"), errors)


def _pause(value: object, path: str, errors: Errors) -> None:
    # `pause:` with nothing after it is a pause until promoted, as `pause: {}` is.
    pause = _mapping({} if value is None else value, path, errors)
    if pause is None:
        return
    _known_keys(pause, ("duration",), path, errors)
    if "duration" in pause:
        try:
            pause_seconds(pause["duration"])
        except DurationError as err:
            errors.append(FieldError(_join(path, "duration"), str(err)))


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
    _ints(block, ("scaleDownDelaySeconds", "abortScaleDownDelaySeconds"), path, errors, minimum=0)
    if "dynamicStableScale" in block:
        _bool(block["dynamicStableScale"], _join(path, "dynamicStableScale"), errors)


def _blue_green(value: object, path: str, errors: Errors) -> None:
    block = _mapping(value, path, errors)
    if block is None:
        return
    _known_keys(block, _BLUEGREEN_KEYS, path, errors)
    if "autoPromotionEnabled" in block:
        _bool(block["autoPromotionEnabled"], _join(path, "autoPromotionEnabled"), errors)
    _ints(
        block,
        (
            "autoPromotionSeconds",
            "scaleDownDelaySeconds",
            "abortScaleDownDelaySeconds",
            "previewReplicaCount",
        ),
        path,
        errors,
        minimum=0,
    )
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


def validate_policy_document(doc: object) -> list[FieldError]:
    """Every error in a parsed policy document (docs/policy.md), in document order."""
    errors: Errors = []
    top = _mapping(doc, "", errors)
    if top is None:
        return [FieldError("(document)", f"must be a mapping, not {_type_name(doc)}")]
    _header(top, errors)
    env_names = _environments(top, errors)
    _default_environment(top.get("defaultEnvironment"), env_names, errors)
    for path, rule in _entries(top.get("namespaces", []), "namespaces", errors):
        _namespace_rule(rule, path, env_names, errors)
    return errors


def _header(top: Mapping[str, Any], errors: Errors) -> None:
    _known_keys(top, _TOP_KEYS, "", errors)
    if "apiVersion" in top and top["apiVersion"] != POLICY_API_VERSION:
        errors.append(FieldError("apiVersion", f"must be {POLICY_API_VERSION}"))
    if "kind" in top and top["kind"] != POLICY_KIND:
        errors.append(FieldError("kind", f"must be {POLICY_KIND}"))
    if "rolloutUpdates" in top:
        _choice(top["rolloutUpdates"], ROLLOUT_UPDATE_MODES, "rolloutUpdates", errors)


def _environments(top: Mapping[str, Any], errors: Errors) -> set[str] | None:
    """The environments' names (None: the document has no ``environments``; the names
    that refer to one are then not checked)."""
    envs = top.get("environments")
    if envs is None:
        errors.append(FieldError("environments", "is required"))
        return None
    env_map = _mapping(envs, "environments", errors)
    if env_map is None:
        return set()
    if not env_map:
        errors.append(FieldError("environments", "must name at least one environment"))
    for name, env in env_map.items():
        _environment(env, f"environments.{name}", errors)
    return {str(name) for name in env_map}


def _environment(value: object, path: str, errors: Errors) -> None:
    env = _mapping(value, path, errors)
    if env is None:
        return
    _known_keys(env, _ENV_KEYS, path, errors)
    if "rollout" not in env:
        errors.append(FieldError(_join(path, "rollout"), "is required"))
    else:
        errors.extend(validate_rollout_block(env["rollout"], f"{path}.rollout"))
    if "scaleDown" in env:
        _choice(env["scaleDown"], SCALE_DOWN_MODES, f"{path}.scaleDown", errors)
    if "allowServiceOverrides" in env:
        _bool(env["allowServiceOverrides"], f"{path}.allowServiceOverrides", errors)
    if "trafficRouting" in env:
        _choice(env["trafficRouting"], TRAFFIC_ROUTING_MODES, f"{path}.trafficRouting", errors)


def _default_environment(value: object, env_names: set[str] | None, errors: Errors) -> None:
    if value is None:
        errors.append(FieldError("defaultEnvironment", "is required"))
        return
    _names_an_environment(value, "defaultEnvironment", env_names, errors)


def _namespace_rule(
    rule: Mapping[str, Any], path: str, env_names: set[str] | None, errors: Errors
) -> None:
    _known_keys(rule, ("pattern", "environment"), path, errors)
    _str(rule.get("pattern"), f"{path}.pattern", errors)
    _names_an_environment(rule.get("environment"), f"{path}.environment", env_names, errors)


def _names_an_environment(
    value: object, path: str, env_names: set[str] | None, errors: Errors
) -> None:
    if _str(value, path, errors) and env_names is not None and value not in env_names:
        errors.append(FieldError(path, f"names no environment: {value!r}"))
