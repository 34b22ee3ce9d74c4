"""The write worker on its own threads: order per object, no thread held while waiting."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from webhook.core.audit import DecisionFacts
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
            self.applied.append(f"{name}:{manifest['spec']['replicas']}")


def job(name: str, replicas: int, *, await_stored: bool = False) -> WriteJob:
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
    rollout = {
        "kind": "Rollout",
        "metadata": {"namespace": "shop", "name": name},
        "spec": {"replicas": replicas},
    }
    key = ("Deployment", "shop", name)
    return WriteJob(facts, (rollout,), time.monotonic(), key, await_stored)


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
    running = worker(writer, records, parallel=1, reader=view, poll_seconds=0.02)
    try:
        running.submit(job("new", 1, await_stored=True))  # not stored yet
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
    running = worker(writer, records, reader=MemoryClusterView(), poll_seconds=0.02)
    try:
        running.submit(job("refused", 1, await_stored=True))
        assert running.wait_idle(5)
    finally:
        running.close()
    assert writer.applied == []
    (results,) = records.made
    assert results[0].startswith("skipped: Deployment shop/refused was not stored within 0.5s")


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
