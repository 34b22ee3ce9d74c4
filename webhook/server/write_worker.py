"""The writes of admitted decisions, made after the answer on threads of their own.

Why writes run after the response: the API server waits on the webhook, and every other
client waits on the API server. The server-side applies do not change the answer, so they
never delay it. What is written is decided on the write thread from the stored objects,
never from the review's body (``webhook.core.stored_writes``): anything that reaches the
port can POST a review. A failed or lost write is caught up by the reconciler; the audit
record says which changes were wanted and which were made.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from webhook.core.audit import WRITES_KIND, ChangeOutcome, DecisionFacts
from webhook.core.cluster import ClusterWriter, Permission
from webhook.core.review import UserInfo
from webhook.core.stored_writes import StoredWrites, permissions_needed, without_kinds
from webhook.server.audit_trail import AuditSink
from webhook.server.logs import extra_for
from webhook.server.metrics import Metrics

log = logging.getLogger(__name__)


def change_outcome(manifest: Mapping[str, Any], result: str) -> ChangeOutcome:
    """One change of a decision as its audit record lists it, with what became of it."""
    meta = manifest.get("metadata") or {}
    return ChangeOutcome(
        kind=str(manifest.get("kind", "")),
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        result=result,
    )


@dataclass
class WriteJob:
    facts: DecisionFacts
    changes: tuple[dict[str, Any], ...]
    """The changes the admission planned from the review: what its record says was wanted.
    Never applied as they are (see ``restate``)."""
    started: float
    key: tuple[str, str, str]
    """(kind, namespace, name) of the admitted object: jobs for one object run in order."""
    restate: Callable[[bool], StoredWrites] | None = None
    """The writes decided from the stored objects (``webhook.core.stored_writes``), called
    on a write thread with whether the wait for them is over. None: ``changes`` as they are
    (only for callers that planned them from stored objects themselves)."""
    user: UserInfo = field(default_factory=lambda: UserInfo())
    """The requester, as the admission knew them: whose rights the writes are made with."""
    checked: tuple[Permission, ...] | None = None
    """The rights admission found the requester to have. A write needing another one is
    asked about first, and not made without it. None: no check (a Scale, checked whole)."""


class WriteWorker:
    """Applies the changes of admitted decisions, then audits what became of them.

    Everything runs on the worker's own threads; the event loop's part of a decision's
    writes is ``submit``, a few list operations under a lock. Jobs for different objects
    run side by side (``parallel`` threads); jobs for the same object run in the order
    they were admitted, so an older plan never overwrites a newer one. A job waits until
    the caches show the admitted object stored as admitted (a later admission step may
    still refuse it, the reason sideEffects is NoneOnDryRun and not None; and a review
    nobody stored, forged or replayed, must write nothing), then writes what the stored
    objects call for, bounded by the requester's rights. A waiting job holds no thread:
    it is put back with the time of its next look; past ``timeout`` it writes nothing and
    the reconciler takes over.

    At most ``max_pending`` jobs wait (a job holds its manifests and the decision's facts,
    10-20 KiB): 2,000 bound a stalled API server's backlog to some 40 MiB, and past them
    a job's writes are skipped and left to the reconciler, which plans from the cluster.
    """

    def __init__(
        self,
        writer: ClusterWriter,
        audit: AuditSink,
        metrics: Metrics,
        timeout: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        parallel: int = 4,
        max_pending: int = 2_000,
        poll_seconds: float = 0.1,
    ) -> None:
        self.writer = writer
        self.audit = audit
        self.metrics = metrics
        self.timeout = timeout
        self.monotonic = monotonic
        self.parallel = parallel
        self.max_pending = max_pending
        self.poll_seconds = poll_seconds
        self._lock = threading.Condition()
        self._ready: collections.deque[WriteJob] = collections.deque()
        """Jobs a thread may take now, in order."""
        self._waiting: list[tuple[float, int, WriteJob]] = []
        """A heap of jobs waiting for their object, by the time of their next look."""
        self._looks = itertools.count()
        self._later: dict[tuple[str, str, str], collections.deque[WriteJob]] = {}
        """Per object with a job in progress: its next jobs, in admission order."""
        self._pending = 0
        self._closed = False
        self._threads: list[threading.Thread] = []

    def qsize(self) -> int:
        with self._lock:
            return self._pending

    def start(self) -> None:
        for number in range(self.parallel):
            thread = threading.Thread(target=self._work, name=f"apply-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    async def run(self) -> None:
        """Start the threads (a background coroutine of the app, like the others)."""
        self.start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()

    def submit(self, job: WriteJob) -> None:
        """Queue a job; when the API server has been failing long enough for the queue to
        fill, the job's writes are skipped at once (the reconciler makes them later)."""
        with self._lock:
            full = self._pending >= self.max_pending
            if not full:
                self._pending += 1
                self.metrics.write_jobs_pending.set(self._pending)
                if job.key in self._later:
                    self._later[job.key].append(job)
                else:
                    self._later[job.key] = collections.deque()
                    self._ready.append(job)
                    self._lock.notify()
        if full:
            self.metrics.cluster_writes.labels("*", "skipped").inc()
            self._skip(job, f"{self.max_pending} writes already waiting; left to the reconciler")

    def _skip(self, job: WriteJob, why: str) -> None:
        """Audit the job's writes as skipped, and make none of them."""
        skipped = tuple(change_outcome(m, f"skipped: {why}") for m in job.changes)
        self.audit.record_nowait(replace(job.facts, changes_made=skipped), kind=WRITES_KIND)
        job.changes = ()

    def _take(self) -> WriteJob | None:
        """The next job whose time has come (None once closed), waiting as long as needed."""
        with self._lock:
            while not self._closed:
                now = self.monotonic()
                while self._waiting and self._waiting[0][0] <= now:
                    self._ready.append(heapq.heappop(self._waiting)[2])
                if self._ready:
                    return self._ready.popleft()
                soonest = self._waiting[0][0] if self._waiting else None
                self._lock.wait(None if soonest is None else max(0.001, soonest - now))
            return None

    def _done(self, job: WriteJob) -> None:
        with self._lock:
            self._pending -= 1
            self.metrics.write_jobs_pending.set(self._pending)
            following = self._later[job.key]
            if following:
                self._ready.append(following.popleft())
                self._lock.notify()
            else:
                del self._later[job.key]
            self._lock.notify_all()  # drain() may be waiting

    def _work(self) -> None:
        while (job := self._take()) is not None:
            try:
                expired = self.monotonic() - job.started >= self.timeout
                restated = (
                    StoredWrites("write", "", job.changes)
                    if job.restate is None
                    else job.restate(expired)
                )
                if restated.state == "wait":
                    with self._lock:  # not yet: look again later, holding no thread
                        look = self.monotonic() + self.poll_seconds
                        heapq.heappush(self._waiting, (look, next(self._looks), job))
                        self._lock.notify()
                    continue
                if restated.state == "none":
                    why = f"after {self.timeout:g}s: " if expired else ""
                    self._skip(job, f"{why}{restated.reason}; nothing written")
                else:
                    self._apply(job, restated.changes)
            except Exception:
                log.exception(
                    "write job for %s failed", "/".join(job.key), extra=extra_for(job.facts)
                )
            self._done(job)

    def _within_rights(
        self, job: WriteJob, changes: tuple[dict[str, Any], ...]
    ) -> tuple[tuple[dict[str, Any], ...], list[ChangeOutcome]]:
        """``changes`` the requester may have made, and the others, skipped.

        The stored objects may call for a write the admission did not plan (a Service that
        reached the caches after the Deployment's admission makes a canary Service): the
        requester's right to it is asked about now (their identity is only known from the
        admission); refused, that write is not made, and the rest is."""
        if job.checked is None:
            return changes, []
        refused: list[Permission] = []
        for permission in permissions_needed(changes):
            if permission in job.checked:
                continue
            answer = self.writer.may(job.user, job.key[1], permission, timeout=self.timeout)
            if not answer.allowed:
                refused.append(permission)
        kept = without_kinds(changes, refused)
        who = job.user.get("username") or "?"
        lacking = ", ".join(str(p) for p in refused)
        skipped = [
            change_outcome(m, f"skipped: {who} may not {lacking}") for m in changes if m not in kept
        ]
        return kept, skipped

    def _apply(self, job: WriteJob, planned: tuple[dict[str, Any], ...]) -> None:
        """Each change the requester may have made in turn (each bounded by the writer's
        own timeout), then the record of what became of them."""
        changes, skipped = self._within_rights(job, planned)
        made: list[ChangeOutcome] = list(skipped)
        for manifest in changes:
            kind = str(manifest.get("kind", ""))
            try:
                self.writer.apply(manifest, timeout=self.timeout)
            except Exception as err:
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                made.append(change_outcome(manifest, f"failed: {reason}"))
                self.metrics.cluster_writes.labels(kind, "failed").inc()
                log.warning("apply of %s failed: %s", kind, reason, extra=extra_for(job.facts))
            else:
                made.append(change_outcome(manifest, "applied"))
                self.metrics.cluster_writes.labels(kind, "applied").inc()
        self.audit.record_nowait(replace(job.facts, changes_made=tuple(made)), kind=WRITES_KIND)

    def wait_idle(self, timeout: float) -> bool:
        """Block until every submitted job is done (or the timeout passes)."""
        deadline = self.monotonic() + timeout
        with self._lock:
            while self._pending:
                left = deadline - self.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
            return True

    async def drain(self, timeout: float) -> None:
        idle = await asyncio.get_running_loop().run_in_executor(None, self.wait_idle, timeout)
        if not idle:
            log.warning("%d write job(s) not finished at shutdown", self.qsize())
