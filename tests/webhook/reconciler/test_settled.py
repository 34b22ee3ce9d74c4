"""The reconciler on the caches' own view: events found through the index, and keys whose
last pass found nothing to do not planned again until something they read changes."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tests.builders import opted_in, service
from tests.webhook.reconciler.fake import FakeAPI
from webhook.core.policy import Policy, builtin_policy
from webhook.kube.view import MemoryClusterView
from webhook.reconciler.controller import Reconciler

Obj = dict[str, Any]
WEB = ("prod", "web")


class CountingView(MemoryClusterView):
    """The caches, counting the namespace listings of each kind."""

    def __init__(self) -> None:
        super().__init__()
        self.listed: list[tuple[str, str]] = []

    def list(self, kind: str, namespace: str) -> tuple[dict[str, Any], ...]:
        self.listed.append((kind, namespace))
        return super().list(kind, namespace)


class Cached:
    """A FakeAPI whose writes reach a ``MemoryClusterView`` and then the reconciler's
    listener, as the watches deliver them (the view first, then the listener)."""

    def __init__(self, *, replan_seconds: float = 3600.0) -> None:
        self.api = FakeAPI()
        self.view = CountingView()
        self.policy: Policy = builtin_policy()
        self.reconciler = Reconciler(
            self.view, lambda: self.policy, self.api, replan_seconds=replan_seconds
        )
        self.api.watchers.append(self._deliver)

    def _deliver(self, kind: str, obj: Obj, previous: Obj | None) -> None:
        meta = obj["metadata"]
        cached = self.view.get(kind, meta.get("namespace", ""), meta["name"])
        stored = self.api.get(kind, meta.get("namespace", ""), meta["name"])
        if stored is None:
            self.view.delete({**obj, "kind": kind})
        else:
            self.view.put({**stored, "kind": kind})
        self.reconciler.on_change(kind, obj, cached)

    def converge(self, key: tuple[str, str] = WEB) -> None:
        """Passes until one finds nothing to do."""
        for _ in range(5):
            plan = self.reconciler.reconcile(key)
            if plan is not None and not plan.actions:
                return
        raise AssertionError(f"{key} did not converge")


def converted_web() -> Cached:
    cached = Cached()
    cached.api.put(service("web"))
    cached.api.put(opted_in("web", uid="u-web"))
    cached.converge()
    assert cached.view.get("Rollout", *WEB) is not None
    return cached


def test_a_settled_key_is_not_planned_again() -> None:
    cached = converted_web()
    passes, calls = cached.reconciler.passes, list(cached.api.calls)
    assert cached.reconciler.reconcile(WEB) is None
    assert cached.reconciler.passes == passes
    assert cached.reconciler.unchanged == 1
    assert cached.api.calls == calls


def test_an_event_mapped_to_the_key_brings_a_new_plan() -> None:
    cached = converted_web()
    passes = cached.reconciler.passes
    # The stable Service changes: the Deployment whose pods it selects is concerned.
    changed = cached.api.get("Service", *WEB)
    assert changed is not None
    changed["metadata"]["labels"] = {"team": "shop"}
    cached.api.put(changed)
    assert cached.reconciler.reconcile(WEB) is not None
    assert cached.reconciler.passes == passes + 1


def test_an_event_during_the_pass_is_not_lost() -> None:
    cached = converted_web()
    original = cached.reconciler.plan

    def plan_then_event(key: tuple[str, str]) -> Any:
        planned = original(key)
        # Arrives after the plan read the caches, before the pass ends.
        cached.reconciler.on_change("Service", service("web"), None)
        return planned

    cached.reconciler._settled.clear()
    cached.reconciler.plan = plan_then_event  # type: ignore[method-assign]
    assert cached.reconciler.reconcile(WEB) is not None
    cached.reconciler.plan = original  # type: ignore[method-assign]
    assert cached.reconciler.reconcile(WEB) is not None  # planned again, not skipped


def test_another_deployment_object_or_policy_brings_a_new_plan() -> None:
    cached = converted_web()
    deployment = cached.view.get("Deployment", *WEB)
    assert deployment is not None
    cached.view.put(dict(deployment))  # the same content, stored anew (a re-list)
    assert cached.reconciler.reconcile(WEB) is not None
    assert cached.reconciler.reconcile(WEB) is None
    cached.policy = replace(builtin_policy())  # a new policy object: another version
    assert cached.reconciler.reconcile(WEB) is not None


def test_a_settled_key_is_planned_anew_after_replan_seconds() -> None:
    cached = Cached(replan_seconds=0.0)
    cached.api.put(service("web"))
    cached.api.put(opted_in("web", uid="u-web"))
    cached.converge()
    assert cached.reconciler.reconcile(WEB) is not None
    assert cached.reconciler.unchanged == 0


def test_a_key_with_writes_to_make_is_not_settled() -> None:
    cached = Cached()
    cached.api.put(service("web"))
    cached.api.put(opted_in("web", uid="u-web"))
    cached.api.fail_next["apply"] = 1
    cached.reconciler.work(WEB)  # fails: recorded, retried later
    assert cached.reconciler.failures.get(WEB) is not None
    assert WEB not in cached.reconciler._settled


def test_a_service_event_finds_its_deployments_without_listing_the_namespace() -> None:
    cached = Cached()
    for i in range(5):
        cached.view.put(opted_in(f"app{i}", pod_labels={"app": f"app{i}"}))
    cached.view.listed.clear()
    keys = cached.reconciler.keys_for_change("Service", service("s3", selector={"app": "app3"}))
    assert keys == {("prod", "app3")}
    assert ("Deployment", "prod") not in cached.view.listed
    assert ("Rollout", "prod") not in cached.view.listed


@pytest.mark.parametrize("selector", [{"app": "app1", "tier": "web"}, {"tier": "web"}])
def test_a_service_concerns_only_the_deployments_it_selects(selector: dict[str, str]) -> None:
    cached = Cached()
    cached.view.put(opted_in("a", pod_labels={"app": "app1", "tier": "web"}))
    cached.view.put(opted_in("b", pod_labels={"app": "app1"}))
    cached.view.put(opted_in("c", pod_labels={"app": "app2", "tier": "web"}))
    keys = cached.reconciler.keys_for("Service", service("s", selector=selector))
    expected = {"a"} if "app" in selector else {"a", "c"}
    assert keys == {("prod", n) for n in expected}


def test_a_service_created_concerns_the_rollouts_that_name_it() -> None:
    cached = converted_web()
    rollout = cached.view.get("Rollout", *WEB)
    assert rollout is not None
    canary = rollout["spec"]["strategy"]["canary"]["canaryService"]
    cached.view.listed.clear()
    gone = service(canary, selector={"app": "elsewhere"})
    assert WEB in cached.reconciler.keys_for_change("Service", gone, None)
    assert ("Rollout", "prod") not in cached.view.listed
