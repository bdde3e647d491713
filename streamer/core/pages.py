"""Replay pages shared by readers that ask for the same range at about the same time.

A reconnect storm (a deploy restarts the node, a proxy drops every connection) brings
back hundreds of readers of the same job, each a few hundred events behind, within a
second or two. Read one by one, that is one storage query per reader for the same
rows, and one private copy of them per reader. Shared, it is one query, and every
reader writes the same ``Event`` objects, whose wire frames are built once.

Any page is a valid run of the log from its first index, so any page may be shared.
What needs care is the *end*: a short page (fewer than ``limit`` events) ends at what
was committed when its read started. For a reader that subscribed to the hub before
that, it is the end of what is stored (anything later is in its live buffer). For a
reader that subscribed after, events committed in between would be in neither. So
every read carries a stamp from the counter that also stamps subscriptions, and a
reader is told whether a page's end is the end for it: if not, it reads on from the
page's last index itself, which usually finds nothing, at the cost of one small query.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

from .models import Event
from .ports import EventReader

Key = tuple[str, int, int]  # job id, from index, limit


class Page(NamedTuple):
    events: list[Event]
    size: int  # bytes of the events' stored lines, summed once per read
    is_end: bool  # nothing was stored past it when this reader's buffer began


async def _read(
    reader: EventReader, job_id: str, start: int, limit: int
) -> tuple[list[Event], int]:
    events = await reader.read_events(job_id, start, limit)
    return events, sum([len(e.line) for e in events])


class Shared:
    """One read: its task, when it started (loop time and stamp), its size once read."""

    __slots__ = ("task", "born", "stamp", "size")

    def __init__(
        self, task: asyncio.Future[tuple[list[Event], int]], born: float, stamp: int
    ) -> None:
        self.task = task
        self.born = born
        self.stamp = stamp
        self.size = 0


class RecentPages:
    """Pages kept for ``ttl`` seconds after their read started, at most ``max_bytes``
    of them (counted twice: the stored lines, and the wire frames that readers build
    and cache on the shared events). A lone reader replaying a long log gains nothing
    from them, so the byte bound, not the TTL, is what keeps its memory flat."""

    def __init__(self, max_bytes: int = 8 << 20, ttl: float = 5.0) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.hits = 0  # reads answered from a page another reader fetched
        self._clock = 0
        self._bytes = 0
        # Oldest first. An OrderedDict, not a dict: taking the first key of a dict
        # after many deletions at its front walks past their dummies every time.
        self._pages: OrderedDict[Key, Shared] = OrderedDict()

    @property
    def held_bytes(self) -> int:
        """What the kept pages weigh (their lines, twice), bounded by ``max_bytes``."""
        return self._bytes

    def stamp(self) -> int:
        """A tick of the counter that orders subscriptions and reads."""
        self._clock += 1
        return self._clock

    async def read(
        self,
        reader: EventReader,
        job_id: str,
        start: int,
        limit: int,
        since: int,
        *,
        fresh: bool = False,
    ) -> Page:
        """``reader.read_events(job_id, start, limit)``, shared, and whether a short
        page is the end of what is stored for a reader that started at stamp ``since``
        (its hub subscription, or its first read when it has none).

        ``fresh`` reads from storage whatever is shared (then shares that read): what
        a reader does after a page whose end was not the end for it. Its own read is
        always the end for it, so reading on always terminates.
        """
        key = (job_id, start, limit)
        now = asyncio.get_running_loop().time()
        entry = None if fresh else self._pages.get(key)
        if entry is not None and now - entry.born < self.ttl:
            try:
                events, size = await asyncio.shield(entry.task)
            except Exception:  # noqa: S110 - the reader that started it sees the error
                pass
            else:
                self.hits += 1
                return Page(events, size, since < entry.stamp)
        task = asyncio.ensure_future(_read(reader, job_id, start, limit))
        self._drop(key)  # re-insert at the end: eviction goes oldest first
        self._pages[key] = shared = Shared(task, now, self.stamp())
        task.add_done_callback(self._settled(key, shared))
        self._evict(now)
        events, size = await asyncio.shield(task)
        return Page(events, size, True)

    def expire(self) -> None:
        """Drop the pages past their time (the hub's ticker calls this: without reads
        nothing else would, and a burst's pages would outlive it)."""
        self._evict(asyncio.get_running_loop().time())

    def forget(self, job_id: str) -> None:
        """The job was deleted: its pages must not outlive it."""
        for key in [k for k in self._pages if k[0] == job_id]:
            self._drop(key)

    def _settled(
        self, key: Key, shared: Shared
    ) -> Callable[[asyncio.Future[tuple[list[Event], int]]], None]:
        def settled(task: asyncio.Future[tuple[list[Event], int]]) -> None:
            if self._pages.get(key) is not shared:
                return  # evicted or replaced already
            # A failed read is not kept (and its error is taken, so asyncio does not
            # log it as never retrieved when the reader that started it went away).
            if task.cancelled() or task.exception() is not None:
                self._drop(key)
                return
            shared.size = 2 * task.result()[1]  # the lines, and the frames built from them
            self._bytes += shared.size
            self._evict(asyncio.get_running_loop().time())

        return settled

    def _drop(self, key: Key) -> None:
        shared = self._pages.pop(key, None)
        if shared is not None:
            self._bytes -= shared.size

    def _evict(self, now: float) -> None:
        pages = self._pages
        while pages:
            oldest = next(iter(pages))
            if self._bytes <= self.max_bytes and now - pages[oldest].born < self.ttl:
                return
            self._drop(oldest)
