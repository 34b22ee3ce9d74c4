"""The reverse plan: what opt-out restores."""

from __future__ import annotations

from tests.builders import hpa, httproute, opted_in, service, virtualservice
from webhook.core.convert import Neighbours, plan_conversion
from webhook.core.keys import DEFAULT_KEYS as K
from webhook.core.optout import plan_opt_out
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


def test_opt_out_bounds_replicas_by_the_hpa() -> None:
    deployment, neighbours = converted_namespace()
    deployment["metadata"]["annotations"][K.original_replicas] = "1"  # type: ignore[index]
    assert plan_opt_out(deployment, neighbours).replicas == 2


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
