"""Giving routes the canary backend Argo Rollouts needs to move traffic.

Argo's traffic routers shift weight between two backends that already exist: for the
Gateway API plugin, backendRefs named exactly as the stable and canary Services in the
same rule; for Istio, destinations whose host is each Service. Argo only reports a
missing backend after the fact (the Rollout turns InvalidSpec), so the product adds the
canary backend itself and checks the result before acting.

Only rules that send traffic to the stable Service change, and within them only the
backend list: matches, filters and every other rule stay as they were. An existing
canary backend keeps its weight (Argo may be in the middle of moving traffic).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.core.errors import Finding, error
from webhook.core.objects import Obj, json_copy, name_of, namespace_of, spec_of


@dataclass(frozen=True)
class RoutePatch:
    """A route as it should be, whether that differs from the input, and any problems."""

    route: Obj
    changed: bool
    findings: tuple[Finding, ...] = ()
    # Istio only: names of the HTTP routes that carry the service (for trafficRouting.routes).
    route_names: tuple[str, ...] = field(default=())


# ---------------------------------------------------------------------------
# Gateway API HTTPRoute


def _is_service_ref(ref: Mapping[str, Any], name: str, route_ns: str) -> bool:
    return (
        ref.get("name") == name
        and ref.get("kind", "Service") == "Service"
        and ref.get("group", "") in ("", "core")
        and ref.get("namespace", route_ns) == route_ns
    )


def httproute_references(route: Mapping[str, Any], service: str) -> bool:
    ns = namespace_of(route)
    return any(
        _is_service_ref(ref, service, ns)
        for rule in spec_of(route).get("rules") or []
        for ref in rule.get("backendRefs") or []
    )


def add_canary_backend_httproute(route: Mapping[str, Any], stable: str, canary: str) -> RoutePatch:
    updated = json_copy(dict(route))
    ns = namespace_of(route)
    where = f"HTTPRoute {name_of(route)}"
    findings: list[Finding] = []
    changed = False
    for i, rule in enumerate(updated.get("spec", {}).get("rules") or []):
        refs = rule.get("backendRefs") or []
        stable_refs = [r for r in refs if _is_service_ref(r, stable, ns)]
        if not stable_refs:
            continue
        canary_refs = [r for r in refs if _is_service_ref(r, canary, ns)]
        others = [r for r in refs if r not in stable_refs and r not in canary_refs]
        if others or len(stable_refs) > 1 or len(canary_refs) > 1:
            findings.append(
                error(
                    "route-backends",
                    f"{where} rules[{i}] sends traffic to backends other than {stable} and "
                    f"{canary}; Argo Rollouts can only split a rule between those two",
                )
            )
            continue
        stable_ref = stable_refs[0]
        if not canary_refs:
            stable_ref["weight"] = 100
            new_ref = {k: json_copy(v) for k, v in stable_ref.items() if k != "filters"}
            new_ref["name"] = canary
            new_ref["weight"] = 0
            refs.append(new_ref)
            rule["backendRefs"] = refs
            changed = True
            continue
        total = int(stable_ref.get("weight", 1)) + int(canary_refs[0].get("weight", 1))
        if total != 100:
            findings.append(
                error(
                    "route-weights",
                    f"{where} rules[{i}]: weights of {stable} and {canary} add up to {total}, "
                    "not 100",
                )
            )
    return RoutePatch(updated, changed, tuple(findings))


def remove_canary_backend_httproute(
    route: Mapping[str, Any], stable: str, canary: str
) -> RoutePatch:
    """Opt-out: drop the canary backendRef; the stable one takes all traffic again."""
    updated = json_copy(dict(route))
    ns = namespace_of(route)
    changed = False
    for rule in updated.get("spec", {}).get("rules") or []:
        refs = rule.get("backendRefs") or []
        kept = [r for r in refs if not _is_service_ref(r, canary, ns)]
        if len(kept) != len(refs):
            for ref in kept:
                if _is_service_ref(ref, stable, ns):
                    ref["weight"] = 100
            rule["backendRefs"] = kept
            changed = True
    return RoutePatch(updated, changed)


# ---------------------------------------------------------------------------
# Istio VirtualService


def _hosts(service: str, namespace: str) -> tuple[str, ...]:
    return (
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    )


def _matching_host(host: object, service: str, namespace: str) -> int | None:
    """Which spelling of the Service's host this is (short, .ns, .ns.svc, FQDN), if any."""
    hosts = _hosts(service, namespace)
    return hosts.index(host) if host in hosts else None


def virtualservice_references(vs: Mapping[str, Any], service: str) -> bool:
    ns = namespace_of(vs)
    return any(
        _matching_host((dest.get("destination") or {}).get("host"), service, ns) is not None
        for http in spec_of(vs).get("http") or []
        for dest in http.get("route") or []
    )


def add_canary_destination_virtualservice(
    vs: Mapping[str, Any], stable: str, canary: str
) -> RoutePatch:
    updated = json_copy(dict(vs))
    ns = namespace_of(vs)
    where = f"VirtualService {name_of(vs)}"
    findings: list[Finding] = []
    names: list[str] = []
    changed = False
    http_routes = updated.get("spec", {}).get("http") or []
    for i, http in enumerate(http_routes):
        dests = http.get("route") or []
        stable_dests = [
            d
            for d in dests
            if _matching_host((d.get("destination") or {}).get("host"), stable, ns) is not None
        ]
        if not stable_dests:
            continue
        if len(http_routes) > 1 and not http.get("name"):
            findings.append(
                error(
                    "route-unnamed",
                    f"{where} http[{i}] must have a name: Argo Rollouts names the routes it "
                    "manages when a VirtualService has more than one",
                )
            )
        if http.get("name"):
            names.append(str(http["name"]))
        canary_dests = [
            d
            for d in dests
            if _matching_host((d.get("destination") or {}).get("host"), canary, ns) is not None
        ]
        others = [d for d in dests if d not in stable_dests and d not in canary_dests]
        if others or len(stable_dests) > 1 or len(canary_dests) > 1:
            findings.append(
                error(
                    "route-backends",
                    f"{where} http[{i}] routes to destinations other than {stable} and {canary}; "
                    "Argo Rollouts can only split a route between those two",
                )
            )
            continue
        stable_dest = stable_dests[0]
        if not canary_dests:
            form = _matching_host(stable_dest["destination"]["host"], stable, ns)
            assert form is not None
            new_dest = json_copy(stable_dest)
            new_dest["destination"]["host"] = _hosts(canary, ns)[form]
            new_dest["destination"].pop("subset", None)
            new_dest.pop("headers", None)
            new_dest["weight"] = 0
            stable_dest["weight"] = 100
            dests.append(new_dest)
            http["route"] = dests
            changed = True
            continue
        total = int(stable_dest.get("weight", 0)) + int(canary_dests[0].get("weight", 0))
        if total != 100:
            findings.append(
                error(
                    "route-weights",
                    f"{where} http[{i}]: weights of {stable} and {canary} add up to {total}, "
                    "not 100",
                )
            )
    return RoutePatch(updated, changed, tuple(findings), tuple(names))


def remove_canary_destination_virtualservice(
    vs: Mapping[str, Any], stable: str, canary: str
) -> RoutePatch:
    updated = json_copy(dict(vs))
    ns = namespace_of(vs)
    changed = False
    for http in updated.get("spec", {}).get("http") or []:
        dests = http.get("route") or []
        kept = [
            d
            for d in dests
            if _matching_host((d.get("destination") or {}).get("host"), canary, ns) is None
        ]
        if len(kept) != len(dests):
            for dest in kept:
                if (
                    _matching_host((dest.get("destination") or {}).get("host"), stable, ns)
                    is not None
                ):
                    dest["weight"] = 100
            http["route"] = kept
            changed = True
    return RoutePatch(updated, changed)
