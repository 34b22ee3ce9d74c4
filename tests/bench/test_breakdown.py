"""Per-thread CPU per request, for the breakdown of a conversion's cost."""

from __future__ import annotations

import os

import pytest

from bench.breakdown import per_request, thread_seconds


def test_event_loop_thread_is_split_from_the_others() -> None:
    before = {"100": 1.0, "101": 0.5}
    after = {"100": 3.0, "101": 0.9, "102": 0.1}  # 102 started during the run
    out = per_request(before, after, "100", 1000)
    assert out["event_loop_ms"] == pytest.approx(2.0)
    assert out["other_threads_ms"] == pytest.approx(0.5)


def test_no_requests_is_not_a_division_by_zero() -> None:
    assert per_request({}, {"1": 1.0}, "1", 0)["event_loop_ms"] == pytest.approx(1000.0)


def test_this_process_threads_are_read_from_proc() -> None:
    seconds = thread_seconds(os.getpid())
    assert str(os.getpid()) in seconds
    assert all(value >= 0 for value in seconds.values())
