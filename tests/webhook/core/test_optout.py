"""The reverse plan: what opt-out restores."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest

from tests.builders import hpa, httproute, opted_in, service, virtualservice
from webhook.core.actions import Apply, ClusterAction, Delete, DeleteOrphanReplicaSets, Emit, Patch
from webhook.core.convert import Neighbours, plan_conversion
from webhook.core.keys import DEFAULT_KEYS as K
from webhook.core.optout import (
    OPT_OUT_POLL_SECONDS,
    RELEASE_SERVICES,
    next_opt_out_step,
    plan_opt_out,
)
from webhook.core.policy import builtin_policy


def converted_namespace(**kw: object) -> tuple[dict[str, object], Neighbours]:
    neighbours = Neighbours(
        services=(service(),),
        hpas=(hpa(lo=2, hi=6),),
        http_routes=(httproute(),),
        virtual_services=(virtualservice(),),
    )
    result = plan_conversion(opted_in(replicas=4), neighbours, builtin_policy())
    assert result.rollout is not None
    routes = {r["kind"]: r for r in result.routes}
    return result.deployment, Neighbours(
        services=(*neighbours.services, *result.services),
        hpas=result.hpas,
        http_routes=(routes.get("HTTPRoute", httproute()),),
        virtual_services=(routes.get("VirtualService", virtualservice()),),
        rollouts=(result.rollout,),
    )


def test_opt_out_restores_everything() -> None:
    deployment, neighbours = converted_namespace()
    plan = plan_opt_out(deployment, neighbours)
    assert plan.replicas == 4
    assert plan.deployment["spec"]["replicas"] == 4
    assert not set(plan.deployment["metadata"]["annotations"]) & set(K.written_annotations())
    assert [h["spec"]["scaleTargetRef"]["kind"] for h in plan.hpas] == ["Deployment"]
    (route,) = plan.routes
    assert route["spec"]["rules"][0]["backendRefs"] == [{"name": "web", "port": 80, "weight": 100}]
    assert plan.delete_rollout == "web"
    assert plan.delete_services == ("web-canary",)


def sized(neighbours: Neighbours, replicas: int) -> Neighbours:
    rollout = neighbours.rollouts[0]
    spec = {**rollout["spec"], "replicas": replicas}
    return replace(neighbours, rollouts=({**rollout, "spec": spec},))


def test_opt_out_bounds_replicas_by_the_hpa() -> None:
    deployment, neighbours = converted_namespace()
    deployment["metadata"]["annotations"][K.original_replicas] = "1"  # type: ignore[index]
    assert plan_opt_out(deployment, sized(neighbours, 1)).replicas == 2


def test_opt_out_gives_the_deployment_the_rollouts_size() -> None:
    # Scaled by hand (or by the HPA) since the annotation was last mirrored: the Rollout's
    # size is the service's.
    deployment, neighbours = converted_namespace()
    assert plan_opt_out(deployment, sized(neighbours, 5)).replicas == 5
    # Without the Rollout, the annotation says it.
    assert plan_opt_out(deployment, replace(neighbours, rollouts=())).replicas == 4


def test_opt_out_never_lowers_a_running_deployment() -> None:
    deployment, neighbours = converted_namespace()
    deployment["spec"]["replicas"] = 5  # type: ignore[index]
    assert plan_opt_out(deployment, neighbours).replicas == 5


def test_opt_out_leaves_foreign_objects_alone() -> None:
    deployment, neighbours = converted_namespace()
    foreign = {
        **neighbours.rollouts[0],
        "metadata": {"name": "web", "namespace": "prod", "labels": {}},
    }
    plan = plan_opt_out(deployment, Neighbours(rollouts=(foreign,)))
    assert plan.delete_rollout is None
    assert plan.delete_services == ()


REASON = "opted out by label"
Obj = dict[str, Any]


def converted() -> tuple[Obj, Obj, Obj]:
    """(Deployment, Rollout, generated Service) as a conversion of 4 replicas leaves them."""
    result = plan_conversion(
        opted_in(replicas=4), Neighbours(services=(service(),)), builtin_policy()
    )
    assert result.rollout is not None
    (canary,) = result.services
    return copy.deepcopy(result.deployment), copy.deepcopy(result.rollout), copy.deepcopy(canary)


def restored(*, available: int) -> tuple[Obj, Obj, Obj]:
    """Step 1 done: the Deployment has its replicas back, the Rollout scales nothing down."""
    deployment, rollout, canary = converted()
    deployment["spec"]["replicas"] = 4
    deployment["metadata"]["generation"] = 2
    deployment["status"] = {"observedGeneration": 2, "availableReplicas": available}
    rollout["spec"]["workloadRef"]["scaleDown"] = "never"
    return deployment, rollout, canary


def released() -> tuple[Obj, Obj, Obj]:
    deployment, rollout, canary = restored(available=4)
    rollout["spec"]["strategy"] = {"canary": {"steps": []}}
    return deployment, rollout, canary


def deleting() -> tuple[Obj, Obj, Obj]:
    deployment, rollout, canary = released()
    rollout["metadata"]["deletionTimestamp"] = "2026-11-26T12:00:00Z"
    return deployment, rollout, canary


def rollout_gone() -> tuple[Obj, None, None]:
    deployment, _, _ = released()
    return deployment, None, None


def never_converted() -> tuple[Obj, None, None]:
    return opted_in(replicas=4), None, None


def rollout_scaling_down() -> tuple[Obj, Obj, Obj]:
    return converted()


def pods_not_ready() -> tuple[Obj, Obj, Obj]:
    return restored(available=1)


def pods_ready() -> tuple[Obj, Obj, Obj]:
    return restored(available=4)


def describe(action: ClusterAction) -> str:
    if isinstance(action, Apply):
        return f"apply {action.manifest['kind']}"
    if isinstance(action, Patch):
        return f"patch {action.kind}"
    if isinstance(action, Delete):
        return f"delete {action.kind} {action.name}"
    if isinstance(action, DeleteOrphanReplicaSets):
        return "delete orphan ReplicaSets"
    assert isinstance(action, Emit)
    return f"event {action.reason}"


@pytest.mark.parametrize(
    ("state", "summary", "actions", "requeue"),
    [
        (
            rollout_scaling_down,
            REASON,
            ["event OptingOut", "patch Rollout", "patch Deployment"],
            OPT_OUT_POLL_SECONDS,
        ),
        (
            pods_not_ready,
            "waiting for the Deployment's pods: 1 of 4 available",
            [],
            OPT_OUT_POLL_SECONDS,
        ),
        (pods_ready, REASON, ["patch Rollout"], OPT_OUT_POLL_SECONDS),
        (
            released,
            REASON,
            ["delete Rollout web", "delete Service web-canary"],
            OPT_OUT_POLL_SECONDS,
        ),
        (deleting, "waiting for the Rollout's deletion to finish", [], OPT_OUT_POLL_SECONDS),
        (
            rollout_gone,
            REASON,
            ["delete orphan ReplicaSets", "patch Deployment", "event OptedOut"],
            None,
        ),
        (never_converted, REASON, [], None),
    ],
)
def test_the_step_that_is_due(
    state: Any, summary: str, actions: list[str], requeue: float | None
) -> None:
    deployment, rollout, canary = state()
    neighbours = Neighbours(
        services=(service(), *([canary] if canary else [])),
        rollouts=(rollout,) if rollout else (),
    )
    step = next_opt_out_step(deployment, neighbours, REASON, K)
    assert step.summary == summary
    assert [describe(a) for a in step.actions] == actions
    assert step.requeue_after == requeue
    assert step.finished == (not actions and requeue is None)


def test_releasing_the_services_is_one_merge_patch_of_the_strategy() -> None:
    deployment, rollout, canary = pods_ready()
    step = next_opt_out_step(
        deployment, Neighbours(services=(service(), canary), rollouts=(rollout,)), REASON, K
    )
    (patch,) = step.actions
    assert isinstance(patch, Patch)
    assert patch.patch == {"spec": {"strategy": RELEASE_SERVICES}}


def test_a_rollout_the_product_did_not_generate_is_not_its_to_remove() -> None:
    deployment, rollout, _ = converted()
    rollout["metadata"]["labels"] = {}
    step = next_opt_out_step(deployment, Neighbours(rollouts=(rollout,)), REASON, K)
    assert "delete Rollout web" not in [describe(a) for a in step.actions]
    assert [describe(a) for a in step.actions][-1] == "event OptedOut"
