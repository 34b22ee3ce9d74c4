"""The admission engine: the pure decision, plus the few things only the shell can do.

For each request: pass-through checks, the pure plan (``webhook.core``), then, when the
plan wants cluster changes, the confused-deputy check (a SubjectAccessReview for the
requesting user, off the event loop, short timeout, cached briefly), the response, and
the writes, handed to a background worker *after* the response is computed.

Why writes run after the response: the API server waits on the webhook, and every other
client waits on the API server. The SubjectAccessReview must come first (its answer
decides whether the Deployment is converted at all), so it runs before the response with
a bounded budget; the server-side applies do not change the answer, so they never delay
it. A failed or lost write is caught up by the reconciler; the audit record says which
changes were wanted and which were made.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Protocol

from webhook.core.admission import mark_refused
from webhook.core.audit import WRITES_KIND, ChangeOutcome, DecisionFacts
from webhook.core.errors import PolicyInvalid
from webhook.core.keys import Keys
from webhook.core.policy import Policy, policy_from_configmap
from webhook.core.review import (
    AdmissionPlan,
    AdmissionRequest,
    AdmissionResponse,
    ClusterReader,
    UserInfo,
    allowed,
    clip_warning,
    denied,
    patch_for,
    request_kind,
    request_name,
    request_username,
)
from webhook.server.metrics import Metrics
from webhook.server.ports import AccessDecision, ClusterWriter
from webhook.server.settings import ServeSettings

log = logging.getLogger(__name__)

PRODUCT = "rollout-webhook"


class Decide(Protocol):
    """The pure decision on a CREATE/UPDATE of a kind the webhook mutates."""

    def __call__(
        self, request: AdmissionRequest, reader: ClusterReader, policy: Policy, *, keys: Keys
    ) -> AdmissionPlan: ...


class AuditSink(Protocol):
    def record_on_loop(self, facts: DecisionFacts, *, kind: str = ...) -> asyncio.Future[None]:
        """Queue a record (on the event loop); the future completes once it is written."""
        ...

    def record_nowait(self, facts: DecisionFacts, *, kind: str = ...) -> None:
        """Queue a record (from any thread) and wait for nothing."""
        ...


def change_outcome(manifest: Mapping[str, Any], result: str) -> ChangeOutcome:
    meta = manifest.get("metadata") or {}
    return ChangeOutcome(
        kind=str(manifest.get("kind", "")),
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        result=result,
    )


def _identity(user: UserInfo, namespace: str) -> tuple[object, ...]:
    extra = user.get("extra", {})
    return (
        user.get("username", ""),
        user.get("uid", ""),
        tuple(sorted(user.get("groups", []))),
        tuple(sorted((k, tuple(v)) for k, v in extra.items())),
        namespace,
    )


class AccessReviews:
    """SubjectAccessReviews off the event loop, with a short-lived cache.

    The cache follows the API server's own webhook authorizer: allowed answers are kept
    longer than denied ones, so a freshly granted RoleBinding takes effect quickly. A
    review that fails or times out counts as "not allowed": the webhook never writes on
    behalf of a user it could not check.
    """

    def __init__(
        self,
        writer: ClusterWriter,
        *,
        timeout: float,
        metrics: Metrics,
        allowed_ttl: float = 30.0,
        denied_ttl: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._writer = writer
        self._timeout = timeout
        self._metrics = metrics
        self._ttl = {True: allowed_ttl, False: denied_ttl}
        self._monotonic = monotonic
        self._cache: dict[tuple[object, ...], tuple[float, AccessDecision]] = {}
        # Threads of their own: slow writes must not hold up permission checks, which
        # sit on the request path.
        self._threads = ThreadPoolExecutor(max_workers=8, thread_name_prefix="access-review")

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def check(self, user: UserInfo, namespace: str, *, budget: float) -> AccessDecision:
        key = _identity(user, namespace)
        now = self._monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            self._metrics.access_reviews.labels("cached").inc()
            return cached[1]
        timeout = max(0.05, min(self._timeout, budget))
        try:
            call = functools.partial(
                self._writer.may_create_rollouts, user, namespace, timeout=timeout
            )
            decision = await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(self._threads, call),
                timeout=timeout,
            )
        except TimeoutError:
            self._metrics.access_reviews.labels("error").inc()
            return AccessDecision(False, f"the permission check timed out after {timeout:g}s")
        except Exception as err:
            self._metrics.access_reviews.labels("error").inc()
            log.warning("SubjectAccessReview failed: %s", err)
            return AccessDecision(False, f"the permission check failed ({type(err).__name__})")
        self._metrics.access_reviews.labels("allowed" if decision.allowed else "denied").inc()
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (now + self._ttl[decision.allowed], decision)
        return decision


@dataclass
class WriteJob:
    facts: DecisionFacts
    changes: tuple[dict[str, Any], ...]
    started: float
    key: tuple[str, str, str]
    """(kind, namespace, name) of the admitted object: jobs for one object run in order."""
    await_stored: bool = False
    """On CREATE: apply only once the admitted object is stored (seen by the watch)."""
    replan: Callable[[], tuple[dict[str, Any], ...] | None] | None = None
    """The same decision on the caches as they are when the writes are made (None: keep
    ``changes``). Used after waiting for the object: objects created with it, such as its
    Service, may have reached the caches meanwhile, and a Rollout planned without them would
    overwrite the reconciler's, planned with them."""
    waited: bool = False


class WriteWorker:
    """Applies the changes of admitted decisions, then audits what became of them.

    Everything runs on the worker's own threads; the event loop's part of a decision's
    writes is ``submit``, a few list operations under a lock. Jobs for different objects
    run side by side (``parallel`` threads); jobs for the same object run in the order
    they were admitted, so an older plan never overwrites a newer one. On CREATE a job
    waits until the admitted object shows up in the cache: a later admission step may
    still refuse it (the reason sideEffects is NoneOnDryRun and not None), and a Rollout
    for a Deployment that never existed would be an orphan. A waiting job holds no
    thread: it is put back with the time of its next look.

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
        reader: ClusterReader | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        parallel: int = 4,
        max_pending: int = 2_000,
        poll_seconds: float = 0.1,
    ) -> None:
        self.writer = writer
        self.audit = audit
        self.metrics = metrics
        self.timeout = timeout
        self.reader = reader
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
                if not self._stored(job):
                    job.waited = True
                    with self._lock:  # not yet: look again later, holding no thread
                        look = self.monotonic() + self.poll_seconds
                        heapq.heappush(self._waiting, (look, next(self._looks), job))
                        self._lock.notify()
                    continue
                self._apply(job)
            except Exception:
                log.exception("write job for %s failed", "/".join(job.key))
            self._done(job)

    def _stored(self, job: WriteJob) -> bool:
        """True to go ahead; False to look again later. Past the timeout the job's writes
        are skipped and audited, and it counts as done."""
        if not job.await_stored or self.reader is None or self.reader.get(*job.key) is not None:
            return True
        if self.monotonic() - job.started < self.timeout:
            return False
        kind, namespace, name = job.key
        self._skip(
            job,
            f"{kind} {namespace}/{name} was not stored within {self.timeout:g}s "
            "(refused by a later admission step?)",
        )
        return True

    def _apply(self, job: WriteJob) -> None:
        """Each change in turn (each bounded by the writer's own timeout), then the record
        of what became of them."""
        if not job.changes:
            return
        changes = job.changes
        if job.waited and job.replan is not None:
            try:
                changes = job.replan() or changes
            except Exception:
                log.exception("re-planning the writes for %s failed", "/".join(job.key))
        made: list[ChangeOutcome] = []
        for manifest in changes:
            kind = str(manifest.get("kind", ""))
            try:
                self.writer.apply(manifest, timeout=self.timeout)
            except Exception as err:
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                made.append(change_outcome(manifest, f"failed: {reason}"))
                self.metrics.cluster_writes.labels(kind, "failed").inc()
                log.warning("apply of %s failed: %s", kind, reason)
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


class AdmissionEngine:
    def __init__(
        self,
        *,
        settings: ServeSettings,
        reader: ClusterReader,
        policy: Callable[[], Policy | None],
        decide: Decide,
        audit: AuditSink,
        metrics: Metrics,
        writer: ClusterWriter | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.keys = Keys(settings.label_prefix)
        self.reader = reader
        self.policy = policy
        self.decide = decide
        self.audit = audit
        self.metrics = metrics
        self.writer = writer
        self.monotonic = monotonic
        self.access = (
            AccessReviews(
                writer,
                timeout=settings.access_review_timeout_seconds,
                metrics=metrics,
                monotonic=monotonic,
            )
            if writer is not None
            else None
        )
        self.worker = (
            WriteWorker(
                writer,
                audit,
                metrics,
                settings.write_timeout_seconds,
                reader=reader,
                monotonic=monotonic,
            )
            if writer is not None
            else None
        )

    def close(self) -> None:
        """Let the worker threads go (a stuck call is not waited for)."""
        if self.access is not None:
            self.access.close()
        if self.worker is not None:
            self.worker.close()

    # -- /mutate -----------------------------------------------------------------------

    async def mutate(
        self, request: AdmissionRequest, *, started: float, budget: float
    ) -> AdmissionResponse:
        policy = self.policy()  # read once: a reload meanwhile must not mix two policies
        plan = self._plan(request, policy)
        if plan.changes and plan.decision == "convert" and self.access is not None:
            user = request.get("userInfo", {})
            namespace = request.get("namespace", "")
            # Leave a tenth of a second for the answer and its audit record.
            remaining = budget - (self.monotonic() - started) - 0.1
            access = await self.access.check(user, namespace, budget=remaining)
            if not access.allowed:
                plan = self._without_writes(request, plan, access.reason)
        patch = patch_for(request, plan)
        response = allowed(
            request["uid"],
            patch=patch,
            warnings=plan.warnings,
            audit_annotations=self._annotations(plan, policy),
        )
        written = self._finish("mutate", request, plan, policy, patch, response, started)
        await self.recorded(written, self.left(started, budget))
        return response

    def _without_writes(
        self, request: AdmissionRequest, plan: AdmissionPlan, why: str
    ) -> AdmissionPlan:
        """The plan for a user who may not create Rollouts: nothing written for them.

        A new conversion is not made at all: the Deployment is admitted as sent. An
        object that belongs to a conversion someone allowed earlier (an HPA or route of a
        converted Deployment, an update of a converted Deployment) keeps its patch, which
        only holds the conversion in place, since dropping it would leave the Deployment
        and the Rollout both running pods (argo-rollouts#4935); only the writes go, and
        the reconciler makes them under its own name.
        """
        who = request_username(request) or "?"
        namespace = request.get("namespace", "")
        denial = f"{who} may not create rollouts.argoproj.io in namespace {namespace} ({why})"
        old = request.get("oldObject") or {}
        already = bool(
            ((old.get("metadata") or {}).get("annotations") or {}).get(self.keys.rollout_name)
        )
        if request_kind(request) == "Deployment" and not already:
            refused = plan.unconverted("refuse", denial, f"not converted: {denial}")
            obj = request.get("object") or {}
            marker = f"{who} may not create rollouts.argoproj.io"
            return replace(refused, mutated=mark_refused(obj, marker, keys=self.keys))
        return replace(
            plan,
            reason=f"{plan.reason}; no changes written: {denial}",
            changes=(),
            warnings=(*plan.warnings, f"no changes written on your behalf: {denial}"),
        )

    def _plan(self, request: AdmissionRequest, policy: Policy | None) -> AdmissionPlan:
        user = request_username(request)
        if user in self.settings.passthrough_users:
            return AdmissionPlan("skip", f"request from {user} passes through untouched")
        if request["operation"] not in ("CREATE", "UPDATE"):
            return AdmissionPlan("skip", f"{request['operation']} is admitted as it is")
        if request.get("object") is None:
            return AdmissionPlan("skip", "the request carries no object")
        if policy is None:
            # Readiness keeps traffic away until a policy is known; this is the race.
            raise RuntimeError("no policy loaded yet")
        return self.decide(request, self.reader, policy, keys=self.keys)

    def _annotations(self, plan: AdmissionPlan, policy: Policy | None) -> dict[str, str]:
        values = {
            "decision": plan.decision,
            "environment": plan.environment,
            "strategy": plan.strategy,
            "policy-version": str(policy.version) if policy is not None else None,
        }
        return {k: v for k, v in values.items() if v}

    def _finish(
        self,
        endpoint: str,
        request: AdmissionRequest,
        plan: AdmissionPlan,
        policy: Policy | None,
        patch: list[dict[str, Any]],
        response: AdmissionResponse,
        started: float,
    ) -> asyncio.Future[None]:
        """Count and audit the decision; the future completes once its record is written."""
        latency = self.monotonic() - started
        dry_run = bool(request.get("dryRun", False))
        wanted = tuple(change_outcome(m, "wanted") for m in plan.changes)
        facts = DecisionFacts(
            uid=request["uid"],
            user=request_username(request),
            operation=request["operation"],
            kind=request_kind(request),
            namespace=request.get("namespace", ""),
            name=request_name(request),
            dry_run=dry_run,
            decision=plan.decision,
            reason=plan.reason,
            environment=plan.environment,
            strategy=plan.strategy,
            policy_name=policy.version.name if policy else None,
            policy_resource_version=policy.version.resource_version if policy else None,
            policy_sha256=policy.version.sha256 if policy else None,
            patch=tuple(patch),
            changes_wanted=wanted,
            warnings=tuple(response.get("warnings", [])),
            latency_seconds=latency,
            extra=plan.extra,
        )
        self.metrics.requests.labels(
            endpoint, request_kind(request), request["operation"], plan.decision
        ).inc()
        self.metrics.latency.labels(endpoint).observe(latency)
        if plan.changes and not dry_run and self.worker is not None:
            # The decision is recorded now with its writes pending; an AdmissionWrites
            # record with the same uid says what became of them.
            pending = tuple(change_outcome(m, "pending") for m in plan.changes)
            written = self.audit.record_on_loop(replace(facts, changes_made=pending))
            key = (request_kind(request), facts.namespace, facts.name)
            creating = request["operation"] == "CREATE" and bool(request.get("name"))
            replan = None
            if creating and policy is not None and plan.decision == "convert":
                replan = functools.partial(self._replan, request, policy)
            self.worker.submit(WriteJob(facts, plan.changes, started, key, creating, replan))
            return written
        why = "dry run" if dry_run else "no cluster"
        skipped = tuple(change_outcome(m, f"skipped: {why}") for m in plan.changes)
        return self.audit.record_on_loop(replace(facts, changes_made=skipped))

    def _replan(
        self, request: AdmissionRequest, policy: Policy
    ) -> tuple[dict[str, Any], ...] | None:
        """On a write thread: the request's changes planned on the caches as they are now,
        or None when the decision would no longer convert (the first plan's changes stay)."""
        plan = self.decide(request, self.reader, policy, keys=self.keys)
        return plan.changes if plan.decision == "convert" and plan.changes else None

    def left(self, started: float, budget: float) -> float:
        """Seconds left of a request's budget (never less than a sliver)."""
        return max(0.05, budget - (self.monotonic() - started))

    async def recorded(self, written: asyncio.Future[None], remaining: float) -> None:
        """Wait until the decision's record is written, before the answer leaves.

        Bounded by what is left of the request's budget: a stalled disk delays answers
        but never turns them into API server timeouts; the record still follows.
        """
        try:
            async with asyncio.timeout(remaining):
                await written
        except TimeoutError:
            self.metrics.audit_late.inc()
            log.warning("audit record not written within %.3gs; answering anyway", remaining)
        except Exception as err:
            self.metrics.audit_late.inc()
            log.warning("audit record failed (%s); answering anyway", err)

    # -- failures ----------------------------------------------------------------------

    async def failure(
        self, request: AdmissionRequest, endpoint: str, problem: str, started: float
    ) -> AdmissionResponse:
        """An internal error: admit unchanged with a warning (fail-open), or deny.

        The budget is spent by now (or the call broke): the record gets a short grace,
        within the share of the API server's timeout kept for the answer's way back.
        """
        policy = self.policy()
        if self.settings.fail_closed:
            plan = AdmissionPlan("error", f"internal error: {problem}")
            response = denied(
                request["uid"],
                f"{PRODUCT}: internal error, refused (fail-closed): {problem}",
                code=500,
                reason="InternalError",
                audit_annotations={"decision": "error"},
            )
        else:
            warning = clip_warning(
                f"{PRODUCT}: admitted unchanged after an internal error ({problem}); "
                "the reconciler will catch up"
            )
            plan = AdmissionPlan("error", f"internal error: {problem}", warnings=(warning,))
            response = allowed(
                request["uid"], warnings=[warning], audit_annotations={"decision": "error"}
            )
        await self.recorded(
            self._finish(endpoint, request, plan, policy, [], response, started), 0.5
        )
        return response

    # -- /validate ---------------------------------------------------------------------

    async def validate(
        self, request: AdmissionRequest, *, started: float, budget: float
    ) -> AdmissionResponse:
        """Final-state check of the policy ConfigMap; every other object is allowed."""
        obj = request.get("object")
        is_policy = (
            request_kind(request) == "ConfigMap"
            and request.get("namespace", "") == self.settings.namespace
            and request_name(request) == self.settings.policy_configmap
        )
        if not is_policy or request["operation"] == "DELETE" or obj is None:
            reason = (
                "deleting the policy ConfigMap brings back the built-in policy"
                if is_policy and request["operation"] == "DELETE"
                else "not the policy ConfigMap"
            )
            plan = AdmissionPlan("allow", reason)
            response = allowed(request["uid"], audit_annotations={"decision": "allow"})
            written = self._finish("validate", request, plan, self.policy(), [], response, started)
            await self.recorded(written, self.left(started, budget))
            return response
        try:
            policy = policy_from_configmap(obj)
        except PolicyInvalid as err:
            message = f"{PRODUCT}: {err}"
            plan = AdmissionPlan("deny", str(err).splitlines()[0])
            response = denied(
                request["uid"],
                message,
                code=422,
                reason="Invalid",
                audit_annotations={"decision": "deny"},
            )
            written = self._finish("validate", request, plan, self.policy(), [], response, started)
            await self.recorded(written, self.left(started, budget))
            return response
        plan = AdmissionPlan("allow", f"policy {policy.version} is valid")
        response = allowed(request["uid"], audit_annotations={"decision": "allow"})
        written = self._finish("validate", request, plan, policy, [], response, started)
        await self.recorded(written, self.left(started, budget))
        return response
