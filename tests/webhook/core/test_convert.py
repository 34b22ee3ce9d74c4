"""The conversion planner, rule by rule, as tables: the Rollout and the Deployment."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.builders import deployment, hpa, httproute, opted_in, service
from tests.webhook.core.conftest import POLICY, plan
from webhook.core.convert import Neighbours
from webhook.core.keys import DEFAULT_KEYS as K
from webhook.core.objects import applied_hash

# --- the Rollout and the Deployment ------------------------------------------


def test_rollout_shape() -> None:
    dep = opted_in(labels={"app.kubernetes.io/instance": "web-prod", "team": "a"})
    dep["metadata"]["annotations"] = {"argocd.argoproj.io/tracking-id": "x"}
    dep["spec"].update(revisionHistoryLimit=4, minReadySeconds=5, progressDeadlineSeconds=300)
    result = plan(dep)
    rollout = result.rollout
    assert rollout is not None
    assert rollout["metadata"]["labels"] == {"team": "a", K.managed: "true", K.generated_for: "web"}
    assert "argocd.argoproj.io/tracking-id" not in rollout["metadata"]["annotations"]
    spec = rollout["spec"]
    assert spec["workloadRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
        "scaleDown": "onsuccess",
    }
    assert "template" not in spec
    assert (
        spec["replicas"],
        spec["revisionHistoryLimit"],
        spec["minReadySeconds"],
        spec["progressDeadlineSeconds"],
    ) == (3, 4, 5, 300)


def test_create_scales_the_deployment_to_zero_and_records_the_decision() -> None:
    result = plan(opted_in(replicas=5), operation="CREATE")
    meta = result.deployment["metadata"]["annotations"]
    assert result.deployment["spec"]["replicas"] == 0
    assert meta[K.original_replicas] == "5"
    assert meta[K.rollout_name] == "web"
    assert meta[K.applied_environment] == "prod"
    assert meta[K.applied_strategy] == "canary"
    assert meta[K.policy_version] == str(POLICY.version)
    assert result.rollout is not None and result.rollout["spec"]["replicas"] == 5


def test_update_of_a_running_deployment_leaves_replicas_to_argo() -> None:
    old = deployment(replicas=4)
    new = opted_in(replicas=4)
    result = plan(new, operation="UPDATE", old_deployment=old)
    assert result.deployment["spec"]["replicas"] == 4
    assert result.rollout is not None and result.rollout["spec"]["replicas"] == 4


def test_gitops_resync_of_replicas_does_not_double_capacity() -> None:
    """argo-rollouts#4935: a sync puts replicas back after Argo scaled the Deployment down."""
    converted = plan(opted_in(replicas=3)).deployment
    scaled_down = {**converted, "spec": {**converted["spec"], "replicas": 0}}
    resync = {**converted, "spec": {**converted["spec"], "replicas": 6}}
    result = plan(resync, operation="UPDATE", old_deployment=scaled_down)
    assert result.deployment["spec"]["replicas"] == 0
    assert result.deployment["metadata"]["annotations"][K.original_replicas] == "6"
    assert result.rollout is not None and result.rollout["spec"]["replicas"] == 6


def test_hpa_bounds_the_rollout_replicas_and_is_retargeted() -> None:
    result = plan(opted_in(replicas=1), neighbours=Neighbours(hpas=(hpa(lo=3, hi=8), hpa("other"))))
    assert result.rollout is not None and result.rollout["spec"]["replicas"] == 3
    assert [h["spec"]["scaleTargetRef"] for h in result.hpas] == [
        {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "web"}
    ]


def test_existing_rollout_keeps_hpa_managed_replicas() -> None:
    first = plan(opted_in(), neighbours=Neighbours(hpas=(hpa(),)))
    assert first.rollout is not None
    first.rollout["spec"]["replicas"] = 7  # the HPA scaled it
    again = plan(
        first.deployment,
        neighbours=Neighbours(hpas=first.hpas, rollouts=(first.rollout,)),
        operation="UPDATE",
        old_deployment=first.deployment,
    )
    assert again.rollout is not None and again.rollout["spec"]["replicas"] == 7


def test_strategy_never_changes_under_a_running_rollout() -> None:
    first = plan(opted_in())
    assert first.rollout is not None
    running = {**first.rollout, "status": {"phase": "Paused"}}
    staging = plan(
        first.deployment,
        neighbours=Neighbours(rollouts=(running,)),
        environment="staging",
    )
    assert staging.rollout is not None
    assert staging.rollout["spec"]["strategy"] == first.rollout["spec"]["strategy"]
    healthy = {**first.rollout, "status": {"phase": "Healthy"}}
    moved = plan(
        first.deployment, neighbours=Neighbours(rollouts=(healthy,)), environment="staging"
    )
    assert moved.rollout is not None
    assert moved.rollout["spec"]["strategy"]["canary"]["steps"][0] == {"setWeight": 50}


def test_recreate_is_a_warning() -> None:
    result = plan(opted_in(strategy={"type": "Recreate"}))
    assert result.converted
    assert any("Recreate has no Rollout equivalent" in w for w in result.warnings)


def test_owner_reference_once_the_deployment_has_a_uid() -> None:
    result = plan(opted_in(uid="1234"), neighbours=Neighbours(services=(service(),)))
    assert result.rollout is not None
    owners = [
        result.rollout["metadata"]["ownerReferences"],
        result.services[0]["metadata"]["ownerReferences"],
    ]
    assert all(
        o == [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "1234"}]
        for o in owners
    )
    assert "ownerReferences" not in plan(opted_in()).rollout["metadata"]


def test_warnings_are_plain_strings() -> None:
    result = plan(opted_in())
    assert all(isinstance(w, str) for w in result.warnings)
    yaml.safe_dump(list(result.warnings))


# --- the applied hash on generated objects -----------------------------------


def _hashes(dep: dict[str, Any], *neighbours: dict[str, Any]) -> tuple[str, ...]:
    result = plan(dep, neighbours=_neighbours(*neighbours))
    generated = [result.rollout, *result.services]
    return tuple(o["metadata"]["annotations"][K.applied_hash] for o in generated)


def _neighbours(*objs: dict[str, Any]) -> Neighbours:
    return Neighbours(
        services=tuple(o for o in objs if o["kind"] == "Service"),
        http_routes=tuple(o for o in objs if o["kind"] == "HTTPRoute"),
    )


def test_generated_objects_carry_the_hash_of_their_manifest() -> None:
    result = plan(opted_in(), neighbours=_neighbours(service()))
    for obj in (result.rollout, *result.services):
        assert obj["metadata"]["annotations"][K.applied_hash] == applied_hash(obj, K)
    assert K.applied_hash not in (result.deployment["metadata"].get("annotations") or {})


@pytest.mark.parametrize(
    ("what", "before", "after", "rollout_changes", "clone_changes"),
    [
        ("the same inputs", opted_in(), opted_in(), False, False),
        ("replicas only", opted_in(), opted_in(replicas=7), False, False),
        ("a label", opted_in(), opted_in(labels={"team": "a"}), True, False),
        ("the rolling update", opted_in(), opted_in(strategy=None), True, False),
    ],
)
def test_the_hash_follows_the_manifest_except_replicas(
    what: str, before: Any, after: Any, rollout_changes: bool, clone_changes: bool
) -> None:
    first, second = _hashes(before, service()), _hashes(after, service())
    assert (first[0] != second[0], first[1] != second[1]) == (rollout_changes, clone_changes), what


def test_the_hash_changes_when_a_service_or_route_goes() -> None:
    both = _hashes(opted_in(), service(), httproute())
    assert _hashes(opted_in(), service())[0] != both[0]  # trafficRouting gone
    only_rollout = plan(opted_in()).rollout
    assert only_rollout["metadata"]["annotations"][K.applied_hash] != both[0]
    wider = service(selector={"app": "web", "tier": "front"})
    dep = opted_in(pod_labels={"app": "web", "tier": "front"})
    assert _hashes(dep, wider)[1] != _hashes(dep, service())[1]  # the clone's selector
