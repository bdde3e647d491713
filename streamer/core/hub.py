"""In-process fan-out of committed events: one shared buffer per job, flushed by load.

Every job with readers on this node has a ``Channel``: the events published for it
since its slowest reader's position, as one contiguous run of indexes. ``publish``
does O(1) work per event, whatever the number of readers: it extends the run and
marks the channel dirty. Once per turn of the event loop the hub flushes every
dirty channel: each reader that is live takes the events past its own position, in
one write. When the loop is idle that is one event per write, at once; when it is
busy, several publishes land before the flush and each write carries them all, so
the cost per delivered event falls as the load rises.

A reader never makes the hub wait or grow without bound: the run keeps at most
``limit`` events and ``max_bytes`` bytes; a reader left behind its start (it
stopped reading, or events arrived with a hole the node has not filled yet) is
told so by its next pump and catches up from storage (``follow.py``).

Keepalives and send timeouts come from one ticker for the whole hub, not a timer
per reader: a timer per reader would be armed and cancelled on every delivery.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from typing import Protocol

from .models import Event
from .pages import RecentPages


class Reader(Protocol):
    """What the hub needs of a reader (``Follow``)."""

    next_index: int  # the next index it wants

    @property
    def live(self) -> bool:
        """Pumped by the hub (caught up), rather than reading storage."""

    def pump(self) -> None:
        """Take what the channel has past ``next_index``, if the reader can."""

    def tick(self, now: float) -> None:
        """The hub's periodic tick: keepalives and send timeouts."""

    def close(self, reason: str) -> None: ...


class Channel:
    """The events published for one job since its slowest reader's position.

    ``events`` holds indexes ``base .. next - 1``, contiguous; ``next`` is None until
    the first publication after the channel was made (nothing is known yet).
    """

    __slots__ = ("job_id", "readers", "events", "base", "next", "size", "dirty")

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.readers: set[Reader] = set()
        self.events: list[Event] = []
        self.base = 0
        self.next: int | None = None
        self.size = 0  # bytes of the stored lines in ``events``
        self.dirty = False

    def extend(self, events: Sequence[Event]) -> bool:
        """Add what continues the run; a repeat is dropped, a hole starts a new run
        (readers before it read storage). Whether anything was added."""
        added = False
        for event in events:
            index = event.index
            if self.next is not None and index < self.next:
                continue
            if self.next is None or index > self.next:
                self.events.clear()
                self.base, self.size = index, 0
            self.events.append(event)
            self.size += len(event.line)
            self.next = index + 1
            added = True
        return added

    def since(self, index: int) -> list[Event] | None:
        """The events from ``index`` on (possibly none), or None when the run no
        longer reaches back to ``index`` (the reader must read storage)."""
        if self.next is None:
            return []
        if index < self.base:
            return None
        return self.events[index - self.base :]

    def covers(self, index: int) -> bool:
        """Whether a reader that has read everything stored before ``index`` can go
        live here: the run reaches back to ``index``, or nothing was published since
        the reader subscribed (so whatever comes will be here)."""
        return self.next is None or self.base <= index

    def trim(self, limit: int, max_bytes: int) -> None:
        """Drop what every reader is past, then the oldest beyond the bounds."""
        events = self.events
        if not events:
            return
        low = min((r.next_index for r in self.readers), default=self.base + len(events))
        drop = min(len(events), max(0, low - self.base, len(events) - limit))
        size = self.size - sum([len(e.line) for e in events[:drop]])
        while size > max_bytes and drop < len(events):
            size -= len(events[drop].line)
            drop += 1
        if drop:
            del events[:drop]
            self.base += drop
            self.size = size


class Hub:
    def __init__(
        self,
        limit: int,
        keepalive: float | None = None,
        *,
        max_bytes: int = 8 << 20,
        tick_every: float | None = None,
    ) -> None:
        self.limit = limit
        self.max_bytes = max_bytes
        self.keepalive = keepalive
        self.tick_every = tick_every or (keepalive / 3 if keepalive else None)
        self.channels: dict[str, Channel] = {}
        self.pages = RecentPages()  # replay pages shared by readers of the same range
        self.published = 0
        self.lag_events = 0  # times a live reader fell behind the run and read storage
        self.flushes = 0
        self._dirty: list[Channel] = []
        self._scheduled = False

    # readers ---------------------------------------------------------------------------

    def subscribe(self, job_id: str, reader: Reader) -> Channel:
        channel = self.channels.get(job_id)
        if channel is None:
            channel = self.channels[job_id] = Channel(job_id)
        channel.readers.add(reader)
        return channel

    def unsubscribe(self, channel: Channel, reader: Reader) -> None:
        channel.readers.discard(reader)
        if not channel.readers and self.channels.get(channel.job_id) is channel:
            del self.channels[channel.job_id]

    # publishing ------------------------------------------------------------------------

    def publish(self, job_id: str, events: Sequence[Event]) -> None:
        """Hand committed events to the job's readers, at the next flush; never waits."""
        self.published += len(events)
        channel = self.channels.get(job_id)
        if channel is None or not channel.extend(events):
            return
        if len(channel.events) > 2 * self.limit or channel.size > 2 * self.max_bytes:
            channel.trim(self.limit, self.max_bytes)  # a burst between flushes
        if not channel.dirty:
            channel.dirty = True
            self._dirty.append(channel)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Every dirty channel's live readers take their events (one write each)."""
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        self.flushes += 1
        for channel in dirty:
            channel.dirty = False
            for reader in list(channel.readers):
                if reader.live:
                    reader.pump()
            channel.trim(self.limit, self.max_bytes)

    # ending ----------------------------------------------------------------------------

    def close_job(self, job_id: str, reason: str) -> None:
        self.pages.forget(job_id)
        channel = self.channels.get(job_id)
        if channel is not None:
            for reader in list(channel.readers):
                reader.close(reason)

    def close_all(self, reason: str) -> None:
        for reader in list(self.readers()):
            reader.close(reason)

    def readers(self) -> Iterable[Reader]:
        for channel in list(self.channels.values()):
            yield from list(channel.readers)

    async def run_ticker(self) -> None:
        """Keepalives and send timeouts (run as a task by the app); without an
        interval it returns."""
        if not self.tick_every:
            return
        while True:
            await asyncio.sleep(self.tick_every)
            self.pages.expire()
            now = time.monotonic()
            for reader in list(self.readers()):
                reader.tick(now)

    @property
    def subscriber_count(self) -> int:
        return sum(len(c.readers) for c in self.channels.values())

    @property
    def buffered_events(self) -> int:
        return sum(len(c.events) for c in self.channels.values())
