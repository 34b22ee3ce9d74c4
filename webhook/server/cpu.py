"""The heavy lane: CPU-bound steps of a request that hostile input can make long.

Every step of an admission is bounded by construction: a body of at most 3 MiB, nesting
checked before anything recurses, an override annotation of at most 16 KiB and 64 levels,
with anchors and aliases refused. Bounded is not cheap, though: a 3 MiB body of small
arrays costs some 0.7 s of CPU to decode and as much to plan, a 16 KiB override as much
to parse and check (measured in docs/security.md, "CPU budget"), and on the event loop
that time would stall every other admission. So a request whose body is large, or that
carries the override annotation (YAML to parse, a Rollout to check against the CRD
schema), or a policy sent to /validate, has its decode and its plan run on this lane: a
pool of two threads of its own. A thread doing Python work gives the interpreter back
every few milliseconds, so the event loop (and the health port's thread) keep answering
meanwhile; only a single C call is not interrupted (``json.loads`` of 3 MiB: about a
third of a second at worst).

A thread cannot be killed, so the budget is kept in two ways: the request is answered at
its deadline whatever the lane is doing (the app's ``asyncio.timeout_at``, fail-open or
closed as configured), and work still waiting for a thread when its request gives up is
dropped before it starts. What has started runs to its end, which the bounds above keep
to about a second and a half at worst; with two threads, no flood of hostile requests
holds more than two such steps at once. Small requests without the annotation, nearly
all of them, stay on the event loop: a hop costs about 0.15 ms of CPU, a fifth of a
whole conversion, against at most a few milliseconds of work for a body under
``INLINE_BODY_BYTES``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

INLINE_BODY_BYTES = 64 * 1024
"""Bodies up to this size are decoded and planned on the event loop (a Deployment is 2 to
20 KiB; the worst 64 KiB costs a few milliseconds)."""

THREADS = 2

_heavy: contextvars.ContextVar[bool] = contextvars.ContextVar("heavy_request", default=False)
_pool: ThreadPoolExecutor | None = None


def mark_heavy(heavy: bool) -> None:
    """Say, for the rest of this request's task, whether its steps go on the lane."""
    _heavy.set(heavy)


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(THREADS, thread_name_prefix="heavy-lane")
    return _pool


async def run_bounded(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``function(*args, **kwargs)``: on the lane for a heavy request, else here.

    Cancelling the caller (the request's deadline) drops the call if it has not started.
    """
    call = functools.partial(function, *args, **kwargs)
    if not _heavy.get():
        return call()
    context = contextvars.copy_context()  # the request's log context goes along
    return await asyncio.get_running_loop().run_in_executor(_executor(), context.run, call)


def shutdown() -> None:
    """Drop queued work and let the threads go (a running step is not waited for)."""
    global _pool
    if _pool is not None:
        _pool.shutdown(wait=False, cancel_futures=True)
        _pool = None
