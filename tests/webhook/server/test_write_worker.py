"""The write worker on its own threads: order per object, no thread held while waiting."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.builders import ALICE
from webhook.core.audit import DecisionFacts
from webhook.core.cluster import CREATE_ROLLOUTS, AccessDecision, Permission
from webhook.core.review import UserInfo
from webhook.core.stored_writes import StoredWrites
from webhook.kube.view import MemoryClusterView
from webhook.server.logs import RECORD_ATTRIBUTE, AdmissionFields
from webhook.server.metrics import Metrics
from webhook.server.write_worker import WriteJob, WriteWorker


@dataclass
class Records:
    kinds: list[str] = field(default_factory=list)
    made: list[tuple[str, ...]] = field(default_factory=list)

    def record_on_loop(self, facts: DecisionFacts, *, kind: str = "") -> Any:
        raise AssertionError("the worker never waits on the event loop")

    def record_nowait(self, facts: DecisionFacts, *, kind: str = "") -> None:
        self.kinds.append(kind)
        self.made.append(tuple(c.result for c in facts.changes_made))


@dataclass
class SlowWriter:
    """Applies take ``delay`` seconds for names in ``slow``; records the order."""

    slow: set[str] = field(default_factory=set)
    delay: float = 0.3
    applied: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def may(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("not asked here")

    def may_scale_rollout(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("not asked here")

    def apply(self, manifest: dict[str, Any], *, timeout: float) -> None:
        name = manifest["metadata"]["name"]
        if name in self.slow:
            time.sleep(self.delay)
        with self.lock:
            self.applied.append(f"{name}:{manifest.get('spec', {}).get('replicas')}")


def rollout(name: str, replicas: int) -> dict[str, Any]:
    return {
        "kind": "Rollout",
        "metadata": {"namespace": "shop", "name": name},
        "spec": {"replicas": replicas},
    }


def once_stored(view: MemoryClusterView, name: str, replicas: int) -> Any:
    """A ``restate`` that writes the Rollout once the Deployment is in ``view``."""

    def restate(expired: bool) -> StoredWrites:
        if view.get("Deployment", "shop", name) is None:
            return StoredWrites("none" if expired else "wait", f"Deployment shop/{name} is gone")
        return StoredWrites("write", "stored", (rollout(name, replicas),))

    return restate


def job(name: str, replicas: int, **options: Any) -> WriteJob:
    facts = DecisionFacts(
        uid=f"{name}-{replicas}",
        user="alice",
        operation="CREATE",
        kind="Deployment",
        namespace="shop",
        name=name,
        dry_run=False,
        decision="convert",
        reason="test",
    )
    key = ("Deployment", "shop", name)
    return WriteJob(facts, (rollout(name, replicas),), time.monotonic(), key, **options)


def worker(writer: SlowWriter, records: Records, **options: Any) -> WriteWorker:
    started = WriteWorker(writer, records, Metrics(), 0.5, **options)  # type: ignore[arg-type]
    started.start()
    return started


def test_jobs_for_one_object_keep_their_order_and_others_pass_them() -> None:
    writer, records = SlowWriter(slow={"web"}), Records()
    running = worker(writer, records, parallel=2)
    try:
        for replicas in (1, 2, 3):
            running.submit(job("web", replicas))
        running.submit(job("api", 1))
        pending = running.metrics.registry.get_sample_value("rollout_webhook_write_jobs_pending")
        assert pending is not None and pending >= 2  # web:2 and web:3 wait behind web:1
        assert running.wait_idle(5)
        assert running.metrics.registry.get_sample_value("rollout_webhook_write_jobs_pending") == 0
    finally:
        running.close()
    web = [a for a in writer.applied if a.startswith("web")]
    assert web == ["web:1", "web:2", "web:3"]
    assert writer.applied.index("api:1") < writer.applied.index("web:2")
    assert records.made == [("applied",)] * 4


def test_a_job_waiting_for_its_object_holds_no_thread() -> None:
    view = MemoryClusterView()
    writer, records = SlowWriter(), Records()
    running = worker(writer, records, parallel=1, poll_seconds=0.02)
    try:
        running.submit(job("new", 1, restate=once_stored(view, "new", 1)))  # not stored yet
        running.submit(job("api", 1))
        deadline = time.monotonic() + 2
        while "api:1" not in writer.applied:
            assert time.monotonic() < deadline, "the waiting job held the only thread"
            time.sleep(0.01)
        assert writer.applied == ["api:1"]
        view.put({"kind": "Deployment", "metadata": {"namespace": "shop", "name": "new"}})
        assert running.wait_idle(5)
    finally:
        running.close()
    assert writer.applied == ["api:1", "new:1"]


def test_a_job_whose_object_never_comes_is_skipped_after_the_timeout() -> None:
    writer, records = SlowWriter(), Records()
    running = worker(writer, records, poll_seconds=0.02)
    try:
        running.submit(job("refused", 1, restate=once_stored(MemoryClusterView(), "refused", 1)))
        assert running.wait_idle(5)
    finally:
        running.close()
    assert writer.applied == []
    (results,) = records.made
    assert results == ("skipped: after 0.5s: Deployment shop/refused is gone; nothing written",)


def test_what_is_written_is_what_the_stored_objects_call_for_not_the_review() -> None:
    writer, records = SlowWriter(), Records()
    running = worker(writer, records)
    stored = StoredWrites("write", "stored", (rollout("web", 5),))
    try:
        running.submit(job("web", 99, restate=lambda expired: stored))
        running.submit(job("api", 99, restate=lambda expired: StoredWrites("none", "forged")))
        assert running.wait_idle(5)
    finally:
        running.close()
    assert writer.applied == ["web:5"]
    assert sorted(records.made) == [("applied",), ("skipped: forged; nothing written",)]


@dataclass
class Asking(SlowWriter):
    """Answers SubjectAccessReviews: every right but ``refused``; records the questions."""

    refused: set[str] = field(default_factory=set)
    asked: list[tuple[str, str, str]] = field(default_factory=list)

    def may(
        self, user: UserInfo, namespace: str, permission: Permission, *, timeout: float
    ) -> AccessDecision:
        self.asked.append((str(user.get("username")), namespace, permission.resource))
        return AccessDecision(permission.resource not in self.refused, "RBAC")


def test_a_write_the_admission_did_not_check_needs_the_requesters_right_first() -> None:
    """The stored objects call for a canary Service the admission did not plan: it is made
    only if the requester may create Services, and the Rollout either way."""
    service = {"kind": "Service", "metadata": {"namespace": "shop", "name": "web-canary"}}
    stored = StoredWrites("write", "stored", (rollout("web", 3), service))
    for refused, made in (
        (set(), {"web:3", "web-canary:None"}),
        ({"services"}, {"web:3"}),
    ):
        writer, records = Asking(refused=refused), Records()
        running = worker(writer, records)
        try:
            running.submit(
                job("web", 3, restate=lambda e: stored, user=ALICE, checked=(CREATE_ROLLOUTS,))
            )
            assert running.wait_idle(5)
        finally:
            running.close()
        assert set(writer.applied) == made
        assert writer.asked == [("alice", "shop", "services")]
        if refused:
            (results,) = records.made
            assert "skipped: alice may not create services" in results


def test_a_failed_apply_is_logged_with_the_request_it_belongs_to(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Refusing(SlowWriter):
        def apply(self, manifest: dict[str, Any], *, timeout: float) -> None:
            raise RuntimeError("422: Rollout.argoproj.io is invalid")

    records = Records()
    started = worker(Refusing(), records)
    with caplog.at_level(logging.WARNING, logger="webhook.server.write_worker"):
        started.submit(job("web", 3))
        assert started.wait_idle(5)
    started.close()
    [line] = [r for r in caplog.records if "apply of Rollout failed" in r.getMessage()]
    fields = AdmissionFields()
    assert fields.filter(line)
    assert getattr(line, RECORD_ATTRIBUTE) == {
        "uid": "web-3",
        "kind": "Deployment",
        "namespace": "shop",
        "name": "web",
        "user": "alice",
    }
    assert records.made == [("failed: 422: Rollout.argoproj.io is invalid",)]
