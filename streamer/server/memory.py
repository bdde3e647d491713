"""Giving memory back to the operating system after a burst.

Buffers are bounded by bytes while they are in use, but two things keep freed
memory after a burst (a storm of readers, a flood of connections): the serving
process collects cycles rarely (``run.tune_gc``), so objects that refer to each
other wait for a collection; and glibc's allocator keeps what was freed for the
process to reuse, so RSS stays at its peak. Every ``memory_trim_seconds`` this
collects cycles and then asks glibc (``malloc_trim``) to return its free pages. It
costs a walk of the young objects and of the heap's free lists, so it runs on a
timer, not per release.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
from collections.abc import Callable

log = logging.getLogger("streamer")


def malloc_trim() -> Callable[[], None] | None:
    """glibc's ``malloc_trim(0)``, or None on a C library without it."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if trim is None:
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int

    def run() -> None:
        trim(0)

    return run


async def trim_periodically(every: float) -> None:
    """The app's task: collect and trim every ``every`` seconds (0: never)."""
    if not every:
        return
    trim = malloc_trim()
    while True:
        await asyncio.sleep(every)
        gc.collect()
        if trim is not None:
            trim()
