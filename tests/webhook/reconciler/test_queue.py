from __future__ import annotations

import threading

from webhook.reconciler.queue import WorkQueue


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_key_is_queued_once() -> None:
    q: WorkQueue[str] = WorkQueue()
    for _ in range(3):
        q.add("a")
    q.add("b")
    assert [q.get(timeout=0), q.get(timeout=0), q.get(timeout=0)] == ["a", "b", None]


def test_a_key_in_progress_is_queued_again_after_done() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    assert q.get(timeout=0) == "a"
    q.add("a")  # changed while being worked on
    assert q.get(timeout=0) is None  # never to a second worker at the same time
    q.done("a")
    assert q.get(timeout=0) == "a"


def test_backoff_grows_per_key_and_resets() -> None:
    clock = Clock()
    q: WorkQueue[str] = WorkQueue(clock=clock, base_delay=1, max_delay=5)
    assert [q.retry("a") for _ in range(5)] == [1, 2, 4, 5, 5]
    assert q.retry("b") == 1
    q.forget("a")
    assert q.retry("a") == 1


def test_delayed_keys_come_when_due() -> None:
    clock = Clock()
    q: WorkQueue[str] = WorkQueue(clock=clock)
    q.add_after("a", 10)
    assert q.get(timeout=0) is None
    clock.t = 10
    assert q.get(timeout=0) == "a"


def test_close_wakes_waiting_workers() -> None:
    q: WorkQueue[str] = WorkQueue()
    got: list[str | None] = []
    worker = threading.Thread(target=lambda: got.append(q.get()))
    worker.start()
    q.close()
    worker.join(timeout=5)
    assert got == [None]
