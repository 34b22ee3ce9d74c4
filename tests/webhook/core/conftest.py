"""The core tests' helpers: the planner with the built-in policy, and short policies."""

from __future__ import annotations

from typing import Any

from webhook.core.convert import Neighbours, plan_conversion
from webhook.core.policy import Policy, builtin_policy, parse_policy_text

POLICY = builtin_policy()


def policy_with(env_yaml: str, default: str = "prod") -> Policy:
    return parse_policy_text(f"defaultEnvironment: {default}\nenvironments:\n{env_yaml}")


def plan(dep: dict[str, Any], policy: Policy = POLICY, **kw: Any) -> Any:
    neighbours = kw.pop("neighbours", Neighbours())
    return plan_conversion(dep, neighbours, policy, **kw)
