"""The policy document's own settings: the values they allow, and the check of a document.

Validation collects every error with its path (``environments.prod.scaleDown``) instead
of stopping at the first, and treats unknown keys as errors, so a typo is refused rather
than silently ignored. The ``rollout:`` block of each environment is checked by
``webhook.core.policy_strategy``: the product's rules, and the Rollout schema when one is
at hand.

The keys of the top level and of an environment are tables (``TOP_LEVEL_KEYS``,
``ENVIRONMENT_KEYS``): a new policy setting is one entry with its check. Each check takes
the value, its path, the error list and the context, and appends to the list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from webhook.core.crd_schema import RolloutSchema
from webhook.core.errors import FieldError
from webhook.core.policy_strategy import STRATEGIES as STRATEGIES
from webhook.core.policy_strategy import Strategy as Strategy
from webhook.core.policy_strategy import validate_rollout_block as validate_rollout_block

ScaleDown = Literal["never", "onsuccess", "progressively"]
TrafficRouting = Literal["auto", "gatewayAPI", "istio", "none"]
RolloutUpdates = Literal["immediate", "nextChange", "never"]

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


# ---------------------------------------------------------------------------
# The whole document.


@dataclass(frozen=True)
class Context:
    """What a check may need beyond its value: the Rollout schema (None: product rules
    only) and the environments' names (None: the document has none to check against)."""

    schema: RolloutSchema | None = None
    environments: frozenset[str] | None = None


Check = Callable[[object, str, Errors, Context], None]


def _rollout(value: object, path: str, errors: Errors, context: Context) -> None:
    errors.extend(validate_rollout_block(value, path, context.schema))


def _choice_of(choices: tuple[str, ...]) -> Check:
    return lambda value, path, errors, _context: _choice(value, choices, path, errors)


def _api_version(value: object, path: str, errors: Errors, _context: Context) -> None:
    if value != POLICY_API_VERSION:
        errors.append(FieldError(path, f"must be {POLICY_API_VERSION}"))


def _kind(value: object, path: str, errors: Errors, _context: Context) -> None:
    if value != POLICY_KIND:
        errors.append(FieldError(path, f"must be {POLICY_KIND}"))


def _namespaces(value: object, path: str, errors: Errors, context: Context) -> None:
    for rule_path, rule in _entries(value, path, errors):
        _known_keys(rule, ("pattern", "environment"), rule_path, errors)
        _str(rule.get("pattern"), f"{rule_path}.pattern", errors)
        _names_an_environment(rule.get("environment"), f"{rule_path}.environment", context, errors)


def _default_environment(value: object, path: str, errors: Errors, context: Context) -> None:
    _names_an_environment(value, path, context, errors)


def _environments(value: object, path: str, errors: Errors, context: Context) -> None:
    env_map = _mapping(value, path, errors)
    if env_map is None:
        return
    if not env_map:
        errors.append(FieldError(path, "must name at least one environment"))
    for name, env in env_map.items():
        _environment(env, f"{path}.{name}", errors, context)


ENVIRONMENT_KEYS: dict[str, Check] = {
    "rollout": _rollout,
    "scaleDown": _choice_of(SCALE_DOWN_MODES),
    "allowServiceOverrides": lambda value, path, errors, _context: _bool(value, path, errors),
    "trafficRouting": _choice_of(TRAFFIC_ROUTING_MODES),
}
"""The keys of an environment and the check of each, in the order errors are reported."""
REQUIRED_ENVIRONMENT_KEYS = ("rollout",)

TOP_LEVEL_KEYS: dict[str, Check] = {
    "apiVersion": _api_version,
    "kind": _kind,
    "rolloutUpdates": _choice_of(ROLLOUT_UPDATE_MODES),
    "environments": _environments,
    "defaultEnvironment": _default_environment,
    "namespaces": _namespaces,
}
"""The keys of the document and the check of each, in the order errors are reported."""
REQUIRED_TOP_LEVEL_KEYS = ("environments", "defaultEnvironment")


def _section(
    block: Mapping[str, Any],
    keys: Mapping[str, Check],
    required: tuple[str, ...],
    path: str,
    errors: Errors,
    context: Context,
) -> None:
    """Unknown keys first, then each known key's check in the table's order."""
    _known_keys(block, tuple(keys), path, errors)
    for key, check in keys.items():
        if key in block:
            check(block[key], _join(path, key), errors, context)
        elif key in required:
            errors.append(FieldError(_join(path, key), "is required"))


def validate_policy_document(doc: object, schema: RolloutSchema | None = None) -> list[FieldError]:
    """Every error in a parsed policy document (docs/policy.md). With ``schema`` (the
    Rollout CRD's), strategy blocks are also checked against it."""
    errors: Errors = []
    top = _mapping(doc, "", errors)
    if top is None:
        return [FieldError("(document)", f"must be a mapping, not {_type_name(doc)}")]
    envs = top.get("environments")
    names = frozenset(str(n) for n in envs) if isinstance(envs, Mapping) else None
    if envs is not None and names is None:
        names = frozenset()
    context = Context(schema, names)
    _section(top, TOP_LEVEL_KEYS, REQUIRED_TOP_LEVEL_KEYS, "", errors, context)
    return errors


def _environment(value: object, path: str, errors: Errors, context: Context) -> None:
    env = _mapping(value, path, errors)
    if env is not None:
        _section(env, ENVIRONMENT_KEYS, REQUIRED_ENVIRONMENT_KEYS, path, errors, context)


def _names_an_environment(value: object, path: str, context: Context, errors: Errors) -> None:
    names = context.environments
    if _str(value, path, errors) and names is not None and value not in names:
        errors.append(FieldError(path, f"names no environment: {value!r}"))
