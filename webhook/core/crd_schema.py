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


@dataclass(frozen=True)
class RolloutSchema:
    """The ``openAPIV3Schema`` of the Rollout CRD, and where it came from."""

    schema: Mapping[str, Any]
    source: str
    """For messages: "CustomResourceDefinition rollouts.argoproj.io@1234" or a file name."""

    @functools.cached_property
    def validator(self) -> Any:
        # OpenAPI v3.0 schemas are draft-4 JSON Schema with extensions the validator ignores.
        return jsonschema.Draft4Validator(self.schema, format_checker=_FORMATS)


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
