"""How the process asks glibc's allocator to give memory back.

Python's asyncio keeps a 256 KiB read buffer per TLS connection. glibc serves blocks that
large with mmap and unmaps them when freed, but raises its mmap threshold to the size of
each such block freed, so from the first closed connection on, those buffers come from
the heap, where a few live objects keep the freed space from being returned. A burst of
connections then leaves the process tens of MiB larger for good (measured in
docs/benchmarks.md: +60 MiB after 128 connections, +15 MiB with the threshold fixed).
Fixing the threshold, and keeping the number of allocator arenas small for a process
whose threads mostly wait, keeps resident memory to what is in use.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

# mallopt(3) parameters (glibc's malloc.h).
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 * 1024
"""glibc's own initial value, kept fixed instead of growing."""
ARENA_MAX = 2


def tune_allocator() -> bool:
    """Fix glibc's mmap threshold and cap its arenas; False where the C library is not
    glibc (nothing changes there, which is only a matter of memory, not of behaviour)."""
    try:
        # The process's own symbols: the C library it runs on, found without ldconfig.
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_ARENA_MAX, ARENA_MAX))
    if not done:
        log.info("the C library did not take the allocator settings; left as they are")
    return done
