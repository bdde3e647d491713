"""The one replay→live merge that every transport and protocol sits on.

The order of operations is the whole point:

1. **Subscribe to the hub first.** From now on every committed event of the job is
   kept in its channel (``hub.py``) until this reader is past it.
2. **Replay from storage** in pages from ``from_index`` up to the current end.
3. **Go live when the channel reaches back to where the replay stopped**: anything
   committed during the replay is in the channel, anything before it was in storage;
   events the reader already has are skipped by index.
4. **When the channel no longer reaches back to the reader** (it fell behind the
   channel's bounds, or the channel saw a hole), **read storage again** from the
   reader's position. The hub only publishes after commit, so storage always has
   what the channel lacks.

Reading history before subscribing loses what is appended in between; subscribing
without de-duplicating delivers it twice. Both are the peers' most common bugs, and
both are impossible here by construction (``tests/core/test_follow_merge.py`` and
``tests/server/test_follow_boundary.py``).

A reader that is live is plain state: the hub's flush calls ``pump``, which writes
the new events to the reader's ``Outlet`` at once, or leaves them in the channel
while the outlet cannot take them (its connection is backed up) until the outlet
says it can (``on_ready``). A task exists only while the reader reads storage, so an
idle reader costs its registration and its socket, not a suspended coroutine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

from .backlog import Backlog
from .errors import StreamerError
from .hub import Channel, Hub
from .models import Event
from .ports import EventReader

log = logging.getLogger("streamer")

# A replay page after the first: about this many bytes of stored lines, at most this
# many events. 256 KiB keeps a WebSocket frame of one page under the 1 MiB message
# limit common clients default to (the Python websockets library, for one).
REPLAY_PAGE_BYTES = 256 * 1024
MAX_REPLAY_PAGE_EVENTS = 16_384


class Outlet(Protocol):
    """Where one reader's events go: a transport's framing over one connection."""

    on_ready: Callable[[], None] | None  # set by the reader: the outlet can take writes again

    def ready(self) -> bool:
        """Whether a write now stays within the connection's bound."""

    def send(self, events: Sequence[Event]) -> None:
        """Frame ``events`` (consecutive, in order) and write them; never waits."""

    def keepalive(self, next_index: int) -> None:
        """Tell an idle client the stream is alive and where it stands."""

    def finish(self, follow: Follow) -> None:
        """The stream ended: ``follow.complete``, or ``follow.closed`` says why."""

    async def drain(self) -> None:
        """Until ``ready()``; raises ``ConnectionError`` when the connection is gone."""


class Follow:
    """Events of one job from ``from_index`` on, replayed then live, each exactly once.

    ``start(outlet)`` begins; the stream ends after ``complete``, after the stored
    events when ``live`` is false, or when ``close()`` is called (``closed`` then says
    why: disconnect, shutdown, deleted, revoked, send_timeout, storage_error). At
    the end the outlet's ``finish`` and then ``on_end`` are called, once.
    """

    __slots__ = (
        "reader",
        "hub",
        "job_id",
        "next_index",
        "tails",
        "page_size",
        "transport",
        "send_timeout",
        "outlet",
        "on_end",
        "replayed",
        "sent",
        "complete",
        "closed",
        "ended",
        "channel",
        "_live",
        "_since",
        "_task",
        "_stalled",
        "_last_write",
    )

    def __init__(
        self,
        reader: EventReader,
        hub: Hub,
        job_id: str,
        from_index: int,
        *,
        live: bool = True,
        page_size: int = 1000,
        transport: str = "internal",
        send_timeout: float = 10.0,
    ) -> None:
        self.reader = reader
        self.hub = hub
        self.job_id = job_id
        self.next_index = from_index
        self.tails = live  # follows the job live once the stored events are sent
        self.page_size = page_size
        self.transport = transport
        self.send_timeout = send_timeout
        self.outlet: Outlet | None = None
        self.on_end: Callable[[Follow], None] | None = None
        self.replayed = 0  # events read from storage (replay and catch-up)
        self.sent = 0
        self.complete = False
        self.closed: str | None = None
        self.ended = False
        self.channel: Channel | None = None
        self._live = False
        self._since = 0  # when it subscribed, on the clock of the shared pages
        self._task: asyncio.Task[None] | None = None
        self._stalled: float | None = None  # since when a live write has had to wait
        self._last_write = time.monotonic()

    @property
    def live(self) -> bool:
        """Caught up and pumped by the hub."""
        return self._live

    @property
    def replaying(self) -> bool:
        """Reading storage right now (replay or catch-up)."""
        return self._task is not None

    def start(self, outlet: Outlet) -> None:
        """Subscribe (if it tails), then read storage from ``next_index`` in a task."""
        self.outlet = outlet
        outlet.on_ready = self._on_ready
        if self.tails:
            self.channel = self.hub.subscribe(self.job_id, self)
        self._since = self.hub.pages.stamp()
        self._catch_up()

    def close(self, reason: str) -> None:
        """End the stream soon, from anywhere: disconnect, shutdown, revocation."""
        if self.ended:
            return
        self.closed = reason
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self._end()

    # live -------------------------------------------------------------------------------

    def pump(self) -> None:
        """Write what the channel has past ``next_index``, if the outlet can take it."""
        channel, outlet = self.channel, self.outlet
        if not self._live or channel is None or outlet is None:
            return
        run = channel.since(self.next_index)
        if run is None:  # the channel no longer reaches back here: storage has it
            self.hub.lag_events += 1
            self._catch_up()
            return
        if not run:
            return
        if not outlet.ready():
            if self._stalled is None:
                self._stalled = time.monotonic()
            return
        self._deliver(run)

    def tick(self, now: float) -> None:
        """From the hub's ticker: end a live write stalled past the send timeout; send
        a keepalive after ``keepalive`` seconds without a write."""
        if not self._live or self.ended or self.outlet is None:
            return
        if self._stalled is not None and now - self._stalled > self.send_timeout:
            self.close("send_timeout")
            return
        keepalive = self.hub.keepalive
        if keepalive and now - self._last_write >= keepalive and self.outlet.ready():
            self._last_write = now
            self.outlet.keepalive(self.next_index)

    def _on_ready(self) -> None:
        self._stalled = None
        self.pump()

    def _deliver(self, events: Sequence[Event]) -> None:
        assert self.outlet is not None
        self.outlet.send(events)
        self.next_index = events[-1].index + 1
        self.sent += len(events)
        self._stalled = None
        self._last_write = time.monotonic()
        if events[-1].is_complete:
            self.complete = True
            self._end()

    # storage ----------------------------------------------------------------------------

    def _catch_up(self) -> None:
        self._live = False
        self._task = asyncio.get_running_loop().create_task(
            self._read_storage(), name=f"streamer-replay-{self.job_id}"
        )

    async def _read_storage(self) -> None:
        """Stored events from ``next_index`` until the channel takes over (or the end)."""
        try:
            caught_up = await self._replay()
        except TimeoutError:
            self._task = None
            self.close("send_timeout")  # it stopped reading; it resumes from its position
            return
        except ConnectionError:
            self._task = None
            self.close("disconnect")
            return
        except StreamerError as exc:  # storage failed mid-stream (database down, pool dry)
            log.warning("ending a %s stream of job %s: %s", self.transport, self.job_id, exc.detail)
            self._task = None
            self.close("storage_error")  # the client resumes from its position
            return
        self._task = None
        if self.ended:
            return
        if not caught_up:
            self._end()  # not tailing: the stored events were the whole stream
            return
        self._live = True
        self.pump()

    async def _replay(self) -> bool:
        """Pages from storage, written as they come; True when the channel reaches back
        to ``next_index`` (go live), False at the end of what is stored when the
        reader does not tail."""
        outlet, pages, channel = self.outlet, self.hub.pages, self.channel
        assert outlet is not None
        limit, fresh = self.page_size, False
        while not self.ended:
            page, size, is_end = await pages.read(
                self.reader, self.job_id, self.next_index, limit, self._since, fresh=fresh
            )
            if page:
                if not outlet.ready():
                    async with asyncio.timeout(self.send_timeout):
                        await outlet.drain()
                    if self.ended:
                        return False
                self.replayed += len(page)
                self._deliver(page)
            if len(page) == limit:
                fresh = False
                # Size the next page by bytes, not events: a few hundred storage round
                # trips per million small events, and little memory for big ones.
                limit = REPLAY_PAGE_BYTES * len(page) // (size or 1)
                limit = max(1, min(MAX_REPLAY_PAGE_EVENTS, limit))
                continue
            # A short page: the end of what was stored when its read started.
            fresh = True  # whatever comes next is read by this reader alone
            if not is_end:  # a shared read older than this reader's subscription
                continue
            if channel is None:
                return False
            if channel.covers(self.next_index):
                return True
            # The channel has moved past the replay's end (a burst, a hole): read on.
        return False

    # the end ----------------------------------------------------------------------------

    def _end(self) -> None:
        if self.ended:
            return
        self.ended = True
        self._live = False
        if self.channel is not None:
            self.hub.unsubscribe(self.channel, self)
        outlet = self.outlet
        if outlet is not None:
            outlet.on_ready = None
            outlet.finish(self)
        if self.on_end is not None:
            self.on_end(self)


class Inbox(Backlog["list[Event] | int"]):
    """An outlet read by a coroutine: for transports that must await each write (the
    ASGI path) and for in-process readers. Its items are batches of events, or for a
    keepalive the reader's next index (an ``int``); it ends when the follow does."""

    def __init__(self, max_bytes: int = 1 << 20) -> None:
        super().__init__(max_bytes)

    def send(self, events: Sequence[Event]) -> None:
        self.put(list(events), sum([len(e.line) for e in events]))

    def keepalive(self, next_index: int) -> None:
        self.put(next_index, 0)

    def finish(self, follow: Follow) -> None:
        self.complete()


async def batches(follow: Follow, max_bytes: int = 1 << 20) -> AsyncIterator[list[Event]]:
    """Start ``follow`` into an ``Inbox`` and yield its batches of events (keepalives
    are skipped): the in-process way to read a job."""
    inbox = Inbox(max_bytes)
    follow.start(inbox)
    try:
        async for item in inbox.items():
            if isinstance(item, list):
                yield item
    finally:
        follow.close("disconnect")  # a no-op when it has ended
