"""A failed reconcile pass, said so that an operator can act on it.

The reconciler loop (``webhook/reconciler/controller.py``) catches what a pass raised and
asks this module what it means: its text (never empty: ``str()`` of some exceptions is),
its reason (one word, for the metric and the annotation), whether trying again can help,
and what to fix when it cannot. The state of a service that fails is recorded on its
Deployment, in the ``rollout-webhook.io/reconciler`` annotation, which
``rollout-webhook status`` reads: a separate process has no other way to see it.

Pure: the shell passes the HTTP status of an API error (``None`` for anything else).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from webhook.core.keys import Keys

FailureState = Literal["failing", "blocked"]

PERMANENT_STATUSES = frozenset({400, 422})
"""The API server rejected the object itself (invalid, or denied as invalid by an admission
policy): the same inputs build the same object, so trying again cannot help."""

_REASONS = {
    0: "unreachable",
    403: "forbidden",
    404: "not-found",
    409: "conflict",
    429: "throttled",
}


def describe_error(err: BaseException) -> str:
    """``Type: message``; the type alone when the message is empty (``AssertionError()``)."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def classify(status: int | None) -> tuple[str, bool]:
    """(reason, permanent) of a failure: ``status`` is the API server's HTTP status, 0 when
    it could not be reached, None when the failure is not an API call's (a bug)."""
    if status is None:
        return "internal", False
    if status in PERMANENT_STATUSES:
        return "invalid", True
    if status >= 500:
        return "server-error", False
    return _REASONS.get(status, f"http-{status}"), False


def what_to_fix(reason: str, step: str, environment: str | None, keys: Keys) -> str:
    """For a failure that retrying cannot mend: what the operator changes."""
    if reason == "invalid":
        where = f"policy environment {environment}" if environment else "the policy"
        return (
            f"the API server rejects what {step} sends: fix {where}, the Deployment "
            f"(its replicas, labels, or the {keys.rollout} annotation), or the admission "
            "policy that rejects it; the reconciler tries again when the Deployment or the "
            "policy changes"
        )
    return ""


@dataclass(frozen=True)
class Failure:
    """What went wrong in one pass, as the log, the Event, the audit record, the metric and
    the annotation say it."""

    reason: str
    permanent: bool
    step: str  # "plan", or the write: "apply Rollout team/web"
    message: str  # describe_error of the cause
    fix: str = ""

    @property
    def state(self) -> FailureState:
        return "blocked" if self.permanent else "failing"

    @property
    def text(self) -> str:
        """One line: the step and the error, and what to fix when retrying cannot help."""
        line = f"{self.step}: {self.message}"
        return f"{line}. To fix: {self.fix}" if self.fix else line


def state_annotation(failure: Failure, since: datetime) -> str:
    """The annotation's value: JSON, written only when it changes (``same_state``)."""
    record: dict[str, Any] = {"state": failure.state, **asdict(failure)}
    record.pop("permanent")
    if not record["fix"]:
        record.pop("fix")
    record["since"] = since.strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps(record, sort_keys=True)


def parse_state(text: str | None) -> Mapping[str, Any] | None:
    """The annotation's record, or None (absent or not ours to read)."""
    if not text:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("state") not in ("failing", "blocked"):
        return None
    return record


def same_state(recorded: Mapping[str, Any] | None, failure: Failure) -> bool:
    """Whether the annotation already says this failure (then it is not written again:
    one write per transition, not per attempt)."""
    if recorded is None:
        return False
    return all(
        recorded.get(k) == v
        for k, v in (
            ("state", failure.state),
            ("reason", failure.reason),
            ("step", failure.step),
            ("message", failure.message),
        )
    )
