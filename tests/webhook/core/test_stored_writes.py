"""The writes after an admission, decided from the stored objects only: tables of what the
caches hold against ``stored_writes``. The review names the object and nothing more, so
a forged or replayed one leads to nothing the stored objects do not already call for."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tests import builders
from tests.builders import Obj
from tests.webhook.core.test_admission import Caches
from webhook.core.cluster import CREATE_ROLLOUTS, Permission
from webhook.core.keys import DEFAULT_KEYS as K
from webhook.core.policy import builtin_policy
from webhook.core.stored_writes import (
    SCALE,
    StoredWrites,
    WriteScope,
    permissions_needed,
    scope_of,
    stored_writes,
    without_kinds,
)

POLICY = builtin_policy()
NS = "prod"
CREATE_SERVICES = Permission("create", "", "services")


def converted(name: str = "web", *, size: str = "3", version: str = "7", **kw: Any) -> Obj:
    annotations = {K.rollout_name: name, K.original_replicas: size, **kw.pop("annotations", {})}
    obj = builders.opted_in(name, NS, annotations=annotations, replicas=0, uid=f"uid-{name}", **kw)
    obj["metadata"]["resourceVersion"] = version
    return obj


def writes(scope: WriteScope, *cached: Obj, expired: bool = False) -> StoredWrites:
    return stored_writes(scope, Caches(*cached), POLICY, keys=K, expired=expired)


def kinds(result: StoredWrites) -> list[tuple[str, str]]:
    return [(c["kind"], c["metadata"]["name"]) for c in result.changes]


DEPLOYMENT = WriteScope("Deployment", NS, "web", "CREATE")


@pytest.mark.parametrize(
    ("cached", "reason"),
    [
        ((), "Deployment prod/web is not stored (refused by a later admission step?)"),
        # Forged for a labelled Deployment nobody converted: no admission patch was stored.
        ((builders.opted_in("web", NS), builders.service("web", NS)), "is not stored converted"),
        # Forged for a Deployment whose requester lacked the rights: it stays refused.
        (
            (converted(annotations={K.refused: "erin may not create rollouts"}),),
            "is stored refused (erin may not create rollouts)",
        ),
    ],
)
def test_a_deployment_not_stored_converted_waits_and_then_writes_nothing(
    cached: tuple[Obj, ...], reason: str
) -> None:
    assert writes(DEPLOYMENT, *cached).state == "wait"
    result = writes(DEPLOYMENT, *cached, expired=True)
    assert (result.state, result.changes) == ("none", ())
    assert reason in result.reason


def test_a_stored_conversion_writes_what_the_stored_objects_call_for() -> None:
    result = writes(DEPLOYMENT, converted(), builders.service("web", NS))
    assert result.state == "write"
    assert kinds(result) == [("Rollout", "web"), ("Service", "web-canary")]
    assert result.changes[0]["spec"]["replicas"] == 3


def test_the_writes_of_another_namespace_are_looked_up_in_the_requests_namespace() -> None:
    """A review saying namespace team-a about an object of namespace victim: the object is
    looked up in team-a, where the requester's rights were checked."""
    scope = WriteScope("Deployment", "team-a", "web", "CREATE")
    result = writes(scope, converted(), builders.service("web", NS), expired=True)
    assert (result.state, result.changes) == ("none", ())


def test_an_update_waits_for_a_version_later_than_the_one_it_was_based_on() -> None:
    scope = WriteScope("Deployment", NS, "web", "UPDATE", old_version="7")
    stored = (converted(version="7"), builders.service("web", NS))
    assert writes(scope, *stored).state == "wait"
    # The request changed nothing, so nothing new is stored: planned from what is.
    assert writes(scope, *stored, expired=True).state == "write"
    assert writes(scope, converted(version="8"), builders.service("web", NS)).state == "write"


@pytest.mark.parametrize(
    ("hpa", "size"),
    [
        (None, 5),  # the size the admission recorded goes to the Rollout
        (builders.hpa("web", NS, kind="Rollout"), 3),  # an HPA owns the size
    ],
)
def test_the_rollouts_size_is_the_one_the_stored_deployment_records(
    hpa: Obj | None, size: int
) -> None:
    cached = [converted(size="5"), builders.rollout("web", NS, replicas=3)]
    if hpa is not None:
        cached.append(hpa)
    result = writes(DEPLOYMENT, *cached)
    (rollout,) = [c for c in result.changes if c["kind"] == "Rollout"]
    assert rollout["spec"]["replicas"] == size


def scale_scope(replicas: int, *, uid: str = "uid-web", version: str = "7") -> WriteScope:
    scale = builders.scale("web", NS, replicas)
    scale["metadata"].update(uid=uid, resourceVersion=version)
    return WriteScope(SCALE, NS, "web", "UPDATE", old_version=version, scale=scale)


@pytest.mark.parametrize(
    ("scope", "state", "reason"),
    [
        (scale_scope(6), "write", "is stored as the Scale saw it"),
        # Forged without having read the Deployment: its uid is a random UUID.
        (scale_scope(6, uid="guessed"), "none", "its uid differs"),
        # Replayed after the Deployment changed: stale.
        (scale_scope(6, version="3"), "wait", "its resourceVersion differs: stale"),
    ],
)
def test_a_scale_is_written_only_for_the_deployment_as_stored(
    scope: WriteScope, state: str, reason: str
) -> None:
    result = writes(scope, converted(), builders.rollout("web", NS, replicas=3))
    assert result.state == state
    assert reason in result.reason
    if state == "write":
        assert kinds(result) == [("Rollout", "web")]
        assert result.changes[0]["spec"]["replicas"] == 6


def test_a_scale_current_when_admitted_survives_a_change_made_just_after() -> None:
    scope = replace(scale_scope(6, version="7"), current_at_admission=True)
    result = writes(scope, converted(version="8"), builders.rollout("web", NS, replicas=3))
    assert (result.state, kinds(result)) == ("write", [("Rollout", "web")])


def test_a_scale_of_a_deployment_not_converted_writes_nothing() -> None:
    plain = builders.opted_in("web", NS, uid="uid-web")
    plain["metadata"]["resourceVersion"] = "7"
    result = writes(scale_scope(6), plain)
    assert (result.state, result.changes) == ("none", ())


HPA_SCOPE = WriteScope("HorizontalPodAutoscaler", NS, "web", "CREATE")


def test_an_hpa_writes_the_rollout_only_once_stored_aimed_at_it() -> None:
    aimed_at_deployment = builders.hpa("web", NS)
    assert writes(HPA_SCOPE, converted(), aimed_at_deployment).state == "wait"
    result = writes(HPA_SCOPE, converted(), builders.hpa("web", NS, kind="Rollout"))
    assert (result.state, kinds(result)) == ("write", [("Rollout", "web")])


def test_an_hpa_of_a_deployment_not_converted_writes_nothing() -> None:
    stored = builders.hpa("web", NS, kind="Rollout")
    result = writes(HPA_SCOPE, builders.opted_in("web", NS), stored)
    assert (result.state, result.changes) == ("none", ())


ROUTE_SCOPE = WriteScope("HTTPRoute", NS, "web", "CREATE")


def test_a_route_writes_only_once_stored_with_its_canary_backend() -> None:
    cached = (converted(), builders.service("web", NS))
    lone = builders.httproute("web", NS, rules=[builders.backend_rule("web")])
    assert writes(ROUTE_SCOPE, *cached, lone).state == "wait"
    assert writes(ROUTE_SCOPE, *cached, lone, expired=True).state == "none"
    both = builders.httproute("web", NS, rules=[builders.backend_rule("web", "web-canary")])
    both["spec"]["rules"][0]["backendRefs"][0]["weight"] = 100
    both["spec"]["rules"][0]["backendRefs"][1]["weight"] = 0
    result = writes(ROUTE_SCOPE, *cached, both)
    assert result.state == "write", result.reason
    assert ("Rollout", "web") in kinds(result)


def test_the_scope_of_a_review_is_its_kind_namespace_name_and_base_version() -> None:
    old = builders.opted_in("web", NS)
    old["metadata"]["resourceVersion"] = "41"
    request = builders.admission_request(builders.opted_in("web", NS), operation="UPDATE", old=old)
    scope = scope_of(request)  # type: ignore[arg-type]
    assert (scope.kind, scope.namespace, scope.name, scope.old_version) == (
        "Deployment",
        NS,
        "web",
        "41",
    )
    request = builders.scale_request("web", NS, replicas=4, current=0)
    request["object"]["metadata"]["resourceVersion"] = "7"
    for cached, current in ((converted(version="7"), True), (converted(version="6"), False)):
        scale = scope_of(request, Caches(cached))  # type: ignore[arg-type]
        assert (scale.kind, scale.scale is not None) == (SCALE, True)
        assert scale.current_at_admission is current


def test_writes_are_cut_to_the_rights_the_requester_has() -> None:
    changes = (builders.rollout("web", NS), builders.service("web-canary", NS))
    assert permissions_needed(changes) == tuple(sorted({CREATE_ROLLOUTS, CREATE_SERVICES}))
    kept = without_kinds(changes, [CREATE_SERVICES])
    assert [c["kind"] for c in kept] == ["Rollout"]
    with pytest.raises(ValueError, match="no permission known for writing Secret"):
        permissions_needed([{"kind": "Secret"}])
