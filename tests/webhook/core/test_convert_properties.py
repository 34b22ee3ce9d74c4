"""Properties of the planner over generated services (hypothesis).

- Idempotence: planning the planned objects again changes nothing (webhook reinvocation,
  reconciler re-runs, a second `kubectl apply`).
- Patch round trip: the JSON Patch between a request object and its planned copy,
  applied to the request object, gives the planned copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import jsonpatch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.builders import hpa, httproute, opted_in, service, virtualservice
from webhook.core.convert import Conversion, Neighbours, plan_conversion
from webhook.core.keys import DEFAULT_KEYS as K
from webhook.core.policy import builtin_policy

POLICY = builtin_policy()


@st.composite
def services(draw: st.DrawFn) -> tuple[dict[str, Any], Neighbours]:
    labels = {}
    env = draw(st.sampled_from([None, "dev", "staging", "prod"]))
    if env:
        labels[K.environment] = env
    annotations = {}
    if draw(st.booleans()):
        annotations[K.strategy] = draw(st.sampled_from(["canary", "bluegreen"]))
    if draw(st.booleans()):
        weight = draw(st.integers(0, 100))
        annotations[K.rollout] = f"canary: {{steps: [{{setWeight: {weight}}}, {{pause: {{}}}}]}}"
    dep = opted_in(
        labels=labels,
        annotations=annotations or None,
        replicas=draw(st.integers(0, 50)),
        uid=draw(st.sampled_from([None, "uid-1"])),
    )
    neighbours = Neighbours(
        services=(service(),) if draw(st.booleans()) else (),
        hpas=(hpa(lo=draw(st.integers(1, 5)), hi=draw(st.integers(5, 20))),)
        if draw(st.booleans())
        else (),
        http_routes=(httproute(),) if draw(st.booleans()) else (),
        virtual_services=(virtualservice(),) if draw(st.booleans()) else (),
    )
    return dep, neighbours


def after(neighbours: Neighbours, result: Conversion) -> Neighbours:
    """The namespace as it is once the conversion's objects are stored."""

    def replace(
        objs: tuple[Mapping[str, Any], ...], changed: tuple[dict[str, Any], ...]
    ) -> tuple[Mapping[str, Any], ...]:
        by_name = {(o["kind"], o["metadata"]["name"]): o for o in changed}
        return tuple(by_name.get((o["kind"], o["metadata"]["name"]), o) for o in objs)

    return Neighbours(
        namespace=neighbours.namespace,
        services=(*neighbours.services, *result.services),
        hpas=replace(neighbours.hpas, result.hpas),
        http_routes=replace(neighbours.http_routes, result.routes),
        virtual_services=replace(neighbours.virtual_services, result.routes),
        rollouts=(result.rollout,) if result.rollout else (),
    )


@settings(max_examples=150, deadline=None)
@given(services(), st.sampled_from(["CREATE", "UPDATE"]))
def test_planning_twice_changes_nothing(
    case: tuple[dict[str, Any], Neighbours], operation: Literal["CREATE", "UPDATE"]
) -> None:
    dep, neighbours = case
    first = plan_conversion(dep, neighbours, POLICY, operation="CREATE")
    if not first.converted:
        return
    stored = after(neighbours, first)
    old = first.deployment if operation == "UPDATE" else None
    second = plan_conversion(
        first.deployment, stored, POLICY, operation=operation, old_deployment=old
    )
    assert second.converted
    assert second.deployment == first.deployment
    assert second.rollout == first.rollout
    assert second.services == first.services
    assert second.hpas == ()
    assert second.routes == ()


@settings(max_examples=150, deadline=None)
@given(services())
def test_patch_round_trip(case: tuple[dict[str, Any], Neighbours]) -> None:
    dep, neighbours = case
    result = plan_conversion(dep, neighbours, POLICY, operation="CREATE")
    pairs: list[tuple[Mapping[str, Any], dict[str, Any]]] = [(dep, result.deployment)]
    originals = {
        (o["kind"], o["metadata"]["name"]): o
        for o in (*neighbours.hpas, *neighbours.http_routes, *neighbours.virtual_services)
    }
    pairs += [
        (originals[(o["kind"], o["metadata"]["name"])], o) for o in (*result.hpas, *result.routes)
    ]
    for before, planned in pairs:
        patch = jsonpatch.make_patch(before, planned)
        assert patch.apply(before) == planned
    if not result.converted:
        assert jsonpatch.make_patch(dep, result.deployment).patch == []
