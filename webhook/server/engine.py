"""The admission engine: the pure decision, plus the few things only the shell can do.

For each request: pass-through checks, the pure plan (``webhook.core``), then, when the
plan wants cluster changes, the confused-deputy check (``access_reviews``: a
SubjectAccessReview for the requesting user, off the event loop, short timeout, cached
briefly), the response, and the writes, handed to the write worker (``write_worker``)
*after* the response is computed. The review's body decides the answer only: the writes
are decided again on the write thread from the stored objects
(``webhook.core.stored_writes``), so a forged or replayed review writes nothing.

The SubjectAccessReview must come first (its answer decides whether the Deployment is
converted at all), so it runs before the response with a bounded budget; the server-side
applies do not change the answer, so they never delay it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from webhook.core.admission import (
    permissions_for,
    plan_scale_refused,
    plan_without_policy,
    plan_without_writes,
)
from webhook.core.analysis import policy_analysis_warnings, template_schema_problems
from webhook.core.audit import DecisionFacts
from webhook.core.cluster import ClusterReader, ClusterWriter
from webhook.core.convert import policy_plan_problems
from webhook.core.crd_schema import RolloutSchema
from webhook.core.errors import PolicyInvalid
from webhook.core.keys import Keys
from webhook.core.policy import Policy, policy_from_configmap
from webhook.core.policy_strategy import NO_SCHEMA_WARNING
from webhook.core.review import (
    AdmissionPlan,
    AdmissionRequest,
    AdmissionResponse,
    UserInfo,
    allowed,
    clip_warning,
    denied,
    is_deployment_scale,
    patch_for,
    request_kind,
    request_name,
    request_username,
    subject_kind,
)
from webhook.core.stored_writes import StoredWrites, WriteScope, scope_of, stored_writes
from webhook.server.access_reviews import AccessReviews
from webhook.server.audit_trail import AuditSink
from webhook.server.cpu import run_bounded
from webhook.server.metrics import Metrics
from webhook.server.settings import ServeSettings
from webhook.server.write_worker import WriteJob, WriteWorker, change_outcome

log = logging.getLogger(__name__)

PRODUCT = "rollout-webhook"


class Decide(Protocol):
    """The pure decision on a CREATE/UPDATE of a kind the webhook mutates."""

    def __call__(
        self,
        request: AdmissionRequest,
        reader: ClusterReader,
        policy: Policy,
        *,
        keys: Keys,
        rollout_schema: RolloutSchema | None = None,
    ) -> AdmissionPlan: ...


class AdmissionEngine:
    def __init__(
        self,
        *,
        settings: ServeSettings,
        reader: ClusterReader,
        policy: Callable[[], Policy | None],
        decide: Decide,
        policy_problem: Callable[[], str | None] = lambda: None,
        rollout_schema: Callable[[], RolloutSchema | None] = lambda: None,
        template_schemas: Callable[[], Mapping[str, RolloutSchema]] = dict,
        audit: AuditSink,
        metrics: Metrics,
        writer: ClusterWriter | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.keys = Keys(settings.label_prefix)
        self.reader = reader
        self.policy = policy
        self.policy_problem = policy_problem
        self.rollout_schema = rollout_schema
        self.template_schemas = template_schemas
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
        plan = await run_bounded(self._plan, request, policy)  # cpu.py: the heavy lane
        if plan.changes and plan.decision == "convert" and self.access is not None:
            # Leave a tenth of a second for the answer and its audit record.
            remaining = budget - (self.monotonic() - started) - 0.1
            plan = await self._checked(request, plan, self.access, remaining)
        patch = patch_for(request, plan)
        if plan.decision == "deny":
            response = denied(
                request["uid"],
                f"{PRODUCT}: {plan.reason}",
                warnings=plan.warnings,
                audit_annotations=self._annotations(plan, policy),
            )
        else:
            response = allowed(
                request["uid"],
                patch=patch,
                warnings=plan.warnings,
                audit_annotations=self._annotations(plan, policy),
            )
        written = self._finish("mutate", request, plan, policy, patch, response, started)
        await self.recorded(written, self.left(started, budget))
        return response

    async def _checked(
        self, request: AdmissionRequest, plan: AdmissionPlan, access: AccessReviews, budget: float
    ) -> AdmissionPlan:
        """The plan once the requester's rights are known: may they make its writes?

        A Scale of a converted Deployment writes the Rollout's size: the requester must be
        allowed to scale that Rollout, or the Scale is denied (admitted, it would either
        start Deployment pods or be dropped without a word). Anything else needs, for each
        kind it writes, the requester's right to write it (``permissions_for``): without
        every one of them, nothing is written (``plan_without_writes``)."""
        user = request.get("userInfo", {})
        namespace = request.get("namespace", "")
        if is_deployment_scale(request):
            name = request.get("name", "")
            answer = await access.check(user, namespace, budget=budget, scaled_rollout=name)
            return plan if answer.allowed else plan_scale_refused(request, answer.reason)
        answer = await access.check(
            user, namespace, budget=budget, permissions=permissions_for(plan)
        )
        if answer.allowed:
            return plan
        missing = answer.missing or permissions_for(plan)
        return plan_without_writes(request, plan, answer.reason, keys=self.keys, missing=missing)

    def _plan(self, request: AdmissionRequest, policy: Policy | None) -> AdmissionPlan:
        user = request_username(request)
        if user in self.settings.passthrough_users:
            return AdmissionPlan("skip", f"request from {user} passes through untouched")
        if request["operation"] not in ("CREATE", "UPDATE"):
            return AdmissionPlan("skip", f"{request['operation']} is admitted as it is")
        if request.get("object") is None:
            return AdmissionPlan("skip", "the request carries no object")
        if policy is None:
            problem = self.policy_problem()
            if problem is not None:  # refused at start: no policy will come by waiting
                return plan_without_policy(request, self.reader, problem, keys=self.keys)
            # Readiness keeps traffic away until a policy is known; this is the race.
            raise RuntimeError("no policy loaded yet")
        return self.decide(
            request, self.reader, policy, keys=self.keys, rollout_schema=self.rollout_schema()
        )

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
            kind=subject_kind(request),
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
        metric_kind = "Deployment/scale" if is_deployment_scale(request) else facts.kind
        self.metrics.requests.labels(
            endpoint, metric_kind, request["operation"], plan.decision
        ).inc()
        self.metrics.latency.labels(endpoint).observe(latency)
        if plan.changes and not dry_run and self.worker is not None:
            # The decision is recorded now with its writes pending; an AdmissionWrites
            # record with the same uid says what became of them.
            pending = tuple(change_outcome(m, "pending") for m in plan.changes)
            written = self.audit.record_on_loop(replace(facts, changes_made=pending))
            # A Scale's writes are ordered with those of its Deployment's requests.
            key = (facts.kind, facts.namespace, facts.name)
            scale = is_deployment_scale(request)
            self.worker.submit(
                WriteJob(
                    facts,
                    plan.changes,
                    started,
                    key,
                    restate=functools.partial(
                        self._stored_writes, scope_of(request, self.reader), policy
                    ),
                    user=request.get("userInfo", UserInfo()),
                    checked=None if scale else permissions_for(plan),
                )
            )
            return written
        why = "dry run" if dry_run else "no cluster"
        skipped = tuple(change_outcome(m, f"skipped: {why}") for m in plan.changes)
        return self.audit.record_on_loop(replace(facts, changes_made=skipped))

    def _stored_writes(
        self, scope: WriteScope, admitted: Policy | None, expired: bool
    ) -> StoredWrites:
        """On a write thread: what the stored objects call for after this admission, under
        the policy in force now (the one of the admission if none is)."""
        policy = self.policy() or admitted
        if policy is None:
            return StoredWrites("none", "no policy in force")
        return stored_writes(
            scope,
            self.reader,
            policy,
            keys=self.keys,
            rollout_schema=self.rollout_schema(),
            expired=expired,
        )

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

    async def _deny_policy(
        self, request: AdmissionRequest, problem: str, started: float, budget: float
    ) -> AdmissionResponse:
        """Refuse a policy ConfigMap, naming every problem."""
        plan = AdmissionPlan("deny", problem.splitlines()[0])
        response = denied(
            request["uid"],
            f"{PRODUCT}: {problem}",
            code=422,
            reason="Invalid",
            audit_annotations={"decision": "deny"},
        )
        written = self._finish("validate", request, plan, self.policy(), [], response, started)
        await self.recorded(written, self.left(started, budget))
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
        schema = self.rollout_schema()
        try:
            policy = await run_bounded(policy_from_configmap, obj, rollout_schema=schema)
        except PolicyInvalid as err:
            return await self._deny_policy(request, str(err), started, budget)
        refused = () if schema is None else await run_bounded(policy_plan_problems, policy, schema)
        templates = template_schema_problems(policy.analysis, self.template_schemas())
        refused = (*refused, *(str(problem) for problem in templates))
        if refused:
            return await self._deny_policy(request, "; ".join(refused), started, budget)
        # What cannot work in its analysis is said, not refused: a template may be created
        # by hand later, and the condition check is a heuristic.
        rollouts = {name: env.rollout for name, env in policy.environments.items()}
        warned = tuple(policy_analysis_warnings(policy.analysis, rollouts))
        # Without the CRD, Argo's fields are not judged: the user is told so.
        if schema is None:
            warned = (*warned, f"{PRODUCT}: {NO_SCHEMA_WARNING}")
        plan = AdmissionPlan("allow", f"policy {policy.version} is valid", warnings=warned)
        response = allowed(request["uid"], warnings=warned, audit_annotations={"decision": "allow"})
        written = self._finish("validate", request, plan, policy, [], response, started)
        await self.recorded(written, self.left(started, budget))
        return response
