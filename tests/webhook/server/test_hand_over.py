"""The first SIGTERM hands the reconciler's Lease over before the drain begins."""

from __future__ import annotations

import signal
import threading

import uvicorn

from webhook.server.runner import BoundedServer


async def _app(scope: object, receive: object, send: object) -> None:  # never called
    raise AssertionError("no request is served here")


def test_the_first_signal_runs_the_hand_over_steps_at_once_and_a_failing_one_is_logged() -> None:
    handed = threading.Event()

    def fails() -> None:
        raise RuntimeError("Lease API unreachable")

    server = BoundedServer(
        uvicorn.Config(_app), shutdown_timeout=600, hand_over=(fails, handed.set)
    )
    try:
        server.handle_exit(signal.SIGTERM, None)
        assert handed.wait(5), "the hand-over did not run"
        assert server.should_exit  # no drain configured: uvicorn's shutdown follows
    finally:
        assert server._watchdog is not None
        server._watchdog.cancel()


def test_without_hand_over_steps_no_thread_starts() -> None:
    server = BoundedServer(uvicorn.Config(_app), shutdown_timeout=600)
    before = {t.name for t in threading.enumerate()}
    try:
        server.handle_exit(signal.SIGTERM, None)
        assert "hand-over" not in {t.name for t in threading.enumerate()} - before
    finally:
        assert server._watchdog is not None
        server._watchdog.cancel()
