"""Replay pages shared by readers that ask for the same range at about the same time.

A reconnect storm (a deploy restarts the node, a proxy drops every connection) brings
back hundreds of readers of the same job, each a few hundred events behind, within a
second or two. Read one by one, that is one storage query per reader for the same
rows, and one private copy of them per reader: the bench's 1,000 readers × 1,000
events cost +370 MB of RSS and seconds of queries. Shared, it is one query, and every
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
from collections.abc import Callable

from .models import Event
from .storage.base import Storage

Key = tuple[str, int, int]  # job id, from index, limit


class RecentPages:
    def __init__(self, max_pages: int = 64, ttl: float = 5.0) -> None:
        self.max_pages = max_pages
        self.ttl = ttl
        self.hits = 0  # reads answered from a page another reader fetched
        self._clock = 0
        self._pages: dict[Key, tuple[asyncio.Future[list[Event]], float, int]] = {}

    def stamp(self) -> int:
        """A tick of the counter that orders subscriptions and reads."""
        self._clock += 1
        return self._clock

    async def read(
        self,
        storage: Storage,
        job_id: str,
        start: int,
        limit: int,
        since: int,
        *,
        fresh: bool = False,
    ) -> tuple[list[Event], bool]:
        """``storage.read_events(job_id, start, limit)``, shared, and whether a short
        page is the end of what is stored for a reader that started at stamp ``since``
        (its hub subscription, or its first read when it has none).

        ``fresh`` reads from storage whatever is shared (then shares that read): what
        a reader does after a page whose end was not the end for it. Its own read is
        always the end for it, so reading on always terminates.
        """
        key = (job_id, start, limit)
        now = asyncio.get_running_loop().time()
        entry = None if fresh else self._pages.get(key)
        if entry is not None and now - entry[1] < self.ttl:
            try:
                page = await asyncio.shield(entry[0])
            except Exception:  # noqa: S110 - the reader that started it sees the error
                pass
            else:
                self.hits += 1
                return page, since < entry[2]
        task = asyncio.ensure_future(storage.read_events(job_id, start, limit))
        task.add_done_callback(self._settled(key))
        self._pages.pop(key, None)  # re-insert at the end: eviction goes oldest first
        self._pages[key] = (task, now, self.stamp())
        self._evict(now)
        return await asyncio.shield(task), True

    def forget(self, job_id: str) -> None:
        """The job was deleted: its pages must not outlive it."""
        for key in [k for k in self._pages if k[0] == job_id]:
            del self._pages[key]

    def _settled(self, key: Key) -> Callable[[asyncio.Future[list[Event]]], None]:
        def settled(task: asyncio.Future[list[Event]]) -> None:
            # A failed read is not kept (and its error is taken, so asyncio does not
            # log it as never retrieved when the reader that started it went away).
            if task.cancelled() or task.exception() is not None:
                entry = self._pages.get(key)
                if entry is not None and entry[0] is task:
                    del self._pages[key]

        return settled

    def _evict(self, now: float) -> None:
        pages = self._pages
        while pages:
            oldest = next(iter(pages))
            if len(pages) <= self.max_pages and now - pages[oldest][1] < self.ttl:
                return
            del pages[oldest]
