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

from collections.abc import Mapping, Sequence
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


def _dest_host(dest: Mapping[str, Any]) -> object:
    return (dest.get("destination") or {}).get("host")


def _dest_subset(dest: Mapping[str, Any]) -> object:
    return (dest.get("destination") or {}).get("subset")


def _weighted_routes(
    vs: Mapping[str, Any], managed: frozenset[str]
) -> list[tuple[int, dict[str, Any]]]:
    """The VirtualService's HTTP routes with their index, without the routes Argo Rollouts
    adds and removes itself during a rollout (``managedRoutes``: header and mirror routes)."""
    return [
        (i, http)
        for i, http in enumerate(spec_of(vs).get("http") or [])
        if isinstance(http, dict) and http.get("name") not in managed
    ]


def virtualservice_references(vs: Mapping[str, Any], service: str) -> bool:
    ns = namespace_of(vs)
    return any(
        _matching_host(_dest_host(dest), service, ns) is not None
        for http in spec_of(vs).get("http") or []
        for dest in http.get("route") or []
    )


@dataclass(frozen=True)
class Subsets:
    """Subset-level routing: one host (the stable Service), and the DestinationRule whose
    subsets Argo Rollouts points at the stable and the canary pods."""

    destination_rule: str
    stable: str
    canary: str


def _subsets_used(
    virtual_services: Sequence[Mapping[str, Any]], stable: str, managed: frozenset[str]
) -> set[str]:
    used: set[str] = set()
    for vs in virtual_services:
        ns = namespace_of(vs)
        for _, http in _weighted_routes(vs, managed):
            for dest in http.get("route") or []:
                if _matching_host(_dest_host(dest), stable, ns) is not None and _dest_subset(dest):
                    used.add(str(_dest_subset(dest)))
    return used


def _rule_subsets(rule: Mapping[str, Any]) -> list[str]:
    return [
        str(s.get("name")) for s in spec_of(rule).get("subsets") or [] if isinstance(s, Mapping)
    ]


def subset_routing(
    virtual_services: Sequence[Mapping[str, Any]],
    destination_rules: Sequence[Mapping[str, Any]],
    stable: str,
    managed: frozenset[str] = frozenset(),
) -> tuple[Subsets | None, tuple[Finding, ...]]:
    """Whether the VirtualServices split the stable Service's host by subsets, and which.

    The canary subset is the one named ``canary``; failing that, when the routes name one
    subset of a DestinationRule that declares exactly two, the other one.
    """
    used = _subsets_used(virtual_services, stable, managed)
    if not used:
        return None, ()
    names = ", ".join(sorted(used))
    rules = [
        r
        for r in destination_rules
        if _matching_host(spec_of(r).get("host"), stable, namespace_of(r)) is not None
        and used <= set(_rule_subsets(r))
    ]
    if len(rules) != 1:
        found = "none does" if not rules else f"{len(rules)} do"
        return None, (
            error(
                "destinationrule",
                f"the VirtualServices route to subsets {names} of host {stable}: one "
                f"DestinationRule for host {stable} must declare them ({found})",
            ),
        )
    rule = rules[0]
    declared = _rule_subsets(rule)
    if "canary" in declared:
        canary = "canary"
    elif len(declared) == 2 and len(used) == 1:
        canary = next(n for n in declared if n not in used)
    else:
        canary = ""
    stables = sorted(used - {canary})
    if not canary or len(stables) != 1:
        return None, (
            error(
                "destinationrule",
                f"DestinationRule {name_of(rule)}: cannot tell its stable and canary subsets "
                f"apart (routes use {names}); name the canary subset 'canary'",
            ),
        )
    return Subsets(name_of(rule), stables[0], canary), ()


@dataclass(frozen=True)
class _Targets:
    """How a VirtualService destination is recognised as the stable or the canary one."""

    stable: str
    canary: str
    namespace: str
    subsets: Subsets | None

    def is_stable(self, dest: Mapping[str, Any]) -> bool:
        if _matching_host(_dest_host(dest), self.stable, self.namespace) is None:
            return False
        return self.subsets is None or _dest_subset(dest) == self.subsets.stable

    def is_canary(self, dest: Mapping[str, Any]) -> bool:
        if self.subsets is not None:
            host = _matching_host(_dest_host(dest), self.stable, self.namespace)
            return host is not None and _dest_subset(dest) == self.subsets.canary
        return _matching_host(_dest_host(dest), self.canary, self.namespace) is not None

    def new_canary(self, stable_dest: Mapping[str, Any]) -> dict[str, Any]:
        new_dest = json_copy(dict(stable_dest))
        new_dest.pop("headers", None)
        new_dest["weight"] = 0
        if self.subsets is not None:
            new_dest["destination"]["subset"] = self.subsets.canary
            return new_dest
        form = _matching_host(_dest_host(stable_dest), self.stable, self.namespace)
        assert form is not None
        new_dest["destination"]["host"] = _hosts(self.canary, self.namespace)[form]
        new_dest["destination"].pop("subset", None)
        return new_dest

    def describe(self) -> str:
        if self.subsets is None:
            return f"{self.stable} and {self.canary}"
        return f"subsets {self.subsets.stable} and {self.subsets.canary} of {self.stable}"


def add_canary_destination_virtualservice(
    vs: Mapping[str, Any],
    stable: str,
    canary: str,
    *,
    managed: frozenset[str] = frozenset(),
    subsets: Subsets | None = None,
) -> RoutePatch:
    """Give every HTTP route to the stable Service its canary destination: the canary
    Service's host, or with ``subsets`` the canary subset of the same host. Routes named in
    ``managed`` belong to Argo Rollouts and are left alone."""
    updated = json_copy(dict(vs))
    targets = _Targets(stable, canary, namespace_of(vs), subsets)
    where = f"VirtualService {name_of(vs)}"
    findings: list[Finding] = []
    names: list[str] = []
    changed = False
    weighted = _weighted_routes(updated, managed)
    for i, http in weighted:
        dests = http.get("route") or []
        stable_dests = [d for d in dests if targets.is_stable(d)]
        if not stable_dests:
            continue
        if len(weighted) > 1 and not http.get("name"):
            findings.append(
                error(
                    "route-unnamed",
                    f"{where} http[{i}] must have a name: Argo Rollouts names the routes it "
                    "manages when a VirtualService has more than one",
                )
            )
        if http.get("name"):
            names.append(str(http["name"]))
        canary_dests = [d for d in dests if targets.is_canary(d)]
        others = [d for d in dests if d not in stable_dests and d not in canary_dests]
        if others or len(stable_dests) > 1 or len(canary_dests) > 1:
            findings.append(
                error(
                    "route-backends",
                    f"{where} http[{i}] routes to destinations other than "
                    f"{targets.describe()}; Argo Rollouts can only split a route between those two",
                )
            )
            continue
        stable_dest = stable_dests[0]
        if not canary_dests:
            dests.append(targets.new_canary(stable_dest))
            stable_dest["weight"] = 100
            http["route"] = dests
            changed = True
            continue
        total = int(stable_dest.get("weight", 0)) + int(canary_dests[0].get("weight", 0))
        if total != 100:
            findings.append(
                error(
                    "route-weights",
                    f"{where} http[{i}]: weights of {targets.describe()} add up to {total}, "
                    "not 100",
                )
            )
    return RoutePatch(updated, changed, tuple(findings), tuple(names))


def remove_canary_destination_virtualservice(
    vs: Mapping[str, Any], stable: str, canary: str, *, subsets: Subsets | None = None
) -> RoutePatch:
    """Opt-out: drop the canary destination (host, or subset); the stable one takes all."""
    updated = json_copy(dict(vs))
    targets = _Targets(stable, canary, namespace_of(vs), subsets)
    changed = False
    for http in updated.get("spec", {}).get("http") or []:
        dests = http.get("route") or []
        kept = [d for d in dests if not targets.is_canary(d)]
        if len(kept) != len(dests):
            for dest in kept:
                if targets.is_stable(dest):
                    dest["weight"] = 100
            http["route"] = kept
            changed = True
    return RoutePatch(updated, changed)
