"""Helpers of the traffic-routing scenarios: routes as manifests, their weights as samples.

Argo Rollouts moves weights on the routes the webhook prepared (an HTTPRoute through the
Gateway API plugin, a VirtualService through Argo's own Istio router); a `Sampler` reads them
while the rollout runs, and `walk` turns the samples into the sequence of distinct weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from kubernetes import client

from tests import builders
from tests.e2e import harness
from tests.e2e.rollouts.scenario import eventually, promote, rollout_object

GATEWAY = ("gateway.networking.k8s.io", "v1", "httproutes")
VIRTUAL_SERVICE = ("networking.istio.io", "v1", "virtualservices")
DESTINATION_RULE = ("networking.istio.io", "v1", "destinationrules")
V1 = "example.invalid/web:1"
V2 = "example.invalid/web:2"
V3 = "example.invalid/web:3"
Weights = tuple[int, int]
# The policy's `traffic` steps as (stable, canary) weights, before and after.
STEPS_WALK: tuple[Weights, ...] = ((100, 0), (90, 10), (75, 25), (50, 50))


def read(kube: client.ApiClient, resource: tuple[str, str, str], ns: str, name: str) -> Any:
    group, version, plural = resource
    return client.CustomObjectsApi(kube).get_namespaced_custom_object(
        group, version, ns, plural, name
    )


def httproute(name: str, ns: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return builders.httproute(name, ns, rules)


def web_rules(stable: str = "web") -> list[dict[str, Any]]:
    """Two rules to the stable Service (with matches and a filter), one to another backend."""
    return [
        {
            "matches": [
                {
                    "path": {"type": "PathPrefix", "value": "/api"},
                    "headers": [{"name": "x-tenant", "value": "shop"}],
                }
            ],
            "filters": [
                {
                    "type": "RequestHeaderModifier",
                    "requestHeaderModifier": {"add": [{"name": "x-via", "value": "gw"}]},
                }
            ],
            "backendRefs": [{"name": stable, "port": 80}],
        },
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/static"}}],
            "backendRefs": [{"name": "static", "port": 80}],
        },
    ]


def backend_weights(rule: dict[str, Any], stable: str, canary: str) -> Weights | None:
    weights = {ref["name"]: ref.get("weight", 1) for ref in rule.get("backendRefs") or []}
    if set(weights) != {stable, canary}:
        return None
    return int(weights[stable]), int(weights[canary])


def httproute_weights(
    kube: client.ApiClient, ns: str, name: str, stable: str = "web", canary: str = "web-canary"
) -> tuple[Weights, ...]:
    """The (stable, canary) weights of every rule of the route that splits between the two."""
    route = read(kube, GATEWAY, ns, name)
    found = (backend_weights(r, stable, canary) for r in route["spec"]["rules"])
    return tuple(w for w in found if w is not None)


def destination_weights(
    http: dict[str, Any], is_stable: Callable[[dict[str, Any]], bool]
) -> Weights | None:
    dests = http.get("route") or []
    if len(dests) != 2:
        return None
    stable = [d for d in dests if is_stable(d["destination"])]
    canary = [d for d in dests if not is_stable(d["destination"])]
    if len(stable) != 1 or len(canary) != 1:
        return None
    return int(stable[0].get("weight", 0)), int(canary[0].get("weight", 0))


def virtualservice_weights(
    kube: client.ApiClient, ns: str, name: str, is_stable: Callable[[dict[str, Any]], bool]
) -> tuple[Weights, ...]:
    """The (stable, canary) weights of the VirtualService's own routes (not Argo's mirror)."""
    vs = read(kube, VIRTUAL_SERVICE, ns, name)
    found = (destination_weights(h, is_stable) for h in vs["spec"]["http"] if "mirror" not in h)
    return tuple(w for w in found if w is not None)


def walk(samples: Iterable[tuple[Weights, ...]]) -> list[tuple[Weights, ...]]:
    """The samples without repeats: the sequence of weights the route went through."""
    out: list[tuple[Weights, ...]] = []
    for sample in samples:
        if not out or out[-1] != sample:
            out.append(sample)
    return out


# At the end of the steps Argo sends everything to the canary, then makes it the stable
# version and sends everything to the stable Service again (so that the old version never
# takes all the traffic back for a moment, argo-rollouts#1718): a sampler may catch it.
PROMOTION: Weights = (0, 100)


def assert_follows_steps(
    samples: Sequence[tuple[Weights, ...]],
    expected: Sequence[Weights],
    routes: int = 1,
    *,
    optional: Sequence[Weights] = (),
) -> None:
    """Every sample is one of the steps' weights (or an optional one) on every route at
    once, and the steps' weights were seen in their order."""
    allowed = {(w,) * routes for w in (*expected, *optional)}
    strays = [s for s in samples if s not in allowed]
    assert not strays, f"weights that follow no step: {strays[:5]} (walk {walk(samples)})"
    seen = [s[0] for s in walk(samples) if s[0] not in optional]
    position = 0
    for weights in expected:
        assert weights in seen[position:], f"{weights} not seen in order; walk: {seen}"
        position = seen.index(weights, position)


def at_manual_pause(kube: client.ApiClient, name: str, ns: str, step: int) -> bool:
    status = rollout_object(kube, name, ns).get("status") or {}
    return bool(status.get("currentStepIndex") == step and status.get("pauseConditions"))


def wait_for_pause(kube: client.ApiClient, name: str, ns: str, step: int) -> None:
    eventually(
        lambda: at_manual_pause(kube, name, ns, step),
        f"Rollout {name} at its pause without a duration (step {step})",
        timeout=90,
    )


def phase(kube: client.ApiClient, name: str, ns: str) -> str | None:
    found = rollout_object(kube, name, ns)
    status = found.get("status") or {}
    if status.get("observedGeneration") != str(found["metadata"]["generation"]):
        return None
    value: str | None = status.get("phase")
    return value


def promote_to_healthy(argo: harness.Tool, kube: client.ApiClient, name: str, ns: str) -> None:
    promote(argo, kube, name, ns)
    eventually(lambda: phase(kube, name, ns) == "Healthy", f"Rollout {name} Healthy", 120)


def without_weights(rules: list[dict[str, Any]], canary: str) -> list[dict[str, Any]]:
    """HTTPRoute rules with the canary backend and every weight left out: what neither the
    webhook nor Argo may change."""
    out = []
    for rule in rules:
        copy = dict(rule)
        copy["backendRefs"] = [
            {k: v for k, v in ref.items() if k != "weight"}
            for ref in rule.get("backendRefs") or []
            if ref.get("name") != canary
        ]
        out.append(copy)
    return out


def delete_quietly(kubectl: harness.Tool, kind: str, name: str, ns: str) -> None:
    with contextlib.suppress(harness.CommandFailed):
        kubectl("delete", kind, name, "-n", ns, "--ignore-not-found", "--wait=false")
