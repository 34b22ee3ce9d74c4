"""What a failed reconcile pass means: its text, its reason, whether a retry can help."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from webhook.core.keys import DEFAULT_KEYS as K
from webhook.core.service_state import (
    Failure,
    classify,
    describe_error,
    parse_state,
    same_state,
    state_annotation,
    what_to_fix,
)

SINCE = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("err", "text"),
    [
        (AssertionError(), "AssertionError"),
        (RuntimeError(""), "RuntimeError"),
        (KeyError("spec"), "KeyError: 'spec'"),
        (ValueError("bad replicas"), "ValueError: bad replicas"),
    ],
)
def test_a_failure_is_never_described_by_an_empty_text(err: BaseException, text: str) -> None:
    assert describe_error(err) == text


@pytest.mark.parametrize(
    ("status", "reason", "permanent"),
    [
        (None, "internal", False),
        (0, "unreachable", False),
        (400, "invalid", True),
        (422, "invalid", True),
        (403, "forbidden", False),
        (404, "not-found", False),
        (409, "conflict", False),
        (429, "throttled", False),
        (500, "server-error", False),
        (503, "server-error", False),
        (418, "http-418", False),
    ],
)
def test_classify(status: int | None, reason: str, permanent: bool) -> None:
    assert classify(status) == (reason, permanent)


def test_a_permanent_failure_says_what_to_fix() -> None:
    fix = what_to_fix("invalid", "apply Rollout team/web", "staging", K)
    assert "policy environment staging" in fix and K.rollout in fix
    assert what_to_fix("forbidden", "apply Rollout team/web", "staging", K) == ""
    failure = Failure("invalid", True, "apply Rollout team/web", "KubeError: 422: no", fix)
    assert failure.state == "blocked"
    assert failure.text.startswith("apply Rollout team/web: KubeError: 422: no. To fix: ")


def test_the_annotation_round_trips_and_is_written_on_transitions_only() -> None:
    failure = Failure("forbidden", False, "apply Rollout team/web", "KubeError: 403: denied")
    value = state_annotation(failure, SINCE)
    record = parse_state(value)
    assert record == {
        "state": "failing",
        "reason": "forbidden",
        "step": "apply Rollout team/web",
        "message": "KubeError: 403: denied",
        "since": "2026-11-26T12:00:00Z",
    }
    assert same_state(record, failure)
    assert not same_state(record, Failure("invalid", True, failure.step, failure.message))
    assert not same_state(None, failure)


@pytest.mark.parametrize("text", [None, "", "not json", "[]", json.dumps({"state": "fine"})])
def test_an_annotation_that_is_not_a_failure_record_is_ignored(text: str | None) -> None:
    assert parse_state(text) is None
