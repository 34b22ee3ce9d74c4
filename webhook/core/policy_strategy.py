"""A strategy block (the seed's ``rollout:`` block, in the policy or a service's
annotation) checked twice: by the product's own rules, and by the Rollout schema.

Which Argo fields and step kinds exist is not decided here: the Rollout CRD the cluster
serves (or the file given with ``--crd``) decides, so every field and step of that Argo
Rollouts release is accepted (``setHeaderRoute``, ``setMirrorRoute``, ``plugin``, ...)
and a misspelt one is refused with its path. The schema is read strictly: where it lists
an object's fields, any other field is an error, although the API server would only
prune it from a Rollout.

The product's rules are what a schema cannot say: weights are 0..100, durations are what
the controller parses, a step has exactly one action, and the fields the product writes
itself (the Services, the traffic routing) are not the policy's to set. Without a schema
(no ``--crd``, no CRD in the cluster) only these rules apply; callers say so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeGuard

from webhook.core.crd_schema import RolloutSchema, block_problems, path_order
from webhook.core.durations import DurationError, parse_go_duration, pause_seconds
from webhook.core.errors import FieldError
from webhook.core.policy_notifications import notification_problems

Strategy = Literal["canary", "bluegreen"]
STRATEGIES: tuple[Strategy, ...] = ("canary", "bluegreen")

Path = tuple[str | int, ...]
Problems = list[tuple[Path, str]]

_ROLLOUT_SPEC = ("workloadRef", "selector", "replicas", "template")
"""Fields of the Rollout's spec, not of a strategy: a block that holds one was written
for another place, and the webhook sets them from the Deployment anyway."""

PRODUCT_OWNED: Mapping[str, tuple[str, ...]] = {
    # The product clones the stable Service and finds the routes; ping-pong Services
    # replace exactly those (Argo refuses both together).
    "canary": ("stableService", "canaryService", "trafficRouting", "pingPong", *_ROLLOUT_SPEC),
    "blueGreen": ("activeService", "previewService", *_ROLLOUT_SPEC),
}
"""Fields of a strategy the product generates for each service: a policy must not set
them (one policy serves many services, each with its own Services and routes)."""

NO_SCHEMA_WARNING = (
    "no Rollout CRD in the cluster: strategies were checked by the product's rules only"
)
"""Said with a policy accepted without a schema (at most 120 characters with a prefix:
Kubernetes clips longer admission warnings)."""
NO_SCHEMA_NOTE = (
    "no Rollout CRD at hand: strategy blocks were checked by the product's rules only, "
    "not against the Rollout schema (give --crd FILE, or run in a cluster with Argo Rollouts)"
)


def render_path(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    names.update({list: "a list", dict: "a mapping"})
    return names.get(type(value), type(value).__name__)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _bounded(value: object, path: Path, out: Problems, low: int, high: int | None) -> None:
    if not _is_int(value):
        out.append((path, f"must be an integer, not {_type_name(value)}"))
    elif high is not None and not low <= value <= high:
        out.append((path, f"must be between {low} and {high}"))
    elif value < low:
        out.append((path, f"must be at least {low}"))


def _ints(block: Mapping[str, Any], keys: tuple[str, ...], path: Path, out: Problems) -> None:
    for key in keys:
        if key in block:
            _bounded(block[key], (*path, key), out, 0, None)


def _percent(block: Mapping[str, Any], key: str, path: Path, out: Problems) -> None:
    if key in block:
        _bounded(block[key], (*path, key), out, 0, 100)


def _int_or_percent(value: object, path: Path, out: Problems) -> None:
    if _is_int(value):
        if value < 0:
            out.append((path, "must not be negative"))
    elif not (isinstance(value, str) and value.endswith("%") and value[:-1].isdigit()):
        out.append((path, "must be an integer or a percentage such as 25%"))


def _mapping(value: object, path: Path, out: Problems) -> Mapping[str, Any] | None:
    if isinstance(value, Mapping):
        return value
    out.append((path, f"must be a mapping, not {_type_name(value)}"))
    return None


def _args(block: Mapping[str, Any], path: Path, out: Problems) -> None:
    """Each analysis argument gives its value one way: literally or from a field."""
    args = block.get("args")
    for i, arg in enumerate(args if isinstance(args, list) else []):
        if isinstance(arg, Mapping) and ("value" in arg) == ("valueFrom" in arg):
            out.append(((*path, "args", i), "needs exactly one of value or valueFrom"))


def _analysis(block: Mapping[str, Any], path: Path, out: Problems) -> None:
    """An analysis without templates runs nothing: Argo refuses it."""
    templates = block.get("templates")
    if templates is None or templates == []:
        out.append(((*path, "templates"), "must name at least one template"))
    for i, template in enumerate(templates if isinstance(templates, list) else []):
        if isinstance(template, Mapping) and not template.get("templateName"):
            out.append(((*path, "templates", i, "templateName"), "is required"))
    _args(block, path, out)


# ---------------------------------------------------------------------------
# Steps: one action each, with the ranges Argo enforces.


def _pause(value: object, path: Path, out: Problems) -> None:
    # `pause:` with nothing after it waits for a promotion, as `pause: {}` does.
    pause = _mapping({} if value is None else value, path, out)
    if pause is not None and "duration" in pause:
        try:
            pause_seconds(pause["duration"])
        except DurationError as err:
            out.append(((*path, "duration"), str(err)))


def _set_canary_scale(value: object, path: Path, out: Problems) -> None:
    block = _mapping(value, path, out)
    if block is None:
        return
    chosen = [k for k in ("weight", "replicas", "matchTrafficWeight") if k in block]
    if len(chosen) != 1:
        out.append((path, "needs exactly one of weight, replicas or matchTrafficWeight"))
    _percent(block, "weight", path, out)
    _ints(block, ("replicas",), path, out)


def _experiment(value: object, path: Path, out: Problems) -> None:
    block = _mapping(value, path, out)
    if block is None:
        return
    if "duration" in block:
        duration = block["duration"]
        try:
            if not isinstance(duration, str):
                raise DurationError("must be a duration string such as 10m")
            parse_go_duration(duration)
        except DurationError as err:
            out.append(((*path, "duration"), str(err)))
    templates = block.get("templates")
    if not isinstance(templates, list) or not templates:
        out.append(((*path, "templates"), "must list at least one template"))
        return
    for i, template in enumerate(templates):
        if isinstance(template, Mapping):
            where = (*path, "templates", i)
            if template.get("specRef") not in ("stable", "canary"):
                out.append(((*where, "specRef"), "must be stable or canary"))
            _percent(template, "weight", where, out)
            _ints(template, ("replicas",), where, out)
    analyses = block.get("analyses")
    for i, analysis in enumerate(analyses if isinstance(analyses, list) else []):
        if isinstance(analysis, Mapping):
            _args(analysis, (*path, "analyses", i), out)


def _set_mirror_route(value: object, path: Path, out: Problems) -> None:
    block = _mapping(value, path, out)
    if block is not None:
        _percent(block, "percentage", path, out)


def _analysis_step(value: object, path: Path, out: Problems) -> None:
    block = _mapping(value, path, out)
    if block is not None:
        _analysis(block, path, out)


StepCheck = Callable[[object, Path, Problems], None]
STEP_RULES: Mapping[str, StepCheck] = {
    "setWeight": lambda value, path, out: _bounded(value, path, out, 0, 100),
    "pause": _pause,
    "setCanaryScale": _set_canary_scale,
    "experiment": _experiment,
    "setMirrorRoute": _set_mirror_route,
    "analysis": _analysis_step,
}
"""The product's rules of the step kinds that have any; which kinds exist is the schema's
to say (``plugin``, ``setHeaderRoute`` and every other kind have no rule of ours)."""


def _step(value: object, path: Path, out: Problems) -> None:
    step = _mapping(value, path, out)
    if step is None:
        return
    if len(step) != 1:
        found = f" (found {', '.join(map(str, step))})" if step else ""
        out.append((path, f"needs exactly one action{found}"))
    for action, check in STEP_RULES.items():
        if action in step:
            check(step[action], (*path, action), out)


# ---------------------------------------------------------------------------
# The strategy blocks.


def _product_owned(block: Mapping[str, Any], field: str, path: Path, out: Problems) -> None:
    for key in PRODUCT_OWNED[field]:
        if key in block:
            out.append(((*path, key), "is set by rollout-webhook for each service; remove it"))


def _canary_rules(block: Mapping[str, Any], path: Path, out: Problems) -> None:
    steps = block.get("steps", [])
    if not isinstance(steps, list):
        out.append(((*path, "steps"), f"must be a list, not {_type_name(steps)}"))
    else:
        for i, step in enumerate(steps):
            _step(step, (*path, "steps", i), out)
    if isinstance(block.get("analysis"), Mapping):
        _analysis(block["analysis"], (*path, "analysis"), out)
    for key in ("maxSurge", "maxUnavailable"):
        if key in block:
            _int_or_percent(block[key], (*path, key), out)
    if block.get("maxSurge") in (0, "0%") and block.get("maxUnavailable") in (0, "0%"):
        out.append((path, "maxSurge and maxUnavailable cannot both be zero"))
    _ints(
        block,
        ("scaleDownDelaySeconds", "abortScaleDownDelaySeconds", "scaleDownDelayRevisionLimit"),
        path,
        out,
    )


def _blue_green_rules(block: Mapping[str, Any], path: Path, out: Problems) -> None:
    _ints(
        block,
        (
            "autoPromotionSeconds",
            "scaleDownDelaySeconds",
            "abortScaleDownDelaySeconds",
            "previewReplicaCount",
            "scaleDownDelayRevisionLimit",
        ),
        path,
        out,
    )
    for key in ("prePromotionAnalysis", "postPromotionAnalysis"):
        if isinstance(block.get(key), Mapping):
            _analysis(block[key], (*path, key), out)


_RULES = {"canary": _canary_rules, "blueGreen": _blue_green_rules}


def _strategy_field(
    field: str, value: object, path: Path, schema: RolloutSchema | None
) -> Problems:
    out: Problems = []
    block = _mapping(value, path, out)
    if block is None:
        return out
    _product_owned(block, field, path, out)
    _RULES[field](block, path, out)
    if schema is not None:
        _schema_problems(schema, field, block, path, out)
    return sorted(out, key=lambda problem: path_order(problem[0]))


def _schema_problems(
    schema: RolloutSchema, field: str, block: Mapping[str, Any], path: Path, out: Problems
) -> None:
    validator = schema.block_validator(field, PRODUCT_OWNED[field])
    if validator is None:
        return
    # The product's rule speaks first where both find something at one place.
    seen = {p for p, _ in out}
    for problem in block_problems(validator, block):
        where = (*path, *problem.path)
        if where not in seen:
            out.append((where, f"{problem.message} (Rollout schema of {schema.source})"))


# ---------------------------------------------------------------------------
# The rollout: block.

RolloutKeyCheck = Callable[[object, Path, "RolloutSchema | None"], Problems]


def _enabled(value: object, path: Path, schema: RolloutSchema | None) -> Problems:
    del schema
    if isinstance(value, bool):
        return []
    return [(path, f"must be true or false, not {_type_name(value)}")]


def _strategy(value: object, path: Path, schema: RolloutSchema | None) -> Problems:
    del schema
    if value in STRATEGIES:
        return []
    return [(path, f"must be one of {', '.join(STRATEGIES)}, not {value!r}")]


def _notifications(value: object, path: Path, schema: RolloutSchema | None) -> Problems:
    del schema
    return [((*path, *where), message) for where, message in notification_problems(value)]


ROLLOUT_BLOCK_KEYS: dict[str, RolloutKeyCheck] = {
    "enabled": _enabled,
    "strategy": _strategy,
    "canary": lambda value, path, schema: _strategy_field("canary", value, path, schema),
    "blueGreen": lambda value, path, schema: _strategy_field("blueGreen", value, path, schema),
    "notifications": _notifications,
}
"""The keys of a ``rollout:`` block and the check of each: a key the product learns is one
entry here (and its use where it decides something); any other key is refused."""


def validate_rollout_block(
    value: object, path: str, schema: RolloutSchema | None = None
) -> list[FieldError]:
    """Every error in a ``rollout:`` block, each with its path under ``path``, in order."""
    root: Path = (path,) if path else ()
    if not isinstance(value, Mapping):
        return [FieldError(path, f"must be a mapping, not {_type_name(value)}")]
    out: Problems = []
    for key, item in value.items():
        check = ROLLOUT_BLOCK_KEYS.get(str(key))
        if check is None:
            allowed = ", ".join(ROLLOUT_BLOCK_KEYS)
            out.append(((*root, str(key)), f"unknown key (allowed: {allowed})"))
        else:
            out.extend(check(item, (*root, str(key)), schema))
    return [FieldError(render_path(where), message) for where, message in out]
