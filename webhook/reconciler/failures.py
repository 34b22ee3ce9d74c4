"""The reconciler's failing keys: what failed, since when, and when to try again.

A failed pass is retried after the work queue's per-key backoff (0.5 s doubling to 60 s).
Watch events keep naming a failing key meanwhile (Argo Rollouts updates a Rollout's status,
the failure's own Event and annotation are writes), and each would try the same write at
once, skipping the backoff. So a key whose failing write is planned again, from the same
inputs (the Deployment's generation, labels and annotations, and the policy), waits for its
retry; a changed input tries again at once, since it may be the fix. A permanent failure
(``webhook.core.service_state.classify``) has no retry at all: only a changed input
brings the key back.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from webhook.core.audit import ChangeOutcome
from webhook.core.keys import Keys
from webhook.core.objects import annotations_of, labels_of, meta
from webhook.core.policy import Policy
from webhook.core.reconcile import ReconcilePlan
from webhook.core.service_state import Failure

DeploymentRef = tuple[str, str]


class ReconcileMetrics(Protocol):
    """Where the loop counts its failures (serve's Prometheus registry)."""

    def reconcile_failed(self, reason: str, step: str, kind: str) -> None: ...

    def reconcile_services(self, failing: int, blocked: int) -> None: ...


class ReconcileFailure(Exception):
    """A pass that failed at ``step`` ("plan", or the write: "apply Rollout team/web")."""

    def __init__(
        self,
        step: str,
        kind: str,
        cause: BaseException,
        *,
        inputs: str,
        action: str | None = None,
        plan: ReconcilePlan | None = None,
        made: tuple[ChangeOutcome, ...] = (),
    ) -> None:
        super().__init__(f"{step}: {cause}")
        self.step = step
        self.kind = kind
        self.cause = cause
        self.inputs = inputs
        self.action = action  # the failed write's signature; None: planning failed
        self.plan = plan
        self.made = made


def inputs_of(deployment: Mapping[str, Any] | None, policy: Policy | None, keys: Keys) -> str:
    """What a pass's plan is made from, as far as a person can change it: the Deployment's
    generation (its spec), labels and annotations (but not the failure's own record), and
    the policy in force. A status update is not an input."""
    if deployment is None:
        return json.dumps([None, str(policy.version) if policy else None])
    annotations = {
        k: v for k, v in annotations_of(deployment).items() if k != keys.reconciler_state
    }
    return json.dumps(
        [
            meta(deployment).get("generation"),
            labels_of(deployment),
            annotations,
            str(policy.version) if policy else None,
        ],
        sort_keys=True,
    )


@dataclass(frozen=True)
class Failing:
    failure: Failure
    inputs: str
    action: str | None
    since: datetime
    attempts: int
    retry_at: float | None  # monotonic; None: permanent, only a changed input retries


class FailureBook:
    """The failing keys, shared by the worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failing: dict[DeploymentRef, Failing] = {}

    def get(self, key: DeploymentRef) -> Failing | None:
        with self._lock:
            return self._failing.get(key)

    def held_back(
        self, key: DeploymentRef, inputs: str, now: float, writes: frozenset[str] | None
    ) -> bool:
        """Whether this pass must wait: the key failed, nothing it is planned from changed,
        and its retry is not due. ``writes``: the signatures of the writes planned now
        (None before planning: only a failed planning can be held back then)."""
        failing = self.get(key)
        if failing is None or failing.inputs != inputs:
            return False
        if failing.retry_at is not None and now >= failing.retry_at:
            return False
        if failing.action is None:
            return True
        # A neighbour that changes the failed write (a Service, an HPA) is an input too.
        return writes is not None and failing.action in writes

    def record(
        self,
        key: DeploymentRef,
        failure: ReconcileFailure,
        described: Failure,
        now: datetime,
        retry_at: float | None,
    ) -> Failing:
        with self._lock:
            previous = self._failing.get(key)
            same = previous is not None and previous.failure == described
            failing = Failing(
                described,
                failure.inputs,
                failure.action,
                previous.since if same and previous is not None else now,
                (previous.attempts if previous is not None else 0) + 1,
                retry_at,
            )
            self._failing[key] = failing
            return failing

    def clear(self, key: DeploymentRef) -> Failing | None:
        with self._lock:
            return self._failing.pop(key, None)

    def counts(self) -> tuple[int, int]:
        """(failing, blocked) keys."""
        with self._lock:
            blocked = sum(1 for f in self._failing.values() if f.failure.permanent)
            return len(self._failing) - blocked, blocked
