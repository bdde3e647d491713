"""A queue between a writer that never waits and one coroutine that takes its items.

Every outlet on a path where sending is a coroutine (the ASGI path, in-process
readers) is one of these: the writer (a follow, the hub's flush) puts items without
waiting; the reader takes them in order and awaits each send. It is bounded by bytes,
not items: past ``max_bytes`` it is not ``ready()``, so the writer holds back (a
follow leaves events in the hub's channel, or stops reading storage) until the reader
has taken enough, and then ``on_ready`` says so.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Backlog(Generic[T]):
    """Items waiting for their one reader, bounded by ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.on_ready: Callable[[], None] | None = None  # room again, after being full
        self.ended = False  # nothing more will be put; ``items()`` ends once it is empty
        self._items: deque[tuple[T, int]] = deque()
        self._bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None

    def ready(self) -> bool:
        return self._bytes < self.max_bytes and not self.ended

    def put(self, item: T, size: int) -> None:
        """Queue ``item``, which counts ``size`` bytes against the bound; never waits."""
        if self.ended:
            return
        self._items.append((item, size))
        self._bytes += size
        self._wake()

    def complete(self) -> None:
        """Nothing more comes: the reader takes what is queued, then ``items()`` ends."""
        if not self.ended:
            self.ended = True
            self._wake()
            self._release()

    def clear(self) -> None:
        """Drop what is queued (its reader has gone)."""
        self._items.clear()
        self._bytes = 0

    async def drain(self) -> None:
        """Until ``ready()``; ``ConnectionError`` once it has ended."""
        while not self.ready():
            if self.ended:
                raise ConnectionError("the stream has ended")
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    async def items(self) -> AsyncIterator[T]:
        """What was put, in order, until it has ended and all of it is taken."""
        while True:
            while self._items:
                item, size = self._items.popleft()
                self._bytes -= size
                if size and self._bytes < self.max_bytes:
                    self._release()
                    if self.on_ready is not None:
                        self.on_ready()
                yield item
            if self.ended:
                return
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _release(self) -> None:
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)
