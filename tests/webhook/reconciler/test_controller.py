"""The reconciler loop against an in-memory API: events in, the cluster converges."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.builders import hpa, opted_in, service
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
