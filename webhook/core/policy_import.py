"""Importing the seed pattern's Helm values files: a policy, the services' overrides, and
what could not be expressed.

The seed pattern keeps a ``rollout:`` block in each ``values-<environment>.yaml``, either
one file per environment or one per service and environment
(``services/<service>/values-<environment>.yaml``). An import turns them into:

- a policy with one environment per name, whose ``rollout:`` block is the environment's
  file, or (per service) the block most of the environment's services share;
- for every service and environment: whether it opts in (``rollout.enabled``), and the
  ``rollout-webhook.io/rollout`` annotation that gives it what its own block said, when it
  differs from its environment's (the least block that, merged over the environment's
  block as the webhook merges, gives the service's);
- a report: each thing the policy cannot say (a key the environment has and the service
  has not, since a merge can only add and replace; a field the webhook generates itself;
  a key the product does not know; an invalid block), and notes on values the webhook
  makes unnecessary.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from webhook.core.crd_schema import RolloutSchema
from webhook.core.objects import json_copy
from webhook.core.policy_schema import POLICY_API_VERSION, POLICY_KIND
from webhook.core.policy_strategy import (
    PRODUCT_OWNED,
    ROLLOUT_BLOCK_KEYS,
    validate_rollout_block,
)

AUTOMATIC = {
    "httpRoute": "the webhook finds the HTTPRoute that sends traffic to the service",
    "cw-istio": "the webhook finds the VirtualService that routes to the service",
    "autoscaling": "the webhook re-targets the service's HPA at the Rollout",
}
"""Values of the seed's chart the webhook makes unnecessary, and why."""


@dataclass(frozen=True)
class ValuesFile:
    """One values file: where it came from, its environment, its service (None: the file
    is the environment's own) and its parsed content."""

    source: str
    environment: str
    service: str | None
    values: object


@dataclass(frozen=True)
class ServiceSettings:
    """What one service needs in one environment on its Deployment."""

    service: str
    environment: str
    source: str
    enabled: bool
    override: Mapping[str, Any] | None = None
    """The ``rollout-webhook.io/rollout`` annotation's block; None: none needed."""


@dataclass
class Imported:
    policy: dict[str, Any]
    services: list[ServiceSettings] = field(default_factory=list)
    not_expressed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _canonical(block: Mapping[str, Any]) -> str:
    return json.dumps(block, sort_keys=True)


def _strategy_key(block: Mapping[str, Any]) -> str:
    return "blueGreen" if block.get("strategy") == "bluegreen" else "canary"


@dataclass
class _Reader:
    """Reads each file's ``rollout:`` block, keeping what the policy can say and
    reporting the rest."""

    schema: RolloutSchema | None
    result: Imported

    def block(self, values_file: ValuesFile) -> tuple[bool, dict[str, Any]] | None:
        """(enabled, the block without ``enabled``), or None when the file has no usable
        ``rollout:`` block (reported)."""
        where = values_file.source
        if not isinstance(values_file.values, Mapping):
            self.result.not_expressed.append(f"{where}: not a mapping of values; skipped")
            return None
        self._notes(values_file.values, where)
        rollout = values_file.values.get("rollout")
        if not isinstance(rollout, Mapping):
            self.result.notes.append(f"{where}: no rollout: block; the service is not opted in")
            return None
        block = {k: json_copy(v) for k, v in rollout.items() if k != "enabled"}
        block.setdefault("strategy", "canary")
        self._drop_unknown(block, where)
        if self._invalid(block, where):
            return None
        return rollout.get("enabled") is True, block

    def _notes(self, values: Mapping[str, Any], where: str) -> None:
        for key, why in AUTOMATIC.items():
            if key in values:
                self.result.notes.append(f"{where}: {key}: not needed, {why}")

    def _drop_unknown(self, block: dict[str, Any], where: str) -> None:
        for key in [k for k in block if k not in ROLLOUT_BLOCK_KEYS]:
            del block[key]
            self.result.not_expressed.append(
                f"{where}: rollout.{key}: the policy has no such key; left out"
            )
        for field_name, owned in PRODUCT_OWNED.items():
            settings = block.get(field_name)
            if not isinstance(settings, dict):
                continue
            for key in [k for k in owned if k in settings]:
                del settings[key]
                self.result.not_expressed.append(
                    f"{where}: rollout.{field_name}.{key}: the webhook sets it for each "
                    "service; left out"
                )

    def _invalid(self, block: Mapping[str, Any], where: str) -> bool:
        errors = validate_rollout_block(block, "rollout", self.schema)
        for error in errors:
            self.result.not_expressed.append(f"{where}: invalid, left out: {error}")
        return bool(errors)


def override_for(
    base: Mapping[str, Any], wanted: Mapping[str, Any], path: str = "rollout"
) -> tuple[dict[str, Any], list[str]]:
    """The least block that, merged over ``base`` (mappings key by key, anything else
    replaced), gives ``wanted``; and the paths ``base`` has that ``wanted`` lacks (a
    merge cannot remove them)."""
    override: dict[str, Any] = {}
    missing = [f"{path}.{key}" for key in base if key not in wanted]
    for key, value in wanted.items():
        have = base.get(key)
        if key in base and have == value:
            continue
        if isinstance(have, Mapping) and isinstance(value, Mapping):
            sub, sub_missing = override_for(have, value, f"{path}.{key}")
            if sub:
                override[key] = sub
            missing.extend(sub_missing)
        else:
            override[key] = json_copy(value)
    return override, missing


def _that_matter(missing: Sequence[str], block: Mapping[str, Any]) -> list[str]:
    """The missing paths that change the service's Rollout: those of its strategy's
    settings. (An unsubscribed notification can be written as ``null``; the settings of
    the strategy it does not use are never read.)"""
    chosen = f"rollout.{_strategy_key(block)}"
    return [p for p in missing if p == chosen or p.startswith(f"{chosen}.")]


def _unsubscribed(base: Mapping[str, Any], block: Mapping[str, Any]) -> dict[str, Any]:
    """``null`` recipients for the environment's subscriptions the service has not."""
    mine = block.get("notifications") or {}
    out: dict[str, Any] = {}
    for trigger, services in (base.get("notifications") or {}).items():
        dropped = {s: None for s in services or {} if s not in (mine.get(trigger) or {})}
        if dropped:
            out[trigger] = dropped
    return out


def _environment_block(blocks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The block most services share (the first given, on a tie)."""
    counts = Counter(_canonical(b) for b in blocks)
    best = max(counts.values())
    return json_copy(dict(next(b for b in blocks if counts[_canonical(b)] == best)))


def _policy(environments: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    names = sorted(environments)
    default = "prod" if "prod" in environments else names[-1]
    patterns = [
        {"pattern": pattern, "environment": name}
        for name in names
        for pattern in (name, f"{name}-*", f"*-{name}")
    ]
    return {
        "apiVersion": POLICY_API_VERSION,
        "kind": POLICY_KIND,
        "defaultEnvironment": default,
        "namespaces": patterns,
        "environments": {name: {"rollout": dict(environments[name])} for name in names},
    }


def _per_environment(files: Sequence[ValuesFile], reader: _Reader) -> dict[str, dict[str, Any]]:
    environments: dict[str, dict[str, Any]] = {}
    for values_file in files:
        read = reader.block(values_file)
        if read is None:
            continue
        enabled, block = read
        if not enabled:
            block["enabled"] = False
            reader.result.notes.append(
                f"{values_file.source}: rollout.enabled is not true: environment "
                f"{values_file.environment} is switched off (rollout.enabled: false), as the "
                "seed's chart left it"
            )
        environments[values_file.environment] = block
    return environments


def _service_settings(
    values_file: ValuesFile, enabled: bool, block: Mapping[str, Any], base: Mapping[str, Any]
) -> tuple[ServiceSettings, list[str]]:
    override, missing = override_for(base, block)
    for trigger, services in _unsubscribed(base, block).items():
        subscriptions = override.setdefault("notifications", {})
        subscriptions.setdefault(trigger, {}).update(services)
    service = values_file.service or ""
    settings = ServiceSettings(
        service, values_file.environment, values_file.source, enabled, override or None
    )
    return settings, _that_matter(missing, block)


def _per_service(files: Sequence[ValuesFile], reader: _Reader) -> dict[str, dict[str, Any]]:
    read: list[tuple[ValuesFile, bool, dict[str, Any]]] = []
    for values_file in files:
        got = reader.block(values_file)
        if got is not None:
            read.append((values_file, *got))
    environments = {
        env: _environment_block([b for f, e, b in read if f.environment == env and e])
        for env in dict.fromkeys(f.environment for f, e, _ in read if e)
    }
    for values_file, enabled, block in read:
        base = environments.get(values_file.environment)
        if base is None or not enabled:
            # Not opted in: its block is never read, so nothing of it needs saying.
            service = values_file.service or ""
            reader.result.services.append(
                ServiceSettings(service, values_file.environment, values_file.source, enabled)
            )
            continue
        settings, missing = _service_settings(values_file, enabled, block, base)
        reader.result.services.append(settings)
        for path in missing:
            reader.result.not_expressed.append(
                f"{values_file.source}: {path} is set for environment "
                f"{values_file.environment} but not for service {settings.service}; an "
                "override cannot remove it, so the service gets the environment's"
            )
    return environments


def import_values(files: Sequence[ValuesFile], schema: RolloutSchema | None = None) -> Imported:
    """The policy, the services' settings and the report for these values files (one per
    environment when every ``service`` is None, else one per service and environment)."""
    result = Imported(policy={})
    reader = _Reader(schema, result)
    per_service = any(f.service is not None for f in files)
    environments = (_per_service if per_service else _per_environment)(files, reader)
    if not environments:
        result.not_expressed.append("no values file holds a usable rollout: block")
        return result
    result.policy = _policy(environments)
    return result
