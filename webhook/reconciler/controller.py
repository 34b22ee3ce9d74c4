"""The reconciler loop: events in, keys queued, one pure plan per key, its actions carried out.

It reads only the watch-fed caches (the same view the admission path reads) and writes
through one adapter. Events on any kind are mapped to the Deployments they concern
(a Service to the Deployments whose pods it selects, an HPA to its target, a route or
a Namespace to the Deployments of its namespace, a Rollout or generated Service to the
Deployment it was generated for), both as the object is and as it was before the change,
and a Service also to the Deployments whose Rollout names it; so no event ever lists the
cluster. Where the caches keep an index (``webhook.core.index``), a Service's Deployments
and the Rollouts naming it are looked up by key, not found by reading the namespace.
It runs only while this replica holds the leader Lease; the other replicas keep their
caches warm.

A key whose last pass found nothing to do is not planned again until something it is
planned from may have changed: an event mapped to it, another Deployment object, another
policy or Rollout schema. A plan is a pure function of those, so the periodic resync
skips such keys at the cost of a lookup; every ``replan_seconds`` each is planned anew
all the same, in case an event was ever mapped to too few keys.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from webhook.core.actions import (
    Apply,
    ClusterAction,
    Delete,
    DeleteOrphanReplicaSets,
    Emit,
    Patch,
)
from webhook.core.admission import neighbours_of
from webhook.core.audit import ChangeOutcome, DecisionFacts
from webhook.core.cluster import ClusterLister
from webhook.core.crd_schema import RolloutSchema
from webhook.core.index import naming_key, selected_keys
from webhook.core.keys import DEFAULT_KEYS, Keys
from webhook.core.objects import annotations_of, labels_of, meta, name_of, namespace_of, spec_of
from webhook.core.policy import Policy
from webhook.core.reconcile import ORPHAN_GRACE, ReconcilePlan, plan_reconcile
from webhook.core.references import names, rollout_references, rollouts_naming
from webhook.core.service_state import (
    Failure,
    classify,
    describe_error,
    parse_state,
    same_state,
    state_annotation,
    what_to_fix,
)
from webhook.core.services import own_selector, selects_pods
from webhook.kube.http import KubeError
from webhook.reconciler.failures import (
    Failing,
    FailureBook,
    ReconcileFailure,
    ReconcileMetrics,
    inputs_of,
)
from webhook.reconciler.queue import WorkQueue

log = logging.getLogger(__name__)

DeploymentRef = tuple[str, str]
"""(namespace, name) of a Deployment: what the work queue holds and a plan is for."""
WRITE_TIMEOUT = 10.0
EXPECTATION_SECONDS = 5.0
REPLAN_SECONDS = 3600.0
"""How long a pass that found nothing to do is trusted while nothing it reads changes."""
RECONCILER_USER = "rollout-webhook:reconciler"
_MOVABLE_KINDS = frozenset({"Service", "HorizontalPodAutoscaler", "Rollout"})
"""Kinds whose change can move them away from a Deployment (a selector, a target, a
generated object's label): the Deployments of the previous object are queued too. Routes
and Namespaces concern their whole namespace either way."""


class ReconcileWriter(Protocol):
    """Every write the reconciler makes; blocking calls, run on worker threads."""

    def apply(self, manifest: Mapping[str, Any], *, timeout: float) -> None: ...

    def patch(
        self, kind: str, namespace: str, name: str, patch: Mapping[str, Any], *, timeout: float
    ) -> None: ...

    def delete(
        self, kind: str, namespace: str, name: str, *, orphan: bool, timeout: float
    ) -> None: ...

    def delete_orphan_replicasets(
        self, namespace: str, selector: Mapping[str, str], *, timeout: float
    ) -> int: ...

    def event(
        self,
        deployment: Mapping[str, Any],
        reason: str,
        message: str,
        event_type: str,
        *,
        timeout: float,
    ) -> None: ...


class IndexedView(Protocol):
    """The caches' index lookup (``MemoryClusterView.indexed``)."""

    def indexed(
        self, kind: str, namespace: str, keys: Iterable[str]
    ) -> tuple[dict[str, Any], ...]: ...


@dataclass(frozen=True)
class Settled:
    """A key's last pass found nothing to do, planned from these (compared by identity)."""

    deployment: Mapping[str, Any]
    policy: Policy
    schema: RolloutSchema | None
    seq: int
    """The event sequence number when the pass began: an event mapped to the key after
    it (a later number) means the pass may not have seen it."""
    at: float


def _ref(obj: Mapping[str, Any]) -> tuple[str, str]:
    return namespace_of(obj), name_of(obj)


def _signature(action: ClusterAction) -> str:
    """A write, as text: the same write planned twice has the same signature."""
    return json.dumps(asdict(action), sort_keys=True, default=str)


def _describe(action: ClusterAction) -> tuple[str, str, str, str]:
    """(action, kind, namespace, name) for the audit record."""
    if isinstance(action, Apply):
        meta = action.manifest.get("metadata") or {}
        return (
            "apply",
            str(action.manifest["kind"]),
            str(meta.get("namespace", "")),
            str(meta["name"]),
        )
    if isinstance(action, Patch):
        return "patch", action.kind, action.namespace, action.name
    if isinstance(action, Delete):
        return "delete", action.kind, action.namespace, action.name
    if isinstance(action, DeleteOrphanReplicaSets):
        return (
            "delete-orphans",
            "ReplicaSet",
            action.namespace,
            ",".join(f"{k}={v}" for k, v in sorted(action.selector.items())),
        )
    return "event", "Event", "", action.reason


def _step(action: ClusterAction) -> str:
    """The write, as a failure names it: "apply Rollout team/web"."""
    verb, kind, ns, name = _describe(action)
    return f"{verb} {kind} {ns}/{name}" if ns else f"{verb} {kind} {name}"


def _status(err: BaseException) -> int | None:
    """The API server's HTTP status of a failed call (0: not reached); None: not an API call."""
    return err.status if isinstance(err, KubeError) else None


class Reconciler:
    def __init__(
        self,
        view: ClusterLister,
        policy: Callable[[], Policy | None],
        writer: ReconcileWriter,
        *,
        keys: Keys = DEFAULT_KEYS,
        audit: Callable[[DecisionFacts], None] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        queue: WorkQueue[DeploymentRef] | None = None,
        is_leader: Callable[[], bool] = lambda: True,
        synced: Callable[[], bool] = lambda: True,
        resync_seconds: float = 600.0,
        expectation_seconds: float = EXPECTATION_SECONDS,
        excluded_namespaces: frozenset[str] = frozenset(),
        orphan_grace: timedelta = ORPHAN_GRACE,
        rollout_schema: Callable[[], RolloutSchema | None] = lambda: None,
        metrics: ReconcileMetrics | None = None,
        replan_seconds: float = REPLAN_SECONDS,
    ) -> None:
        self.view = view
        indexed = getattr(view, "indexed", None)
        self._index: IndexedView | None = view if callable(indexed) else None  # type: ignore[assignment]
        self.rollout_schema = rollout_schema
        self.policy = policy
        self.writer = writer
        self.keys = keys
        self.audit = audit
        self.now = now
        # Not `queue or ...`: an empty queue is falsy (it has a length).
        self.queue: WorkQueue[DeploymentRef] = queue if queue is not None else WorkQueue()
        self.is_leader = is_leader
        self.synced = synced
        self.resync_seconds = resync_seconds
        self.expectation_seconds = expectation_seconds
        self.excluded_namespaces = excluded_namespaces
        self.orphan_grace = orphan_grace
        self._events: dict[DeploymentRef, tuple[str, str]] = {}
        self._made: dict[str, float] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.metrics = metrics
        self.failures = FailureBook()
        self._refused: dict[DeploymentRef, str] = {}
        self._versions: dict[DeploymentRef, tuple[object, float]] = {}
        """Per key: the Deployment's resourceVersion and when a pass first saw it."""
        self._tracebacks: set[tuple[DeploymentRef, str]] = set()
        self.passes = 0
        self.errors = 0
        self.unchanged = 0
        """Keys looked at and not planned again: nothing they are planned from changed."""
        self.replan_seconds = replan_seconds
        self._settled: dict[DeploymentRef, Settled] = {}
        self._seq = itertools.count(1)
        self._touched: dict[DeploymentRef, int] = {}
        """Per key: the sequence number of the last event mapped to it."""

    # --- events -> keys ------------------------------------------------------

    def keys_for(self, kind: str, obj: Mapping[str, Any]) -> set[DeploymentRef]:
        """The Deployments an event on ``obj`` may concern."""
        ns = namespace_of(obj)
        name = name_of(obj)
        labels = labels_of(obj)
        if kind == "Deployment":
            return {(ns, name)}
        if labels.get(self.keys.managed) == "true" and labels.get(self.keys.generated_for):
            return {(ns, labels[self.keys.generated_for])}
        if kind == "Rollout":
            return {(ns, name)}
        if kind == "HorizontalPodAutoscaler":
            target = spec_of(obj).get("scaleTargetRef") or {}
            return {(ns, str(target.get("name", "")))} if target.get("name") else set()
        if kind == "Service":
            candidates = (
                self.view.list("Deployment", ns)
                if self._index is None
                else self._index.indexed("Deployment", ns, selected_keys(obj))
            )
            return {(ns, name_of(d)) for d in candidates if selects_pods(obj, d)}
        deployments = self.view.list("Deployment", name if kind == "Namespace" else ns)
        return {(namespace_of(d), name_of(d)) for d in deployments}

    def _rollout_keys(self, rollouts: Iterable[Mapping[str, Any]]) -> set[DeploymentRef]:
        """The Deployments of these Rollouts (a generated Rollout is named as its Deployment)."""
        return {
            (namespace_of(r), labels_of(r).get(self.keys.generated_for) or name_of(r))
            for r in rollouts
        }

    def named_by(self, kind: str, obj: Mapping[str, Any]) -> set[DeploymentRef]:
        """The Deployments whose cached Rollout names the Service ``obj``: they are concerned
        even once its selector points elsewhere, or it is gone."""
        ns = namespace_of(obj)
        rollouts = (
            self.view.list("Rollout", ns)
            if self._index is None
            else self._index.indexed("Rollout", ns, {naming_key(kind, name_of(obj))})
        )
        return self._rollout_keys(rollouts_naming(rollouts, kind, name_of(obj)))

    def sharing(
        self, rollout: Mapping[str, Any], previous: Mapping[str, Any] | None
    ) -> set[DeploymentRef]:
        """When a Rollout goes or stops naming a Service, the other Deployments whose Rollout
        names that Service (a renamed Deployment waiting to take a generated Service over)."""
        ns, name = namespace_of(rollout), name_of(rollout)
        before = rollout_references(previous if previous is not None else rollout)
        now = (
            frozenset()
            if self.view.get("Rollout", ns, name) is None
            else (rollout_references(rollout))
        )
        released = {n for kind, n in before - now if kind == "Service"}
        if not released:
            return set()
        others = [r for r in self.view.list("Rollout", ns) if name_of(r) != name]
        return self._rollout_keys(
            r for r in others if any(names(r, "Service", svc) for svc in released)
        )

    def keys_for_change(
        self, kind: str, obj: Mapping[str, Any], previous: Mapping[str, Any] | None = None
    ) -> set[DeploymentRef]:
        """The Deployments a change concerns: those of the object as it is now, of the object
        as it was (a selector, a target or a label that moved away), and those whose Rollout
        names it."""
        keys = self.keys_for(kind, obj)
        if previous is not None and kind in _MOVABLE_KINDS:
            keys |= self.keys_for(kind, previous)
        if kind == "Service" and self._reselected(obj, previous):
            keys |= self.named_by(kind, obj)
        elif kind == "Rollout":
            keys |= self.sharing(obj, previous)
        return keys

    def _reselected(self, service: Mapping[str, Any], previous: Mapping[str, Any] | None) -> bool:
        """Whether a Service event may concern a Rollout whose pods it does not select: it
        was created, deleted, or its selector changed. (Argo's pinning of the selector to a
        ReplicaSet, the bulk of Service updates, is none of these. A route event already
        reaches every Deployment of its namespace.)"""
        if previous is None or self.view.get("Service", *_ref(service)) is None:
            return True
        return own_selector(service) != own_selector(previous)

    def on_change(
        self, kind: str, obj: Mapping[str, Any], previous: Mapping[str, Any] | None = None
    ) -> None:
        for key in self.keys_for_change(kind, obj, previous):
            self._touched[key] = next(self._seq)
            if key[0] not in self.excluded_namespaces:
                self.queue.add(key)

    def enqueue_all(self) -> None:
        """Every Deployment, and every name a generated object was made for (orphans)."""
        keys = {(namespace_of(d), name_of(d)) for d in self.view.list("Deployment", "")}
        for kind in ("Rollout", "Service"):
            for obj in self.view.list(kind, ""):
                target = labels_of(obj).get(self.keys.generated_for)
                if labels_of(obj).get(self.keys.managed) == "true" and target:
                    keys.add((namespace_of(obj), target))
        for key in sorted(keys):
            if key[0] not in self.excluded_namespaces:
                self.queue.add(key)

    def policy_changed(self, policy: Policy) -> None:
        """A new policy is in force: every service may have to follow it (its
        ``rolloutUpdates``, an environment switched off or on), so every key is queued now
        rather than at the next resync. Not before this replica leads with synced caches:
        the resync thread queues everything at that moment anyway."""
        del policy  # each pass reads the policy in force when it runs
        if self.is_leader() and self.synced():
            self.enqueue_all()

    # --- one pass ---------------------------------------------------------------

    def plan(self, key: DeploymentRef) -> ReconcilePlan | None:
        """None until the policy is known and the caches are synced (an empty cache would
        make every generated Rollout look orphaned), and for excluded namespaces."""
        policy = self.policy()
        if policy is None or not self.synced() or key[0] in self.excluded_namespaces:
            return None
        namespace, name = key
        deployment = self.view.get("Deployment", namespace, name)
        return plan_reconcile(
            namespace,
            name,
            deployment,
            neighbours_of(self.view, namespace),
            policy,
            now=self.now(),
            keys=self.keys,
            orphan_grace=self.orphan_grace,
            rollout_schema=self.rollout_schema(),
        )

    def _recently_made(self, action: ClusterAction, now: float) -> bool:
        """Whether this very write was made moments ago and the cache has not caught up.

        The watch events of a pass's own writes arrive one by one, and each queues the key
        again; planned from a cache that holds some of the writes but not yet all, the
        next pass would make the rest again. Like controller-runtime's expectations, a
        write made within ``expectation_seconds`` is not repeated; the key is looked at
        again once that window has passed, so a write that did not stick is made again.
        """
        made_at = self._made.get(_signature(action))
        return made_at is not None and now - made_at < self.expectation_seconds

    def _when_due(self, key: DeploymentRef, now: float) -> None:
        """A pass held back until its retry is due asks for the key again then. The queue's
        own retry may come due a moment before the failure's ``retry_at`` (the two are read
        from the clock one after the other, and a busy thread can be set aside in between):
        that early pass is held back, and without this the retry would be lost."""
        failing = self.failures.get(key)
        if failing is not None and failing.retry_at is not None:
            self.queue.add_after(key, failing.retry_at - now)

    def _settle_size(
        self,
        key: DeploymentRef,
        plan: ReconcilePlan,
        deployment: Mapping[str, Any] | None,
        now: float,
    ) -> ReconcilePlan:
        """The plan, less a change of ``original-replicas`` on a version of the Deployment
        first seen less than ``expectation_seconds`` ago.

        That annotation is where an admitted resize is stored (a GitOps sync of a new
        count); the admission's write thread then applies it to the Rollout, planning from
        the stored object. Mirroring the Rollout's older size back at once would erase the
        resize before that write reads it. A version that stays is mirrored once the window
        has passed (``kubectl scale rollout`` still shows on the Deployment)."""
        version = meta(deployment or {}).get("resourceVersion")
        seen = self._versions.get(key)
        if seen is None or seen[0] != version:
            seen = self._versions[key] = (version, now)
        recorded = annotations_of(deployment or {}).get(self.keys.original_replicas)
        left = self.expectation_seconds - (now - seen[1])
        if recorded is None or left <= 0:
            return plan
        actions: list[ClusterAction] = []
        for action in plan.actions:
            held = self._without_size(action)
            if held is not action:
                self.queue.add_after(key, left)
            if held is not None:
                actions.append(held)
        return replace(plan, actions=tuple(actions))

    def _without_size(self, action: ClusterAction) -> ClusterAction | None:
        """``action`` less a change of ``original-replicas`` (None: nothing else left)."""
        if not isinstance(action, Patch) or action.kind != "Deployment":
            return action
        annotations = dict((action.patch.get("metadata") or {}).get("annotations") or {})
        if annotations.pop(self.keys.original_replicas, None) is None:
            return action
        if not annotations:
            return None
        return replace(action, patch={"metadata": {"annotations": annotations}})

    def reconcile(self, key: DeploymentRef) -> ReconcilePlan | None:
        """Plan one key and carry the plan out; None when no pass ran (not ready, or a
        failing key whose retry is not due and whose inputs did not change). Raises
        ``ReconcileFailure``, naming the step, when planning or a write fails."""
        started = time.monotonic()
        seq = next(self._seq)
        deployment = self.view.get("Deployment", *key)
        policy, schema = self.policy(), self.rollout_schema()
        if self._unchanged(key, deployment, policy, schema, started):
            self.unchanged += 1
            return None
        self._settled.pop(key, None)
        inputs = inputs_of(deployment, policy, self.keys)
        if self.failures.held_back(key, inputs, started, None):
            self._when_due(key, started)
            return None
        try:
            plan = self.plan(key)
        except Exception as err:
            raise ReconcileFailure("plan", "Deployment", err, inputs=inputs) from err
        if plan is None:
            return None
        writes = frozenset(_signature(a) for a in plan.writes)
        if self.failures.held_back(key, inputs, started, writes):
            self._when_due(key, started)
            return None
        self.passes += 1
        # Nothing to do, and nothing to look at again later: the key is settled. (Not a plan
        # whose writes are only held back below: those are looked at again.)
        settled = not plan.actions and plan.requeue_after is None
        plan = self._settle_size(key, plan, deployment, started)
        pending = [a for a in plan.writes if self._recently_made(a, started)]
        if pending:
            self.queue.add_after(key, self.expectation_seconds)
            plan = replace(plan, actions=tuple(a for a in plan.actions if a not in pending))
        made = self._carry_out_all(key, plan, deployment, inputs)
        if plan.writes:
            self._audit(plan, made, time.monotonic() - started)
            log.info("%s/%s %s: %s", key[0], key[1], plan.state, plan.summary)
        if plan.requeue_after is not None:
            self.queue.add_after(key, plan.requeue_after)
        elif settled and deployment is not None and policy is not None:
            self._settled[key] = Settled(deployment, policy, schema, seq, started)
        self._forget_old_writes(started)
        return plan

    def _unchanged(
        self,
        key: DeploymentRef,
        deployment: Mapping[str, Any] | None,
        policy: Policy | None,
        schema: RolloutSchema | None,
        now: float,
    ) -> bool:
        """Whether the key's last pass found nothing to do and nothing it was planned from
        has changed since: no event mapped to the key, the same Deployment object, policy
        and schema (a plan reads nothing else but the clock, and only for a Deployment that
        is gone), and not longer ago than ``replan_seconds``."""
        settled = self._settled.get(key)
        return (
            settled is not None
            and deployment is settled.deployment
            and policy is settled.policy
            and schema is settled.schema
            and self._touched.get(key, 0) < settled.seq
            and now - settled.at < self.replan_seconds
            and self.synced()
        )

    def _carry_out_all(
        self,
        key: DeploymentRef,
        plan: ReconcilePlan,
        deployment: Mapping[str, Any] | None,
        inputs: str,
    ) -> list[ChangeOutcome]:
        """Each action in order; the first failed write stops the pass (the next step of a
        sequence must not run before the one it depends on)."""
        made: list[ChangeOutcome] = []
        for action in plan.actions:
            verb, kind, ns, name = _describe(action)
            try:
                self._carry_out(key, action, deployment)
            except Exception as err:
                made.append(ChangeOutcome(kind, ns, name, verb, f"failed: {describe_error(err)}"))
                raise ReconcileFailure(
                    _step(action),
                    kind,
                    err,
                    inputs=inputs,
                    action=_signature(action),
                    plan=plan,
                    made=tuple(made),
                ) from err
            if not isinstance(action, Emit):
                self._made[_signature(action)] = time.monotonic()
                made.append(ChangeOutcome(kind, ns, name, verb, "applied"))
        return made

    def _forget_old_writes(self, now: float) -> None:
        if len(self._made) > 4 * 1024:
            window = self.expectation_seconds
            self._made = {k: t for k, t in self._made.items() if now - t < window}

    def _carry_out(
        self, key: DeploymentRef, action: ClusterAction, deployment: Mapping[str, Any] | None
    ) -> None:
        if isinstance(action, Apply):
            self.writer.apply(action.manifest, timeout=WRITE_TIMEOUT)
        elif isinstance(action, Patch):
            self.writer.patch(
                action.kind, action.namespace, action.name, action.patch, timeout=WRITE_TIMEOUT
            )
        elif isinstance(action, Delete):
            self.writer.delete(
                action.kind,
                action.namespace,
                action.name,
                orphan=action.orphan_dependents,
                timeout=WRITE_TIMEOUT,
            )
        elif isinstance(action, DeleteOrphanReplicaSets):
            self.writer.delete_orphan_replicasets(
                action.namespace, action.selector, timeout=WRITE_TIMEOUT
            )
        elif isinstance(action, Emit) and deployment is not None:
            # The same event again on every resync would bury the useful ones.
            if self._events.get(key) == (action.reason, action.message):
                return
            self._events[key] = (action.reason, action.message)
            try:
                self.writer.event(
                    deployment, action.reason, action.message, action.type, timeout=WRITE_TIMEOUT
                )
            except Exception as err:  # an Event is information: never fail a pass for it
                log.warning("event %s on %s/%s not recorded: %s", action.reason, *key, err)

    def _audit(
        self,
        plan: ReconcilePlan,
        made: list[ChangeOutcome] | tuple[ChangeOutcome, ...],
        latency: float,
        failure: Failure | None = None,
    ) -> None:
        if self.audit is None:
            return
        conversion = plan.conversion
        policy = self.policy()
        wanted = [
            ChangeOutcome(kind, ns, name, verb)
            for verb, kind, ns, name in (_describe(a) for a in plan.writes)
        ]
        self.audit(
            DecisionFacts(
                uid=f"reconcile-{uuid.uuid4()}",
                user=RECONCILER_USER,
                operation="RECONCILE",
                kind="Deployment",
                namespace=plan.namespace,
                name=plan.name,
                dry_run=False,
                decision=plan.state if failure is None else failure.state,
                reason=plan.summary if failure is None else failure.text,
                environment=conversion.environment if conversion else None,
                strategy=conversion.strategy if conversion else None,
                policy_name=policy.version.name if policy else None,
                policy_resource_version=policy.version.resource_version if policy else None,
                policy_sha256=policy.version.sha256 if policy else None,
                changes_wanted=wanted,
                changes_made=list(made),
                warnings=conversion.warnings if conversion else (),
                latency_seconds=latency,
            )
        )

    # --- failures and recoveries -------------------------------------------------

    def work(self, key: DeploymentRef) -> None:
        """One pass of a queued key; a failure is recorded, said and retried."""
        try:
            plan = self.reconcile(key)
        except ReconcileFailure as failure:
            self._settled.pop(key, None)
            self._failed(key, failure)
            return
        except Exception as err:  # a bug outside the pass's steps: still said, still retried
            self._settled.pop(key, None)
            self._failed(key, ReconcileFailure("pass", "Deployment", err, inputs=""))
            return
        if plan is not None:
            self._succeeded(key, plan)

    def _describe_failure(self, failure: ReconcileFailure) -> Failure:
        reason, permanent = classify(_status(failure.cause))
        conversion = failure.plan.conversion if failure.plan is not None else None
        environment = conversion.environment if conversion is not None else None
        fix = what_to_fix(reason, failure.step, environment, self.keys) if permanent else ""
        return Failure(reason, permanent, failure.step, describe_error(failure.cause), fix)

    def _failed(self, key: DeploymentRef, failure: ReconcileFailure) -> None:
        described = self._describe_failure(failure)
        self.errors += 1
        delay = None if described.permanent else self.queue.retry(key)
        retry_at = None if delay is None else time.monotonic() + delay
        failing = self.failures.record(key, failure, described, self.now(), retry_at)
        then = (
            f"retry in {delay:.1f}s"
            if delay is not None
            else "not retried until the Deployment or the policy changes"
        )
        log.warning(
            "reconcile %s/%s failed at %s: %s; attempt %d, %s%s",
            key[0], key[1], described.step, described.message, failing.attempts, then,
            f". To fix: {described.fix}" if described.fix else "",
        )  # fmt: skip
        if _status(failure.cause) is None and (key, described.message) not in self._tracebacks:
            self._tracebacks.add((key, described.message))  # a bug: its traceback, once
            log.error("reconcile %s/%s: unexpected error", *key, exc_info=failure.cause)
        if self.metrics is not None:
            self.metrics.reconcile_failed(
                described.reason, described.step.split(" ", 1)[0], failure.kind
            )
            self.metrics.reconcile_services(*self.failures.counts())
        plan = failure.plan or ReconcilePlan(key[0], key[1], described.state, described.text)
        self._audit(plan, failure.made, 0.0, described)
        self._say_failure(key, failing)

    def _say_failure(self, key: DeploymentRef, failing: Failing) -> None:
        """The Warning Event, and the annotation `rollout-webhook status` reads, written
        only when it says something new (a transition, not every attempt)."""
        deployment = self.view.get("Deployment", *key)
        if deployment is None:
            return
        failure = failing.failure
        reason = "ConversionBlocked" if failure.permanent else "ReconcileFailed"
        self._carry_out(key, Emit(reason, failure.text, "Warning"), deployment)
        recorded = parse_state(
            (deployment.get("metadata") or {})
            .get("annotations", {})
            .get(self.keys.reconciler_state)
        )
        if same_state(recorded, failure):
            return
        value = state_annotation(failure, failing.since)
        self._annotate(key, value)

    def _annotate(self, key: DeploymentRef, value: str | None) -> None:
        patch = {"metadata": {"annotations": {self.keys.reconciler_state: value}}}
        try:
            self.writer.patch("Deployment", *key, patch, timeout=WRITE_TIMEOUT)
        except Exception as err:  # the log and the Event have said it already
            log.warning(
                "reconcile %s/%s: state annotation not written: %s", *key, describe_error(err)
            )

    def _succeeded(self, key: DeploymentRef, plan: ReconcilePlan) -> None:
        self.queue.forget(key)
        self._count_refusal(key, plan)
        failing = self.failures.clear(key)
        if failing is None:
            return
        if self.metrics is not None:
            self.metrics.reconcile_services(*self.failures.counts())
        log.info(
            "reconcile %s/%s recovered after %d failed attempt(s): %s",
            key[0], key[1], failing.attempts, plan.summary,
        )  # fmt: skip
        deployment = self.view.get("Deployment", *key)
        if deployment is None:
            return
        message = f"reconciled after {failing.attempts} failed attempt(s) ({plan.state})"
        self._carry_out(key, Emit("Reconciled", message), deployment)
        if self.keys.reconciler_state in (
            (deployment.get("metadata") or {}).get("annotations") or {}
        ):
            self._annotate(key, None)

    def _count_refusal(self, key: DeploymentRef, plan: ReconcilePlan) -> None:
        """A planner refusal is a permanent failure too (nothing is retried until an input
        changes), counted once per refusal, not per pass."""
        if plan.state != "refused":
            self._refused.pop(key, None)
            return
        if self._refused.get(key) == plan.summary:
            return
        self._refused[key] = plan.summary
        if self.metrics is not None:
            self.metrics.reconcile_failed("refused", "plan", "Deployment")

    # --- the loop -----------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            key = self.queue.get(timeout=1.0)
            if key is None:
                continue
            try:
                if self.is_leader():  # the leader does the work; a new leader resyncs all
                    self.work(key)
            except Exception:  # never lose a worker thread
                log.exception("reconcile %s/%s: unexpected error", *key)
            finally:
                self.queue.done(key)

    def _resync(self) -> None:
        was_leader = False
        last = 0.0
        while not self._stop.wait(1.0):
            leader = self.is_leader() and self.synced() and self.policy() is not None
            due = time.monotonic() - last >= self.resync_seconds
            if leader and (not was_leader or due):
                self.enqueue_all()
                last = time.monotonic()
            was_leader = leader

    def start(self, workers: int = 2) -> None:
        for i in range(workers):
            thread = threading.Thread(target=self._work, name=f"reconcile-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        resync = threading.Thread(target=self._resync, name="reconcile-resync", daemon=True)
        resync.start()
        self._threads.append(resync)

    def stop(self) -> None:
        self._stop.set()
        self.queue.close()
        for thread in self._threads:
            thread.join(timeout=5)
