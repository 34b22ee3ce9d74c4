"""The reconciler's decisions, pass by pass, against a tiny in-memory cluster."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.builders import (
    deployment,
    hpa,
    httproute,
    merge,
    opted_in,
    server_side_apply,
    service,
)
from webhook.core.actions import Apply, Delete, DeleteOrphanReplicaSets, Emit, Patch
from webhook.core.convert import Neighbours
from webhook.core.keys import DEFAULT_KEYS as K
from webhook.core.policy import builtin_policy, parse_policy_text
from webhook.core.reconcile import ReconcilePlan, contains, plan_reconcile
from webhook.core.services import POD_TEMPLATE_HASH

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
POLICY = builtin_policy()


class Cluster:
    """Objects by (kind, name) in one namespace; carries out a plan's actions."""

    def __init__(self, *objs: dict[str, Any]) -> None:
        self.objs = {(o["kind"], o["metadata"]["name"]): copy.deepcopy(o) for o in objs}
        self.orphan_rs_deleted = 0

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.objs.get((kind, name))

    def of(self, kind: str) -> tuple[dict[str, Any], ...]:
        return tuple(o for (k, _), o in sorted(self.objs.items()) if k == kind)

    def plan(self, name: str = "web", policy: Any = POLICY, now: datetime = NOW) -> ReconcilePlan:
        neighbours = Neighbours(
            namespace=None,
            services=self.of("Service"),
            hpas=self.of("HorizontalPodAutoscaler"),
            http_routes=self.of("HTTPRoute"),
            rollouts=self.of("Rollout"),
        )
        return plan_reconcile(
            "prod", name, self.get("Deployment", name), neighbours, policy, now=now
        )

    def carry_out(self, plan: ReconcilePlan) -> None:
        for action in plan.actions:
            if isinstance(action, Apply):
                key = (action.manifest["kind"], action.manifest["metadata"]["name"])
                self.objs[key] = server_side_apply(self.objs.get(key, {}), action.manifest)
                self.objs[key]["metadata"].setdefault("creationTimestamp", NOW.isoformat())
            elif isinstance(action, Patch):
                self.objs[(action.kind, action.name)] = merge(
                    self.objs[(action.kind, action.name)], action.patch
                )
            elif isinstance(action, Delete):
                del self.objs[(action.kind, action.name)]
            elif isinstance(action, DeleteOrphanReplicaSets):
                self.orphan_rs_deleted += 1


def kinds(plan: ReconcilePlan) -> list[str]:
    out = []
    for a in plan.actions:
        if isinstance(a, Apply):
            out.append(f"apply {a.manifest['kind']}")
        elif isinstance(a, Patch):
            out.append(f"patch {a.kind}")
        elif isinstance(a, Delete):
            out.append(f"delete {a.kind}")
        elif isinstance(a, DeleteOrphanReplicaSets):
            out.append("delete orphan ReplicaSets")
        else:
            out.append(f"event {a.reason}")
    return out


def running(dep: dict[str, Any]) -> dict[str, Any]:
    dep = copy.deepcopy(dep)
    dep["metadata"]["generation"] = 1
    dep["status"] = {"observedGeneration": 1, "availableReplicas": dep["spec"]["replicas"]}
    return dep


def test_contains_allows_additions_by_others() -> None:
    assert contains({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}, "d": 3})
    assert not contains({"a": [1, 2]}, {"a": [1]})
    assert not contains({"a": 1}, {})


def test_catch_up_converts_what_admission_missed() -> None:
    cluster = Cluster(running(opted_in(uid="u1")), service(), hpa(), httproute())
    plan = cluster.plan()
    assert plan.state == "converting"
    assert kinds(plan) == [
        "apply Service",
        "apply HTTPRoute",
        "apply Rollout",
        "apply HorizontalPodAutoscaler",
        "patch Deployment",
        "event Converted",
    ]
    # A running Deployment keeps its replicas: Argo scales it down.
    patch = next(a for a in plan.actions if isinstance(a, Patch))
    assert "spec" not in patch.patch
    rollout = next(
        a.manifest for a in plan.actions if isinstance(a, Apply) and a.manifest["kind"] == "Rollout"
    )
    assert rollout["metadata"]["ownerReferences"][0]["uid"] == "u1"
    cluster.carry_out(plan)
    again = cluster.plan()
    assert again.state == "converted"
    assert again.actions == ()


def test_changes_by_argo_are_not_drift() -> None:
    cluster = Cluster(running(opted_in(uid="u1")), service(), httproute())
    cluster.carry_out(cluster.plan())
    for svc in cluster.of("Service"):
        svc["spec"]["selector"][POD_TEMPLATE_HASH] = "abc123"
    route = cluster.get("HTTPRoute", "web")
    assert route is not None
    refs = route["spec"]["rules"][0]["backendRefs"]
    refs[0]["weight"], refs[1]["weight"] = 75, 25
    rollout = cluster.get("Rollout", "web")
    assert rollout is not None
    rollout["status"] = {"phase": "Paused", "availableReplicas": 3}
    assert cluster.plan().actions == ()


def test_orphaned_rollout_is_deleted_after_a_grace_period() -> None:
    cluster = Cluster(running(opted_in(uid="u1")), service())
    cluster.carry_out(cluster.plan())
    del cluster.objs[("Deployment", "web")]
    young = cluster.plan(now=NOW + timedelta(seconds=10))
    assert young.actions == ()
    assert young.requeue_after == pytest.approx(51)
    old = cluster.plan(now=NOW + timedelta(minutes=5))
    assert kinds(old) == ["delete Service", "delete Rollout"] or kinds(old) == [
        "delete Rollout",
        "delete Service",
    ]


def test_the_orphan_grace_is_the_caller_s() -> None:
    cluster = Cluster(running(opted_in(uid="u1")), service())
    cluster.carry_out(cluster.plan())
    del cluster.objs[("Deployment", "web")]
    neighbours = Neighbours(
        namespace=None, services=cluster.of("Service"), rollouts=cluster.of("Rollout")
    )

    def plan(seconds: float, grace: timedelta) -> ReconcilePlan:
        at = NOW + timedelta(seconds=seconds)
        return plan_reconcile("prod", "web", None, neighbours, POLICY, now=at, orphan_grace=grace)

    short = timedelta(seconds=3)
    assert plan(1, short).actions == ()
    assert plan(1, short).requeue_after == pytest.approx(3)
    assert {a.kind for a in plan(4, short).actions if isinstance(a, Delete)} == {
        "Rollout",
        "Service",
    }
    assert plan(4, timedelta(seconds=60)).actions == ()  # the default would still wait


def test_gitops_resync_is_drained_with_an_event() -> None:
    cluster = Cluster(opted_in(uid="u1", replicas=3), service())
    cluster.carry_out(cluster.plan())
    dep = cluster.get("Deployment", "web")
    rollout = cluster.get("Rollout", "web")
    assert dep is not None and rollout is not None
    rollout["status"] = {"phase": "Healthy", "availableReplicas": 3}
    dep["spec"]["replicas"] = 0
    assert cluster.plan().actions == ()
    dep["spec"]["replicas"] = 5  # Argo CD put back the count from Git
    plan = cluster.plan()
    # The Rollout gets the count first: should the drain fail, the count is not lost.
    assert kinds(plan) == ["apply Rollout", "patch Deployment", "event ReplicasDrained"]
    apply, patch, event = plan.actions
    assert isinstance(apply, Apply) and apply.manifest["spec"]["replicas"] == 5
    assert isinstance(patch, Patch)
    assert patch.patch == {
        "metadata": {"annotations": {K.original_replicas: "5"}},
        "spec": {"replicas": 0},
    }
    assert isinstance(event, Emit)
    assert "ignoreDifferences" in event.message
    cluster.carry_out(plan)
    assert cluster.plan().actions == ()
    assert cluster.get("Rollout", "web")["spec"]["replicas"] == 5  # type: ignore[index]


def test_no_drain_while_the_rollout_is_not_healthy() -> None:
    cluster = Cluster(opted_in(uid="u1", replicas=3), service())
    cluster.carry_out(cluster.plan())
    rollout = cluster.get("Rollout", "web")
    dep = cluster.get("Deployment", "web")
    assert rollout is not None and dep is not None
    rollout["status"] = {"phase": "Progressing", "availableReplicas": 1}
    dep["spec"]["replicas"] = 3
    assert cluster.plan().actions == ()


def test_opt_out_restores_first_and_never_leaves_zero_ready_pods() -> None:
    dep = opted_in(uid="u1", replicas=3)
    cluster = Cluster(dep, service(), hpa(lo=2, hi=6), httproute())
    cluster.carry_out(cluster.plan())
    stored = cluster.get("Deployment", "web")
    assert stored is not None
    stored["spec"]["replicas"] = 0  # as Argo leaves it
    stored["metadata"]["labels"][K.enabled] = "false"
    for svc in cluster.of("Service"):
        svc["spec"]["selector"][POD_TEMPLATE_HASH] = "abc"

    first = cluster.plan()
    assert kinds(first) == [
        "event OptingOut",
        "patch Rollout",
        "patch Deployment",
        "apply HorizontalPodAutoscaler",
        "apply HTTPRoute",
    ]
    assert first.requeue_after
    cluster.carry_out(first)
    assert stored is not cluster.get("Deployment", "web")
    dep_now = cluster.get("Deployment", "web")
    assert dep_now is not None and dep_now["spec"]["replicas"] == 3
    hpa_now = cluster.get("HorizontalPodAutoscaler", "web")
    assert hpa_now is not None and hpa_now["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    assert cluster.get("Rollout", "web") is not None  # not yet: no pods of the Deployment

    dep_now["status"] = {"availableReplicas": 1}
    waiting = cluster.plan()
    assert waiting.actions == ()
    assert "1 of 3 available" in waiting.summary

    dep_now["status"] = {"availableReplicas": 3}
    release = cluster.plan()
    assert kinds(release) == ["patch Rollout"]
    cluster.carry_out(release)
    released = cluster.get("Rollout", "web")
    assert released is not None
    assert released["spec"]["strategy"] == {"canary": {"steps": []}} or set(
        released["spec"]["strategy"]["canary"]
    ).isdisjoint({"stableService", "canaryService", "trafficRouting"})

    delete = cluster.plan()
    # The stable Service selects the Deployment's pods before the Rollout goes.
    assert kinds(delete) == ["patch Service", "delete Rollout", "delete Service"]
    assert all(
        a.orphan_dependents for a in delete.actions if isinstance(a, Delete) and a.kind == "Rollout"
    )
    cluster.carry_out(delete)
    stable_now = cluster.get("Service", "web")
    assert stable_now is not None and POD_TEMPLATE_HASH not in stable_now["spec"]["selector"]

    cleanup = cluster.plan()
    assert kinds(cleanup) == [
        "delete orphan ReplicaSets",
        "patch Deployment",
        "event OptedOut",
    ]
    cluster.carry_out(cleanup)
    final = cluster.get("Deployment", "web")
    assert final is not None
    assert not set(final["metadata"].get("annotations", {})) & set(K.written_annotations())
    stable = cluster.get("Service", "web")
    assert stable is not None and POD_TEMPLATE_HASH not in stable["spec"]["selector"]
    done = cluster.plan()
    assert (done.state, done.actions) == ("plain", ())


def test_opt_out_waits_while_the_orphaning_delete_of_the_rollout_is_in_progress() -> None:
    """A Rollout deleted with orphaned dependents stays (deletionTimestamp, the orphan
    finalizer) until the garbage collector has freed its ReplicaSets: no second delete, and
    no ReplicaSet clean-up before it is gone."""
    cluster = Cluster(opted_in(uid="u1", replicas=3), service())
    cluster.carry_out(cluster.plan())
    dep = cluster.get("Deployment", "web")
    assert dep is not None
    dep["metadata"]["labels"][K.enabled] = "false"
    cluster.carry_out(cluster.plan())
    dep = cluster.get("Deployment", "web")
    assert dep is not None
    dep["status"] = {"availableReplicas": 3}
    cluster.carry_out(cluster.plan())  # the Rollout lets go of the Services
    assert "delete Rollout" in kinds(cluster.plan())
    rollout = cluster.get("Rollout", "web")
    assert rollout is not None
    rollout["metadata"]["deletionTimestamp"] = "2026-11-26T12:00:00Z"
    rollout["metadata"]["finalizers"] = ["orphan"]

    waiting = cluster.plan()
    assert (waiting.state, waiting.actions) == ("opting-out", ())
    assert waiting.requeue_after
    assert "deletion" in waiting.summary


def test_refused_deployments_are_left_alone_and_told_why() -> None:
    cluster = Cluster(opted_in(annotations={K.refused: "user may not create rollouts"}), service())
    plan = cluster.plan()
    assert plan.state == "refused"
    assert plan.writes == ()
    assert plan.actions == (
        Emit(
            "ConversionRefused",
            "not converted at admission: user may not create rollouts; once granted "
            "(docs/security.md), update the Deployment to have it converted",
            "Warning",
        ),
    )
    opted_out = Cluster(
        deployment(
            labels={K.enabled: "false"}, annotations={K.refused: "user may not create rollouts"}
        )
    )
    assert opted_out.plan().actions == ()


def test_plain_deployments_are_left_alone() -> None:
    cluster = Cluster(deployment(), service())
    assert cluster.plan().actions == ()


@pytest.mark.parametrize(
    ("mode", "follows"), [("immediate", True), ("nextChange", False), ("never", False)]
)
def test_policy_change_follows_rollout_updates(mode: str, follows: bool) -> None:
    cluster = Cluster(opted_in(uid="u1"), service())
    cluster.carry_out(cluster.plan())
    new_policy = parse_policy_text(
        f"defaultEnvironment: prod\nrolloutUpdates: {mode}\nenvironments:\n"
        "  prod:\n    rollout: {canary: {steps: [{setWeight: 33}]}}\n"
    )
    plan = cluster.plan(policy=new_policy)
    applied = [
        a.manifest for a in plan.actions if isinstance(a, Apply) and a.manifest["kind"] == "Rollout"
    ]
    if follows:
        assert applied and applied[0]["spec"]["strategy"]["canary"]["steps"] == [{"setWeight": 33}]
    else:
        assert applied == []


def test_under_next_change_a_deployment_admitted_under_the_new_policy_brings_its_steps() -> None:
    """The admission of the Deployment's next change records the new policy version on it;
    from then on the reconciler plans the new steps too, so it never undoes that admission."""
    cluster = Cluster(opted_in(uid="u1"), service())
    cluster.carry_out(cluster.plan())
    new_policy = parse_policy_text(
        "defaultEnvironment: prod\nrolloutUpdates: nextChange\nenvironments:\n"
        "  prod:\n    rollout: {canary: {steps: [{setWeight: 33}]}}\n"
    )
    stored = cluster.get("Deployment", "web")
    assert stored is not None
    stored["metadata"]["annotations"][K.policy_version] = str(new_policy.version)
    plan = cluster.plan(policy=new_policy)
    applied = [
        a.manifest for a in plan.actions if isinstance(a, Apply) and a.manifest["kind"] == "Rollout"
    ]
    assert applied and applied[0]["spec"]["strategy"]["canary"]["steps"] == [{"setWeight": 33}]


def test_a_kept_strategy_still_gets_the_services_the_cluster_has() -> None:
    """Under rolloutUpdates nextChange the reconciler keeps a Rollout's steps, but which
    Services and routes it uses is the cluster's to decide: a Rollout written from a plan
    that had not seen the Service yet (admission racing the Service's creation) is repaired."""
    cluster = Cluster(running(opted_in(uid="u1")))
    cluster.carry_out(cluster.plan())
    rollout = cluster.get("Rollout", "web")
    assert rollout is not None
    assert "stableService" not in rollout["spec"]["strategy"]["canary"]
    cluster.objs[("Service", "web")] = service()
    cluster.objs[("HTTPRoute", "web")] = httproute()
    plan = cluster.plan()
    applied = [
        a.manifest for a in plan.actions if isinstance(a, Apply) and a.manifest["kind"] == "Rollout"
    ]
    assert applied, kinds(plan)
    canary = applied[0]["spec"]["strategy"]["canary"]
    assert (canary["stableService"], canary["canaryService"]) == ("web", "web-canary")
    assert "trafficRouting" in canary
    assert canary["steps"] == rollout["spec"]["strategy"]["canary"]["steps"]


def test_a_blue_green_rollout_lets_go_of_its_services_before_it_goes() -> None:
    cluster = Cluster(
        opted_in(uid="u1", replicas=2, annotations={K.strategy: "bluegreen"}), service()
    )
    cluster.carry_out(cluster.plan())
    dep = cluster.get("Deployment", "web")
    assert dep is not None
    dep["metadata"]["labels"][K.enabled] = "false"
    cluster.carry_out(cluster.plan())
    dep = cluster.get("Deployment", "web")
    assert dep is not None
    dep["status"] = {"availableReplicas": 2}
    release = cluster.plan()
    assert kinds(release) == ["patch Rollout"]
    cluster.carry_out(release)
    rollout = cluster.get("Rollout", "web")
    assert rollout is not None
    assert rollout["spec"]["strategy"] == {"canary": {"steps": []}}
    assert "delete Rollout" in kinds(cluster.plan())


# --- what goes away after the conversion ---------------------------------------------------


def rollout_applies(plan: ReconcilePlan) -> list[dict[str, Any]]:
    return [
        a.manifest for a in plan.actions if isinstance(a, Apply) and a.manifest["kind"] == "Rollout"
    ]


def converted(*objs: dict[str, Any]) -> Cluster:
    """A cluster where ``web`` (opted in, running) is converted and the plan is done."""
    cluster = Cluster(running(opted_in(uid="u1")), *objs)
    cluster.carry_out(cluster.plan())
    assert cluster.plan().actions == ()
    return cluster


def test_a_deleted_stable_service_leaves_the_rollout_and_its_canary_goes() -> None:
    cluster = converted(service(), httproute())
    assert cluster.get("Service", "web-canary") is not None
    del cluster.objs[("Service", "web")]
    plan = cluster.plan()
    assert kinds(plan) == ["apply Rollout", "apply HTTPRoute", "delete Service"]
    canary = rollout_applies(plan)[0]["spec"]["strategy"]["canary"]
    for gone in ("stableService", "canaryService", "trafficRouting"):
        assert gone not in canary
    route = next(
        a.manifest
        for a in plan.actions
        if isinstance(a, Apply) and a.manifest["kind"] == "HTTPRoute"
    )
    assert [r["name"] for r in route["spec"]["rules"][0]["backendRefs"]] == ["web"]
    assert plan.actions[-1] == Delete(
        "Service", "prod", "web-canary", "a generated Service the conversion no longer uses"
    )
    cluster.carry_out(plan)
    rollout = cluster.get("Rollout", "web")
    assert rollout is not None
    assert "stableService" not in rollout["spec"]["strategy"]["canary"]
    assert cluster.plan().actions == ()


def _drop_route(cluster: Cluster) -> None:
    del cluster.objs[("HTTPRoute", "web")]


def _drop_stable_service(cluster: Cluster) -> None:
    del cluster.objs[("Service", "web")]


def _move_selector_away(cluster: Cluster) -> None:
    svc = cluster.get("Service", "web")
    assert svc is not None
    svc["spec"]["selector"] = {"app": "other"}


def _drop_a_selector_key(cluster: Cluster) -> None:
    svc = cluster.get("Service", "web")
    assert svc is not None
    svc["spec"]["selector"] = {"app": "web"}


@pytest.mark.parametrize(
    ("change", "gone"),
    [
        (_drop_route, {"trafficRouting"}),
        (_drop_stable_service, {"stableService", "canaryService", "trafficRouting"}),
        (_move_selector_away, {"stableService", "canaryService", "trafficRouting"}),
    ],
)
def test_a_field_the_plan_no_longer_sends_is_drift(change: Any, gone: set[str]) -> None:
    """``contains`` accepts extra keys: the applied hash is what makes a removal drift."""
    cluster = converted(service(), httproute())
    change(cluster)
    applies = rollout_applies(cluster.plan())
    assert applies, kinds(cluster.plan())
    assert not gone & set(applies[0]["spec"]["strategy"]["canary"])
    cluster.carry_out(cluster.plan())
    assert cluster.plan().actions == ()


def test_a_selector_key_dropped_from_the_stable_service_reaches_the_canary_clone() -> None:
    cluster = converted(service(selector={"app": "web", "tier": "front"}))
    dep = cluster.get("Deployment", "web")
    assert dep is not None
    dep["spec"]["template"]["metadata"]["labels"]["tier"] = "front"
    cluster.carry_out(cluster.plan())
    _drop_a_selector_key(cluster)
    plan = cluster.plan()
    clones = [a.manifest for a in plan.actions if isinstance(a, Apply)]
    assert [c["spec"]["selector"] for c in clones if c["kind"] == "Service"] == [{"app": "web"}]
    cluster.carry_out(plan)
    canary = cluster.get("Service", "web-canary")
    assert canary is not None
    assert canary["spec"]["selector"] == {"app": "web"}


def test_a_policy_key_removed_is_drift_under_immediate() -> None:
    text = (
        "defaultEnvironment: prod\nrolloutUpdates: immediate\nenvironments:\n"
        "  prod:\n    rollout: {canary: {steps: [{setWeight: 33}, {pause: {duration: 1m}}]}}\n"
    )
    before = parse_policy_text(text)
    cluster = Cluster(running(opted_in(uid="u1")), service())
    cluster.carry_out(cluster.plan(policy=before))
    assert cluster.plan(policy=before).actions == ()
    after = parse_policy_text(text.replace("{duration: 1m}", "{}"))
    applies = rollout_applies(cluster.plan(policy=after))
    assert applies
    assert applies[0]["spec"]["strategy"]["canary"]["steps"][1] == {"pause": {}}
    cluster.carry_out(cluster.plan(policy=after))
    rollout = cluster.get("Rollout", "web")
    assert rollout is not None
    assert rollout["spec"]["strategy"]["canary"]["steps"][1] == {"pause": {}}
    assert cluster.plan(policy=after).actions == ()


def test_replicas_alone_do_not_change_the_applied_hash() -> None:
    cluster = converted(service())
    rollout = cluster.get("Rollout", "web")
    assert rollout is not None
    rollout["spec"]["replicas"] = 7  # an HPA or a person scaled the Rollout
    dep = cluster.get("Deployment", "web")
    assert dep is not None
    dep["metadata"]["annotations"][K.original_replicas] = "7"
    assert cluster.plan().actions == ()


def test_a_generated_service_named_by_the_rollout_waits_until_the_rollout_lets_go() -> None:
    cluster = converted(service())
    rollout = cluster.get("Rollout", "web")
    assert rollout is not None
    canary = cluster.get("Service", "web-canary")
    assert canary is not None
    stale = copy.deepcopy(canary)
    stale["metadata"]["name"] = "old-canary"
    cluster.objs[("Service", "old-canary")] = stale
    # Still named by the cached Rollout, and by the planned one: kept.
    rollout["spec"]["strategy"]["canary"]["canaryService"] = "old-canary"
    other = copy.deepcopy(rollout)
    other["metadata"]["name"] = "api"
    cluster.objs[("Rollout", "api")] = other
    plan = cluster.plan()
    assert "delete Service" not in kinds(plan)  # api's Rollout names it
    del cluster.objs[("Rollout", "api")]
    assert kinds(cluster.plan())[-1] == "delete Service"


# --- a Deployment renamed: the new one takes the generated Service over --------------------


def test_a_renamed_deployment_takes_the_canary_service_over_once_the_old_rollout_goes() -> None:
    cluster = converted(service())
    cluster.objs[("Deployment", "web-v2")] = running(
        opted_in("web-v2", uid="u2", pod_labels={"app": "web"})
    )
    first = cluster.plan("web-v2")
    assert "apply Service" not in kinds(first)
    assert "event ServiceShared" in kinds(first)
    cluster.carry_out(first)
    assert cluster.plan("web-v2").writes == ()  # no tug of war while both Rollouts exist
    assert cluster.plan("web").writes == ()
    canary = cluster.get("Service", "web-canary")
    assert canary is not None
    assert canary["metadata"]["labels"][K.generated_for] == "web"

    del cluster.objs[("Deployment", "web")]
    orphaned = cluster.plan("web", now=NOW + timedelta(minutes=5))
    # The Rollout goes; the canary Service, named by web-v2's Rollout, stays.
    assert kinds(orphaned) == ["delete Rollout"]
    cluster.carry_out(orphaned)
    takeover = cluster.plan("web-v2")
    assert kinds(takeover) == ["apply Service"]
    cluster.carry_out(takeover)
    canary = cluster.get("Service", "web-canary")
    assert canary is not None
    assert canary["metadata"]["labels"][K.generated_for] == "web-v2"
    assert canary["metadata"]["ownerReferences"][0]["uid"] == "u2"
    assert cluster.plan("web", now=NOW + timedelta(minutes=5)).state == "absent"
    assert cluster.plan("web-v2").actions == ()


def policy_text(
    *, updates: str = "nextChange", enabled: bool = True, overrides: bool = True
) -> Any:
    return parse_policy_text(
        f"defaultEnvironment: prod\nrolloutUpdates: {updates}\nenvironments:\n"
        f"  prod:\n    allowServiceOverrides: {str(overrides).lower()}\n"
        f"    rollout: {{enabled: {str(enabled).lower()}, canary: {{steps: [{{setWeight: 20}}]}}}}\n"
    )


SWITCHED_OFF = "environment prod is switched off (rollout.enabled: false)"
OVERRIDE_OFF = f"annotation {K.rollout} sets enabled: false"


def converted_cluster(**kw: Any) -> Cluster:
    """A service converted under the built-in policy, as admission leaves it (the
    Deployment at 0 replicas: its pods come from the Rollout)."""
    cluster = Cluster(opted_in(uid="u1", **kw), service())
    cluster.carry_out(cluster.plan())
    dep = cluster.get("Deployment", "web")
    assert dep is not None and cluster.get("Rollout", "web") is not None
    dep["spec"]["replicas"] = 0
    return cluster


def switch_off_by_policy(cluster: Cluster, updates: str) -> Any:
    return policy_text(updates=updates, enabled=False)


def switch_off_by_override(cluster: Cluster, updates: str) -> Any:
    dep = cluster.get("Deployment", "web")
    assert dep is not None
    dep["metadata"].setdefault("annotations", {})[K.rollout] = "enabled: false"
    return policy_text(updates=updates)


@pytest.mark.parametrize("updates", ["immediate", "nextChange", "never"])
@pytest.mark.parametrize(
    ("switch", "reason"),
    [(switch_off_by_policy, SWITCHED_OFF), (switch_off_by_override, OVERRIDE_OFF)],
)
def test_a_switched_off_service_with_a_rollout_opts_out(
    switch: Any, reason: str, updates: str
) -> None:
    """The kill switch and the override opt out in every rolloutUpdates mode: step 1 of the
    sequence (the Deployment first), never a failed pass."""
    cluster = converted_cluster()
    policy = switch(cluster, updates)
    plan = cluster.plan(policy=policy)
    assert plan.state == "opting-out"
    assert plan.summary == reason
    assert kinds(plan) == ["event OptingOut", "patch Rollout", "patch Deployment"]
    assert plan.requeue_after


@pytest.mark.parametrize(
    ("switch", "reason"),
    [(switch_off_by_policy, SWITCHED_OFF), (switch_off_by_override, OVERRIDE_OFF)],
)
def test_a_switched_off_service_without_a_rollout_is_left_plain(switch: Any, reason: str) -> None:
    """Opted in, switched off, never converted: converged, nothing to do, no retry."""
    cluster = Cluster(opted_in(uid="u1"), service())
    policy = switch(cluster, "nextChange")
    plan = cluster.plan(policy=policy)
    assert (plan.state, plan.summary, plan.actions, plan.requeue_after) == (
        "plain",
        reason,
        (),
        None,
    )


def test_the_kill_switch_runs_the_whole_opt_out_and_back_on_converts_again() -> None:
    cluster = converted_cluster()
    off = policy_text(enabled=False)
    for _ in range(8):
        plan = cluster.plan(policy=off)
        cluster.carry_out(plan)
        dep = cluster.get("Deployment", "web")
        assert dep is not None
        dep["status"] = {"availableReplicas": dep["spec"]["replicas"]}
        if plan.state == "plain":
            break
    assert plan.state == "plain"
    assert cluster.get("Rollout", "web") is None
    dep = cluster.get("Deployment", "web")
    assert dep is not None and not set(dep["metadata"].get("annotations") or {}) & set(
        K.written_annotations()
    )
    on = cluster.plan(policy=policy_text())
    assert on.state == "converting"
    assert "apply Rollout" in kinds(on)


def test_an_override_is_ignored_where_the_environment_forbids_overrides() -> None:
    cluster = converted_cluster()
    dep = cluster.get("Deployment", "web")
    assert dep is not None
    dep["metadata"]["annotations"][K.rollout] = "enabled: false"
    plan = cluster.plan(policy=policy_text(overrides=False))
    assert plan.state in ("converted", "converting")
    assert "event OptingOut" not in kinds(plan)


def _phase(cluster: Cluster, phase: str | None) -> None:
    rollout = cluster.get("Rollout", "web")
    if rollout is not None and phase is not None:
        rollout["status"] = {"phase": phase}


@pytest.mark.parametrize("phase", [None, "Healthy", "Progressing", "Paused", "Degraded"])
@pytest.mark.parametrize("with_rollout", [True, False])
@pytest.mark.parametrize(
    "annotations",
    [
        {},
        {K.rollout: "enabled: false"},
        {K.strategy: "bluegreen"},
        {K.rollout: "canary: {steps: [{setWeight: 250}]}"},
        {K.rollout: "- not a mapping"},
    ],
)
@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("updates", ["immediate", "nextChange", "never"])
def test_the_planner_never_raises(
    phase: str | None,
    with_rollout: bool,
    annotations: dict[str, str],
    enabled: bool,
    updates: str,
) -> None:
    """Every decision of the conversion (convert, skip, refuse), with or without a Rollout,
    in any phase, under every mode: a plan, never an exception (a failed pass with an empty
    reason was what the operator saw)."""
    cluster = converted_cluster() if with_rollout else Cluster(opted_in(uid="u1"))
    dep = cluster.get("Deployment", "web")
    assert dep is not None
    dep["metadata"].setdefault("annotations", {}).update(annotations)
    _phase(cluster, phase)
    plan = cluster.plan(policy=policy_text(updates=updates, enabled=enabled))
    assert plan.state in ("converted", "converting", "opting-out", "plain", "refused")
    assert plan.summary


# --- the Rollout's size (it is the service's, once the Rollout exists) ----------------------


def scaled_service(*others: dict[str, Any]) -> Cluster:
    cluster = Cluster(opted_in(uid="u1", replicas=3), service(), *others)
    cluster.carry_out(cluster.plan())
    dep = cluster.get("Deployment", "web")
    assert dep is not None
    dep["spec"]["replicas"] = 0  # as Argo leaves it
    return cluster


def test_a_rollout_scaled_by_hand_keeps_its_size_and_the_deployment_mirrors_it() -> None:
    cluster = scaled_service()
    rollout = cluster.get("Rollout", "web")
    assert rollout is not None
    rollout["spec"]["replicas"] = 5  # kubectl scale rollout web --replicas=5
    plan = cluster.plan()
    # No apply of the Rollout (it would undo the 5): only the annotation follows it.
    assert kinds(plan) == ["patch Deployment"]
    assert plan.actions[0] == Patch(
        "Deployment",
        "prod",
        "web",
        {"metadata": {"annotations": {K.original_replicas: "5"}}},
        "record the conversion on the Deployment",
    )
    cluster.carry_out(plan)
    assert cluster.plan().actions == ()
    assert rollout["spec"]["replicas"] == 5


def test_an_hpa_deleted_leaves_the_rollout_at_the_size_it_had() -> None:
    cluster = scaled_service(hpa(lo=2, hi=10))
    cluster.carry_out(cluster.plan())
    rollout = cluster.get("Rollout", "web")
    assert rollout is not None
    rollout["spec"]["replicas"] = 7  # the HPA scaled it
    del cluster.objs[("HorizontalPodAutoscaler", "web")]
    cluster.carry_out(cluster.plan())
    assert rollout["spec"]["replicas"] == 7
    dep = cluster.get("Deployment", "web")
    assert dep is not None and dep["metadata"]["annotations"][K.original_replicas] == "7"


def canary_paused_at_revision(cluster: Cluster, revision: str) -> None:
    rollout = cluster.get("Rollout", "web")
    assert rollout is not None
    rollout["metadata"]["annotations"]["rollout.argoproj.io/revision"] = revision
    rollout["status"] = {"phase": "Paused", "availableReplicas": 3}


def test_a_scale_that_got_past_the_webhook_is_drained_after_the_first_revision() -> None:
    cluster = scaled_service()
    canary_paused_at_revision(cluster, "2")
    dep = cluster.get("Deployment", "web")
    assert dep is not None
    dep["spec"]["replicas"] = 6  # kubectl scale deployment while the webhook was down
    plan = cluster.plan()
    assert kinds(plan) == ["apply Rollout", "patch Deployment", "event ReplicasDrained"]
    cluster.carry_out(plan)
    dep = cluster.get("Deployment", "web")
    rollout = cluster.get("Rollout", "web")
    assert dep is not None and rollout is not None
    assert dep["spec"]["replicas"] == 0
    assert rollout["spec"]["replicas"] == 6
    assert rollout["spec"]["strategy"]["canary"]["steps"]  # the strategy is kept as it was


def test_no_drain_at_the_first_revision_while_argo_scales_the_deployment_down() -> None:
    cluster = scaled_service()
    canary_paused_at_revision(cluster, "1")
    dep = cluster.get("Deployment", "web")
    assert dep is not None
    dep["spec"]["replicas"] = 2  # Argo's own progressive scale-down, under way
    assert cluster.plan().actions == ()


def test_a_drain_leaves_the_size_of_a_rollout_an_hpa_scales_to_the_hpa() -> None:
    cluster = scaled_service(hpa(lo=2, hi=10))
    cluster.carry_out(cluster.plan())
    canary_paused_at_revision(cluster, "3")
    dep = cluster.get("Deployment", "web")
    assert dep is not None
    dep["spec"]["replicas"] = 6
    assert kinds(cluster.plan()) == ["patch Deployment", "event ReplicasDrained"]


def test_an_invalid_label_value_is_an_event_when_the_reconciler_converts() -> None:
    """A Namespace opts the service in; the Deployment's own label says "yes", which is
    no value: the reconciler converts it and tells its owner why the label was ignored."""
    labels = {K.enabled: "true"}
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "prod", "labels": labels},
    }
    dep = running(opted_in(uid="u1", labels={K.enabled: "yes"}))
    neighbours = Neighbours(namespace=namespace, services=(service(),))
    plan = plan_reconcile("prod", "web", dep, neighbours, POLICY, now=NOW)
    assert plan.state == "converting"
    [event] = [a for a in plan.actions if isinstance(a, Emit) and a.reason == "InvalidLabel"]
    assert event.type == "Warning"
    assert event.message.startswith(f"label {K.enabled}='yes' on the Deployment is neither")
