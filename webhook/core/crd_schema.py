"""The Rollout schema the cluster serves, as the judge of every Rollout the product makes.

A plan whose Rollout the API server would refuse must not be carried out: on CREATE the
Deployment would be stored at 0 replicas and the Rollout never made, leaving the service
with no pods. The product's own policy checks cannot know every rule of every Argo
Rollouts release; the CustomResourceDefinition the cluster serves does. So the Rollout is
validated against that CRD's ``openAPIV3Schema`` (read from the cluster, or from a file
given on the command line) before anything is admitted.

Validation follows the API server where a JSON Schema validator would not by itself:
``metadata`` is the API server's own business, unknown fields are pruned by it rather than
refused, and the ``int32``/``int64`` formats bound integers (a ``scaleDownDelaySeconds`` of
99999999999 is refused, not wrapped). CEL rules (``x-kubernetes-validations``) are not
evaluated here; the API server still checks them.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema

ROLLOUT_CRD_NAME = "rollouts.argoproj.io"
ROLLOUT_VERSION = "v1alpha1"
MAX_PROBLEMS = 5
"""Enough to fix the first; the API server would name one."""

_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


class SchemaUnusable(ValueError):
    """A document that is not a Rollout CRD with a schema for the served version."""


def _in_range(kind: str) -> Any:
    low, high = _INT_RANGES[kind]

    def check(value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int):
            return True  # the type keyword says what is wrong with a non-integer
        return low <= value <= high

    return check


_FORMATS = jsonschema.FormatChecker(formats=())
for _kind in _INT_RANGES:
    _FORMATS.checks(_kind)(_in_range(_kind))


@dataclass(frozen=True, eq=False)
class RolloutSchema:
    """The ``openAPIV3Schema`` of the Rollout CRD, and where it came from. Equal only to
    itself (hashable, so judgements made with it can be remembered)."""

    schema: Mapping[str, Any]
    source: str
    """For messages: "CustomResourceDefinition rollouts.argoproj.io@1234" or a file name."""

    @functools.cached_property
    def validator(self) -> Any:
        # OpenAPI v3.0 schemas are draft-4 JSON Schema with extensions the validator ignores.
        return jsonschema.Draft4Validator(self.schema, format_checker=_FORMATS)

    @functools.cached_property
    def _block_validators(self) -> dict[tuple[str, tuple[str, ...]], Any]:
        return {}

    def block_validator(self, field: str, left_out: tuple[str, ...] = ()) -> Any | None:
        """A validator of ``spec.strategy.<field>`` alone, strict, without ``left_out``
        (made once per schema; None when the schema does not describe the field)."""
        key = (field, left_out)
        if key not in self._block_validators:
            block = strategy_field_schema(self, field, left_out=left_out)
            self._block_validators[key] = (
                None
                if block is None
                else jsonschema.Draft4Validator(block, format_checker=_FORMATS)
            )
        return self._block_validators[key]


def rollout_schema_from_crd(crd: Mapping[str, Any], *, source: str) -> RolloutSchema:
    """The schema of the served v1alpha1 Rollout from its CustomResourceDefinition."""
    spec = crd.get("spec") if isinstance(crd, Mapping) else None
    names = (spec or {}).get("names") or {}
    if crd.get("kind") != "CustomResourceDefinition" or names.get("kind") != "Rollout":
        raise SchemaUnusable(f"{source}: not the CustomResourceDefinition of Rollouts")
    for version in (spec or {}).get("versions") or []:
        if version.get("name") == ROLLOUT_VERSION and version.get("served", True):
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            if isinstance(schema, Mapping):
                return RolloutSchema(schema, source)
    raise SchemaUnusable(f"{source}: serves no {ROLLOUT_VERSION} Rollout with a schema")


def _path(error: Any) -> str:
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(the object)"


def _message(error: Any) -> str:
    if error.validator == "format" and error.validator_value in _INT_RANGES:
        low, high = _INT_RANGES[error.validator_value]
        return f"{error.instance} is out of range for {error.validator_value} ({low}..{high})"
    return str(error.message)


def rollout_problems(schema: RolloutSchema, rollout: Mapping[str, Any]) -> tuple[str, ...]:
    """What the served schema refuses in ``rollout``, each as "path: problem" (at most
    ``MAX_PROBLEMS``, in path order); empty when it is valid."""
    body = {k: v for k, v in rollout.items() if k != "metadata"}
    errors = sorted(schema.validator.iter_errors(body), key=lambda e: list(map(str, e.path)))
    return tuple(f"{_path(e)}: {_message(e)}" for e in errors[:MAX_PROBLEMS])


# ---------------------------------------------------------------------------
# A strategy block of the policy, judged by the same schema, strictly.

STRATEGY_FIELDS = ("canary", "blueGreen")


def _strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever it lists its fields: the API server
    would prune a misspelt field of a Rollout, a policy must refuse it."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, Mapping):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def strategy_field_schema(
    schema: RolloutSchema, field: str, *, left_out: tuple[str, ...] = ()
) -> Mapping[str, Any] | None:
    """The strict schema of ``spec.strategy.<field>`` without the fields ``left_out`` (those
    the product sets itself), or None when the served schema does not describe it."""
    node: Any = schema.schema
    for step in ("spec", "strategy", field):
        node = (node.get("properties") or {}).get(step) if isinstance(node, Mapping) else None
    if not isinstance(node, Mapping):
        return None
    strict = dict(_strict(node))
    strict["properties"] = {
        k: v for k, v in (strict.get("properties") or {}).items() if k not in left_out
    }
    if "required" in strict:
        strict["required"] = [k for k in strict["required"] if k not in left_out]
        if not strict["required"]:
            del strict["required"]
    return strict


@dataclass(frozen=True)
class BlockProblem:
    """One thing the schema refuses in a block: the path inside it and what is wrong."""

    path: tuple[str | int, ...]
    message: str


def _described(error: Any) -> list[BlockProblem]:
    path = tuple(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        known = sorted((error.schema.get("properties") or {}).keys())
        allowed = f" (allowed: {', '.join(known)})" if known else ""
        return [
            BlockProblem((*path, str(key)), f"unknown field{allowed}")
            for key in error.instance
            if key not in (error.schema.get("properties") or {})
        ]
    if error.validator == "required":
        missing = str(error.message).split("'")[1] if "'" in str(error.message) else ""
        return [BlockProblem((*path, missing), "is required")]
    if error.validator == "type":
        return [BlockProblem(path, f"must be of type {error.validator_value}")]
    if error.validator == "anyOf" and error.schema.get("x-kubernetes-int-or-string"):
        return [BlockProblem(path, "must be an integer or a string")]
    return [BlockProblem(path, _message(error))]


def path_order(path: Any) -> list[tuple[int, int, str]]:
    """A sort key for paths of mixed keys and indexes: indexes in number order."""
    return [(0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in path]


def block_problems(validator: Any, block: object) -> list[BlockProblem]:
    """What a block validator (``RolloutSchema.block_validator``) refuses in ``block``,
    in path order."""
    errors = sorted(validator.iter_errors(block), key=lambda e: path_order(e.absolute_path))
    return [problem for e in errors for problem in _described(e)]
