"""What a Rollout names: the Services and routes of its strategy.

The reconciler needs both directions. A Service or route that changes or goes away
concerns the Deployment whose Rollout names it, even when its selector or backends no
longer point there; and a generated Service is deleted only once no Rollout names it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from webhook.core.convert import GATEWAY_PLUGIN
from webhook.core.objects import spec_of

ObjectName = tuple[str, str]
"""(kind, name) of an object in the Rollout's namespace."""

_SERVICE_FIELDS = {
    "canary": ("stableService", "canaryService"),
    "blueGreen": ("activeService", "previewService"),
}


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _named(entries: object) -> Iterable[str]:
    for entry in entries if isinstance(entries, list) else []:
        name = _mapping(entry).get("name")
        if isinstance(name, str) and name:
            yield name


def _routes(routing: Mapping[str, Any]) -> set[ObjectName]:
    found: set[ObjectName] = set()
    gateway = _mapping(_mapping(routing.get("plugins")).get(GATEWAY_PLUGIN))
    single = gateway.get("httpRoute")
    if isinstance(single, str) and single:
        found.add(("HTTPRoute", single))
    found.update(("HTTPRoute", n) for n in _named(gateway.get("httpRoutes")))
    istio = _mapping(routing.get("istio"))
    found.update(("VirtualService", n) for n in _named([istio.get("virtualService")]))
    found.update(("VirtualService", n) for n in _named(istio.get("virtualServices")))
    return found


def rollout_references(rollout: Mapping[str, Any]) -> frozenset[ObjectName]:
    """Every Service and route the Rollout's strategy names, as (kind, name)."""
    strategy = _mapping(spec_of(rollout).get("strategy"))
    found: set[ObjectName] = set()
    for block_name, fields in _SERVICE_FIELDS.items():
        block = _mapping(strategy.get(block_name))
        for field_name in fields:
            value = block.get(field_name)
            if isinstance(value, str) and value:
                found.add(("Service", value))
    found.update(_routes(_mapping(_mapping(strategy.get("canary")).get("trafficRouting"))))
    return frozenset(found)


def names(rollout: Mapping[str, Any], kind: str, name: str) -> bool:
    """Whether the Rollout's strategy names the object (kind, name) of its namespace."""
    return (kind, name) in rollout_references(rollout)


def rollouts_naming(
    rollouts: Iterable[Mapping[str, Any]], kind: str, name: str
) -> tuple[Mapping[str, Any], ...]:
    """The Rollouts (of one namespace) whose strategy names the object (kind, name)."""
    return tuple(r for r in rollouts if names(r, kind, name))
