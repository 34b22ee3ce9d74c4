"""The core tests' helpers: the planner with the built-in policy, and short policies."""

from __future__ import annotations

import functools
from typing import Any

import yaml

from tests.schemas import CRD_DIR
from webhook.core.convert import Neighbours, plan_conversion
from webhook.core.crd_schema import RolloutSchema, rollout_schema_from_crd
from webhook.core.policy import Policy, builtin_policy, parse_policy_text

POLICY = builtin_policy()
ROLLOUT_CRD_FILE = CRD_DIR / "argo-rollouts-v1.9.1-rollout.yaml"


@functools.cache
def released_rollout_schema() -> RolloutSchema:
    """The released Rollout CRD's schema (read from ../shared/crds, never copied)."""
    crd = yaml.safe_load(ROLLOUT_CRD_FILE.read_text())
    return rollout_schema_from_crd(crd, source="argo-rollouts v1.9.1")


def policy_with(env_yaml: str, default: str = "prod") -> Policy:
    return parse_policy_text(f"defaultEnvironment: {default}\nenvironments:\n{env_yaml}")


def plan(dep: dict[str, Any], policy: Policy = POLICY, **kw: Any) -> Any:
    neighbours = kw.pop("neighbours", Neighbours())
    return plan_conversion(dep, neighbours, policy, **kw)
