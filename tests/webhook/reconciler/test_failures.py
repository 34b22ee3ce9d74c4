"""A failing reconcile pass: said with its reason, retried with backoff, and a permanent
one held until the Deployment or the policy changes."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import pytest

from tests.builders import opted_in, service
from tests.webhook.reconciler.fake import FakeAPI
from webhook.core.audit import DecisionFacts
from webhook.core.keys import DEFAULT_KEYS as K
from webhook.core.policy import builtin_policy
from webhook.kube.http import KubeError
from webhook.reconciler.controller import Reconciler
from webhook.reconciler.queue import WorkQueue

KEY = ("prod", "web")


class FailingAPI(FakeAPI):
    """Applies of Rollouts fail with `error` while it is set."""

    error: BaseException | None = None
    rollout_applies = 0

    def apply(self, manifest: Mapping[str, Any], *, timeout: float) -> None:
        if manifest["kind"] == "Rollout":
            self.rollout_applies += 1
            if self.error is not None:
                raise self.error
        super().apply(manifest, timeout=timeout)


class Counted:
    def __init__(self) -> None:
        self.failures: list[tuple[str, str, str]] = []
        self.services: tuple[int, int] = (0, 0)

    def reconcile_failed(self, reason: str, step: str, kind: str) -> None:
        self.failures.append((reason, step, kind))

    def reconcile_services(self, failing: int, blocked: int) -> None:
        self.services = (failing, blocked)


def make(
    api: FailingAPI, base: float = 0.05, cap: float = 0.2
) -> tuple[Reconciler, list[DecisionFacts], Counted]:
    records: list[DecisionFacts] = []
    metrics = Counted()
    policy = builtin_policy()
    reconciler = Reconciler(
        api,
        lambda: policy,
        api,
        audit=records.append,
        queue=WorkQueue(base_delay=base, max_delay=cap),
        metrics=metrics,
    )
    api.watchers.append(reconciler.on_change)
    return reconciler, records, metrics


def state_of(api: FakeAPI) -> dict[str, Any] | None:
    dep = api.get("Deployment", *KEY)
    assert dep is not None
    text = (dep["metadata"].get("annotations") or {}).get(K.reconciler_state)
    return json.loads(text) if text else None


def test_a_failed_pass_says_its_step_type_and_message_everywhere(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = FailingAPI()
    api.put(service())
    api.put(opted_in(uid="u"))
    api.error = KubeError(403, 'rollouts.argoproj.io "web" is forbidden: denied by policy')
    reconciler, records, metrics = make(api)
    with caplog.at_level(logging.WARNING):
        reconciler.work(KEY)
    line = next(r.getMessage() for r in caplog.records if "failed at" in r.getMessage())
    assert line.startswith(
        "reconcile prod/web failed at apply Rollout prod/web: KubeError: 403: "
        'rollouts.argoproj.io "web" is forbidden: denied by policy; attempt 1, retry in 0.1s'
    )
    assert ("web", "ReconcileFailed", "Warning") in api.events
    assert metrics.failures == [("forbidden", "apply", "Rollout")]
    assert metrics.services == (1, 0)
    (record,) = [r for r in records if r.decision == "failing"]
    assert record.reason.startswith("apply Rollout prod/web: KubeError: 403")
    assert any(c.result.startswith("failed: KubeError: 403") for c in record.changes_made)
    state = state_of(api)
    assert state is not None
    assert (state["state"], state["reason"], state["step"]) == (
        "failing",
        "forbidden",
        "apply Rollout prod/web",
    )

    api.error = None  # the cause is gone: the next retry converges and says so
    time.sleep(0.12)
    reconciler.work(KEY)
    assert api.get("Rollout", *KEY) is not None
    assert state_of(api) is None
    assert ("web", "Reconciled", "Normal") in api.events
    assert metrics.services == (0, 0)


def test_watch_events_do_not_skip_the_backoff_of_a_failing_key() -> None:
    api = FailingAPI()
    api.put(service())
    api.put(opted_in(uid="u"))
    api.error = KubeError(500, "etcd is slow")
    reconciler, _, _ = make(api, base=0.2, cap=0.4)
    reconciler.start()
    try:
        deadline = time.monotonic() + 1.0
        n = 0
        while time.monotonic() < deadline:  # Argo updating status, say: not an input
            dep = api.get("Deployment", *KEY)
            assert dep is not None
            dep["status"] = {"observedGeneration": n}
            api.put(dep)
            n += 1
            time.sleep(0.01)
    finally:
        reconciler.stop()
    # 0.2 + 0.4 + 0.4 s of backoff in 1 s: at most 4 attempts, whatever the events did.
    assert n > 20
    assert 2 <= api.rollout_applies <= 4


def test_a_permanent_failure_waits_for_a_changed_input() -> None:
    api = FailingAPI()
    api.put(service())
    api.put(opted_in(uid="u"))
    api.error = KubeError(422, 'Rollout.argoproj.io "web" is invalid: spec.replicas: too many')
    reconciler, records, metrics = make(api)
    reconciler.work(KEY)
    assert api.rollout_applies == 1
    assert metrics.failures == [("invalid", "apply", "Rollout")]
    assert metrics.services == (0, 1)
    assert reconciler.queue.failures(KEY) == 0  # no retry is scheduled
    state = state_of(api)
    assert state is not None and state["state"] == "blocked"
    assert "policy environment prod" in state["fix"]
    assert ("web", "ConversionBlocked", "Warning") in api.events

    for _ in range(3):  # events with the same inputs: nothing is tried
        dep = api.get("Deployment", *KEY)
        assert dep is not None
        dep["status"] = {"observedGeneration": 1}
        api.put(dep)
        reconciler.work(KEY)
    assert api.rollout_applies == 1
    assert [r.decision for r in records].count("blocked") == 1

    dep = api.get("Deployment", *KEY)  # the owner changes the Deployment: tried again
    assert dep is not None
    dep["metadata"]["labels"]["team"] = "checkout"
    api.put(dep)
    reconciler.work(KEY)
    assert api.rollout_applies == 2


def test_a_planning_error_is_said_with_its_type_even_without_a_message(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = FailingAPI()
    api.put(opted_in(uid="u"))
    reconciler, records, metrics = make(api)

    def broken(key: object) -> None:
        raise AssertionError

    monkeypatch.setattr(reconciler, "plan", broken)
    with caplog.at_level(logging.WARNING):
        reconciler.work(KEY)
        reconciler.work(KEY)  # same inputs, retry not due: held back
    lines = [r.getMessage() for r in caplog.records if "failed at" in r.getMessage()]
    assert lines == [lines[0]]
    assert "failed at plan: AssertionError; attempt 1, retry in" in lines[0]
    assert any(r.exc_info for r in caplog.records)  # a bug: its traceback
    assert metrics.failures == [("internal", "plan", "Deployment")]
    assert records and records[0].reason == "plan: AssertionError"
