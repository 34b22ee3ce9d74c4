"""The reconciler loop against an in-memory API: events in, the cluster converges."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from tests.builders import hpa, httproute, opted_in, service
from tests.webhook.reconciler.fake import FakeAPI
from webhook.core.audit import DecisionFacts
from webhook.core.keys import DEFAULT_KEYS as K
from webhook.core.policy import Policy, builtin_policy, parse_policy_text
from webhook.reconciler.controller import Reconciler
from webhook.reconciler.queue import WorkQueue


def until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def make(api: FakeAPI, **kw: object) -> tuple[Reconciler, list[DecisionFacts]]:
    records: list[DecisionFacts] = []
    policy = builtin_policy()
    reconciler = Reconciler(
        api,
        lambda: policy,
        api,
        audit=records.append,
        queue=WorkQueue(base_delay=0.01, max_delay=0.05),
        **kw,  # type: ignore[arg-type]
    )
    api.watchers.append(reconciler.on_change)
    return reconciler, records


def test_labelled_deployments_are_converted_by_the_loop() -> None:
    api = FakeAPI()
    for i in range(20):
        api.put(service(f"svc{i}", selector={"app": f"app{i}"}))
    reconciler, records = make(api)
    reconciler.start()
    try:
        for i in range(20):
            api.put(opted_in(f"app{i}", uid=f"uid-{i}", pod_labels={"app": f"app{i}"}))
        assert until(lambda: len(api.list("Rollout", "prod")) == 20)
        assert until(
            lambda: all(
                K.rollout_name in (d["metadata"].get("annotations") or {})
                for d in api.list("Deployment", "prod")
            )
        )
    finally:
        reconciler.stop()
    assert {r.operation for r in records} == {"RECONCILE"}
    assert ("app0", "Converted", "Normal") in api.events


def test_events_on_other_kinds_reach_their_deployment() -> None:
    api = FakeAPI()
    api.put(opted_in(uid="u"))
    api.put(service())
    reconciler, _ = make(api)
    reconciler.reconcile(("prod", "web"))
    assert reconciler.keys_for("HorizontalPodAutoscaler", hpa()) == {("prod", "web")}
    assert reconciler.keys_for("Service", service()) == {("prod", "web")}
    canary = api.get("Service", "prod", "web-canary")
    assert canary is not None
    assert reconciler.keys_for("Service", canary) == {("prod", "web")}
    assert reconciler.keys_for("Namespace", {"metadata": {"name": "prod"}}) == {("prod", "web")}


def test_a_failed_write_is_retried_with_backoff() -> None:
    api = FakeAPI()
    api.put(service())
    api.fail_next["apply"] = 2
    reconciler, records = make(api)
    reconciler.start()
    try:
        api.put(opted_in(uid="u"))
        assert until(lambda: api.get("Rollout", "prod", "web") is not None)
    finally:
        reconciler.stop()
    assert reconciler.errors == 2
    failed = [c for r in records for c in r.changes_made if c.result.startswith("failed")]
    assert failed and "refused by the fake API" in failed[0].result


def test_a_pass_held_back_before_its_retry_is_due_asks_for_the_key_again_then() -> None:
    """The queue's retry can come due a moment before the failure's own retry time (two reads
    of the clock, a thread set aside between them); the pass it starts is held back, and must
    not lose the retry."""
    api = FakeAPI()
    api.put(service())
    api.put(opted_in(uid="u"))
    api.fail_next["apply"] = 1
    reconciler, _ = make(api)
    key = ("prod", "web")
    reconciler.work(key)
    assert reconciler.errors == 1
    failing = reconciler.failures.get(key)
    assert failing is not None and failing.retry_at is not None
    # The failure's retry time, later than the queue's: the queue's retry (and the Event's
    # watch event) start passes that are held back.
    object.__setattr__(failing, "retry_at", failing.retry_at + 0.3)
    deadline = time.monotonic() + 3
    while api.get("Rollout", "prod", "web") is None and time.monotonic() < deadline:
        queued = reconciler.queue.get(timeout=0.5)
        if queued is not None:
            reconciler.work(queued)
            reconciler.queue.done(queued)
    assert api.get("Rollout", "prod", "web") is not None, "the retry was lost"
    assert reconciler.errors == 1


def test_nothing_happens_before_caches_sync_or_without_the_lease() -> None:
    api = FakeAPI()
    api.put(opted_in(uid="u"))
    synced = False
    reconciler, _ = make(api, synced=lambda: synced)
    assert reconciler.reconcile(("prod", "web")) is None
    synced = True
    follower, _ = make(api, is_leader=lambda: False)
    follower.start()
    try:
        follower.queue.add(("prod", "web"))
        time.sleep(0.3)
    finally:
        follower.stop()
    assert api.calls == []


def test_opt_out_runs_to_the_end_with_pods_becoming_available() -> None:
    api = FakeAPI()
    api.put(service())
    api.put(hpa(lo=2, hi=5))
    api.put(opted_in(uid="u", replicas=3))
    reconciler, _ = make(api)
    reconciler.reconcile(("prod", "web"))
    assert api.get("Rollout", "prod", "web") is not None
    dep = api.get("Deployment", "prod", "web")
    assert dep is not None
    dep["metadata"]["labels"][K.enabled] = "false"
    api.put(dep)
    reconciler.start()
    try:
        assert until(lambda: (api.get("Deployment", "prod", "web") or {})["spec"]["replicas"] == 3)
        assert api.get("Rollout", "prod", "web") is not None  # pods not available yet
        ready = api.get("Deployment", "prod", "web")
        assert ready is not None
        ready["status"] = {"availableReplicas": 3}
        api.put(ready)
        assert until(lambda: api.get("Rollout", "prod", "web") is None)
        assert until(
            lambda: (
                K.rollout_name
                not in (
                    (api.get("Deployment", "prod", "web") or {})["metadata"].get("annotations")
                    or {}
                )
            )
        )
    finally:
        reconciler.stop()
    target = (api.get("HorizontalPodAutoscaler", "prod", "web") or {})["spec"]["scaleTargetRef"]
    assert target["kind"] == "Deployment"
    order = [c for c in api.calls if c.startswith(("patch Deployment", "delete Rollout"))]
    assert order.index("patch Deployment web") < order.index("delete Rollout web")


class LaggingAPI(FakeAPI):
    """Writes are recorded but the view does not show them yet (a cache behind the API)."""

    def put(self, obj: dict[str, object]) -> None:
        if getattr(self, "frozen", False):
            return
        super().put(obj)


def test_a_write_is_not_repeated_while_the_cache_catches_up() -> None:
    api = LaggingAPI()
    api.put(service())
    api.put(opted_in(uid="u"))
    api.frozen = True  # type: ignore[attr-defined]
    policy = builtin_policy()
    reconciler = Reconciler(api, lambda: policy, api, expectation_seconds=0.3)
    reconciler.reconcile(("prod", "web"))
    first = list(api.calls)
    assert "apply Rollout web" in first
    reconciler.reconcile(("prod", "web"))  # the cache still shows nothing written
    assert api.calls == first
    assert len(reconciler.queue) == 1  # looked at again once the window has passed
    time.sleep(0.35)
    reconciler.reconcile(("prod", "web"))  # a write that did not stick is made again
    assert api.calls.count("apply Rollout web") == 2


def test_excluded_namespaces_are_never_touched() -> None:
    api = FakeAPI()
    api.put(opted_in(uid="u", ns="kube-system"))
    policy = builtin_policy()
    reconciler = Reconciler(
        api, lambda: policy, api, excluded_namespaces=frozenset({"kube-system"})
    )
    reconciler.on_change("Deployment", opted_in(ns="kube-system"))
    reconciler.enqueue_all()
    assert len(reconciler.queue) == 0
    assert reconciler.reconcile(("kube-system", "web")) is None
    assert api.calls == []


# --- a change reaches the Deployments it moved away from ------------------------------------


def converted_pair(*, routed: bool = False) -> tuple[FakeAPI, Reconciler]:
    """``web`` and ``api`` converted, each with its Service (and with ``routed`` an HTTPRoute
    to it, so that the Rollout names the Service as its stable one); not started."""
    api = FakeAPI()
    for name in ("web", "api"):
        api.put(service(name))
        if routed:
            api.put(httproute(name, rules=[{"backendRefs": [{"name": name, "port": 80}]}]))
        api.put(opted_in(name, uid=f"u-{name}"))
    reconciler, _ = make(api)
    for name in ("web", "api"):
        reconciler.reconcile(("prod", name))
    return api, reconciler


def _moved(obj: dict[str, Any], path: tuple[str, ...], value: object) -> dict[str, Any]:
    moved = copy.deepcopy(obj)
    target = moved
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return moved


@pytest.mark.parametrize(
    ("kind", "before", "path", "value", "queued"),
    [
        # A Service's selector moves from web's pods to api's: both, and web through its Rollout.
        ("Service", service("web"), ("spec", "selector"), {"app": "api"}, {"web", "api"}),
        # An HPA moves from Deployment web to Deployment api.
        (
            "HorizontalPodAutoscaler",
            hpa("web"),
            ("spec", "scaleTargetRef", "name"),
            "api",
            {"web", "api"},
        ),
        # A Service that selects nothing any more, named by web's Rollout.
        ("Service", service("web"), ("spec", "selector"), {"app": "gone"}, {"web"}),
    ],
)
def test_a_change_queues_the_deployment_it_moved_away_from(
    kind: str, before: dict[str, Any], path: tuple[str, ...], value: object, queued: set[str]
) -> None:
    _, reconciler = converted_pair()
    after = _moved(before, path, value)
    assert {n for _, n in reconciler.keys_for_change(kind, after, before)} == queued
    # Without the previous object only the new state's Deployments (and Rollouts) count.
    assert reconciler.keys_for(kind, after) <= reconciler.keys_for_change(kind, after, before)


def test_a_deleted_service_queues_the_deployment_whose_rollout_names_it() -> None:
    api, reconciler = converted_pair(routed=True)
    rollout = api.get("Rollout", "prod", "web")
    assert rollout is not None and rollout["spec"]["strategy"]["canary"]["stableService"] == "web"
    moved = _moved(service("web"), ("spec", "selector"), {"app": "nobody"})
    api.put(moved)
    # Still there, with an unchanged selector (Argo pinning it, say): its own Deployments only.
    assert reconciler.keys_for_change("Service", moved, moved) == set()
    api.remove("Service", "prod", "web")
    # Deleted, with a last state that selects nothing: only the Rollout still ties it to web.
    assert reconciler.keys_for("Service", moved) == set()
    assert reconciler.keys_for_change("Service", moved, moved) == {("prod", "web")}


def test_a_rollout_that_goes_queues_the_deployments_sharing_its_services() -> None:
    api, reconciler = converted_pair()
    api.put(opted_in("web-v2", uid="u-v2", pod_labels={"app": "web"}))
    reconciler.reconcile(("prod", "web-v2"))
    rollout = api.get("Rollout", "prod", "web")
    assert rollout is not None
    with api.lock:
        del api.objects[("Rollout", "prod", "web")]
    assert reconciler.keys_for_change("Rollout", rollout, rollout) == {
        ("prod", "web"),
        ("prod", "web-v2"),
    }
    # A status update that names the same Services queues only its own Deployment.
    api.put(rollout)
    assert reconciler.keys_for_change("Rollout", rollout, rollout) == {("prod", "web")}


def test_a_deleted_service_converges_through_the_loop() -> None:
    api = FakeAPI()
    api.put(service())
    api.put(httproute())
    api.put(opted_in(uid="u"))
    reconciler, _ = make(api)
    reconciler.reconcile(("prod", "web"))
    assert api.get("Service", "prod", "web-canary") is not None
    reconciler.start()
    try:
        api.remove("Service", "prod", "web")

        def released() -> bool:
            canary = (api.get("Rollout", "prod", "web") or {})["spec"]["strategy"]["canary"]
            return not {"stableService", "canaryService", "trafficRouting"} & set(canary)

        assert until(released)
        assert until(lambda: api.get("Service", "prod", "web-canary") is None)
        route = api.get("HTTPRoute", "prod", "web")
        assert route is not None
        assert [r["name"] for r in route["spec"]["rules"][0]["backendRefs"]] == ["web"]
        # Recreated: named again, its canary back.
        api.put(service())
        assert until(lambda: api.get("Service", "prod", "web-canary") is not None)
        assert until(lambda: not released())
    finally:
        reconciler.stop()


def test_a_renamed_deployment_ends_with_everything_generated_for_the_new_name() -> None:
    api = FakeAPI()
    api.put(service())
    api.put(opted_in(uid="u1"))
    reconciler, _ = make(api, orphan_grace=timedelta(0))
    reconciler.reconcile(("prod", "web"))
    reconciler.start()
    try:
        api.put(opted_in("web-v2", uid="u2", pod_labels={"app": "web"}))
        assert until(lambda: api.get("Rollout", "prod", "web-v2") is not None)
        api.remove("Deployment", "prod", "web")

        def generated_for(name: str) -> list[str]:
            return [
                o["metadata"]["name"]
                for kind in ("Rollout", "Service")
                for o in api.list(kind, "prod")
                if (o["metadata"].get("labels") or {}).get(K.generated_for) == name
            ]

        assert until(lambda: generated_for("web") == [])
        assert until(lambda: generated_for("web-v2") == ["web-v2", "web-canary"])
    finally:
        reconciler.stop()


def switched_off_policy() -> Policy:
    return parse_policy_text(
        "defaultEnvironment: prod\nenvironments:\n  prod:\n    rollout: {enabled: false}\n"
    )


def test_a_policy_change_queues_every_service_on_the_leader_only() -> None:
    api = FakeAPI()
    for name in ("a", "b"):
        api.put(opted_in(name, uid=name))
    leading = False
    reconciler, _ = make(api, is_leader=lambda: leading)
    reconciler.policy_changed(switched_off_policy())
    assert len(reconciler.queue) == 0  # a follower: the new leader's resync covers it
    leading = True
    reconciler.policy_changed(switched_off_policy())
    assert len(reconciler.queue) == 2


def test_the_kill_switch_opts_services_out_and_a_new_one_stays_plain_without_failures() -> None:
    api = FakeAPI()
    api.put(service())
    api.put(opted_in(uid="u", replicas=3))
    policy: list[Policy] = [builtin_policy()]
    reconciler = Reconciler(
        api, lambda: policy[0], api, queue=WorkQueue(base_delay=0.01, max_delay=0.05)
    )
    api.watchers.append(reconciler.on_change)
    reconciler.reconcile(("prod", "web"))
    assert api.get("Rollout", "prod", "web") is not None
    reconciler.start()
    try:
        policy[0] = switched_off_policy()
        reconciler.policy_changed(policy[0])  # what the policy ConfigMap's watch calls
        assert until(lambda: (api.get("Rollout", "prod", "web") or {}).get("spec", {}).get(
            "workloadRef", {}).get("scaleDown") == "never")  # fmt: skip
        api.put(opted_in("late", uid="late", replicas=2))
        time.sleep(0.3)
    finally:
        reconciler.stop()
    assert api.get("Rollout", "prod", "late") is None
    assert "late" not in " ".join(api.calls)
    assert reconciler.errors == 0


def test_a_resize_stored_on_the_deployment_is_not_mirrored_away_before_it_is_applied() -> None:
    """An admitted resize is stored as ``original-replicas`` on the Deployment, and the
    admission's write thread applies it to the Rollout from there: the reconciler must not
    mirror the Rollout's older size back over it meanwhile. A size that stays unmatched
    (``kubectl scale rollout``) is mirrored once the window has passed."""
    api = FakeAPI()
    api.put(service())
    api.put(opted_in(uid="u"))
    policy = builtin_policy()
    reconciler = Reconciler(api, lambda: policy, api, expectation_seconds=0.3)
    reconciler.reconcile(("prod", "web"))
    stored = api.get("Deployment", "prod", "web")
    assert stored is not None and stored["metadata"]["annotations"][K.original_replicas] == "3"
    resized = copy.deepcopy(stored)
    resized["metadata"]["annotations"][K.original_replicas] = "5"
    resized["metadata"]["resourceVersion"] = "resized"
    api.put(resized)

    def recorded() -> str:
        deployment = api.get("Deployment", "prod", "web")
        assert deployment is not None
        return str(deployment["metadata"]["annotations"][K.original_replicas])

    reconciler.reconcile(("prod", "web"))
    assert recorded() == "5"  # held back: the Rollout is still at 3
    assert len(reconciler.queue) == 1  # looked at again after the window
    time.sleep(0.35)
    reconciler.reconcile(("prod", "web"))
    assert recorded() == "3"  # nobody applied 5: the Rollout's size is the service's
