"""The heavy lane: where a request's CPU-bound steps run, and what its deadline drops."""

from __future__ import annotations

import asyncio
import threading

import pytest

from webhook.server import cpu


def thread_name() -> str:
    return threading.current_thread().name


async def in_request(heavy: bool) -> str:
    cpu.mark_heavy(heavy)
    return await cpu.run_bounded(thread_name)


def test_light_steps_stay_on_the_event_loop_and_heavy_ones_go_to_the_lane() -> None:
    assert asyncio.run(in_request(False)) == threading.current_thread().name
    assert asyncio.run(in_request(True)).startswith("heavy-lane")


def test_work_still_waiting_for_a_thread_is_dropped_when_its_request_gives_up() -> None:
    release = threading.Event()
    started: list[str] = []

    def hold() -> None:
        started.append("hold")
        release.wait(10)

    def late() -> None:
        started.append("late")

    async def scenario() -> None:
        cpu.mark_heavy(True)
        holding = [asyncio.ensure_future(cpu.run_bounded(hold)) for _ in range(cpu.THREADS)]
        while started.count("hold") < cpu.THREADS:  # both threads taken
            await asyncio.sleep(0.01)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await cpu.run_bounded(late)
        release.set()
        await asyncio.gather(*holding)
        await asyncio.sleep(0.1)  # a thread is free again: a dropped call does not run

    try:
        asyncio.run(scenario())
    finally:
        release.set()
    assert "late" not in started
