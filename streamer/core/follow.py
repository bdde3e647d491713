"""The one replay→live merge that SSE, WebSocket, the text log and the CLI sit on.

The order of operations is the whole point:

1. **Subscribe to the hub first.** From now on every committed event is buffered.
2. **Replay from storage** in pages from ``from_index`` up to the current end.
3. **Drain the buffer, skipping indexes already sent.** Anything committed during
   the replay is in the buffer, anything committed before it was in storage.
4. **On a gap or an overflow, go back to storage** from the last index sent. The
   hub only publishes after commit, so storage always has what the buffer missed.

Reading history before subscribing loses what is appended in between; subscribing
without de-duplicating delivers it twice. Both bugs are the peers' most common ones,
and both are impossible here by construction (see ``tests/core/test_follow_merge.py``
and ``tests/server/test_follow_boundary.py``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from .hub import Hub, Subscription
from .models import Event
from .ports import EventReader

log = logging.getLogger("streamer")

# A replay page after the first: about this many bytes of stored lines, at most this
# many events. 256 KiB keeps a WebSocket frame of one page under the 1 MiB message
# limit common clients default to (the Python websockets library, for one).
REPLAY_PAGE_BYTES = 256 * 1024
MAX_REPLAY_PAGE_EVENTS = 16_384


class LiveSink(Protocol):
    """A reader's connection, as the merge sees it while the reader is caught up.

    ``send_events`` writes the events to the socket now, if it can take them without
    waiting, and says whether it did; ``False`` means nothing was written and the
    events go through ``batches()`` like any other.
    """

    def send_events(self, events: Sequence[Event]) -> bool: ...


class Follow:
    """Events of one job from ``from_index`` on, replayed then live, each exactly once.

    Iterate ``batches()``: each item is a non-empty list of consecutive events
    (coalesced, so a transport can send them in one write), or an empty list when a
    keepalive is due (the hub's ticker decides). Iteration ends after ``complete``,
    after the stored events when ``live`` is false, or when ``close()`` is called
    (``closed`` then says why: disconnect, shutdown, deleted).
    """

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
    ) -> None:
        self.reader = reader
        self.hub = hub
        self.job_id = job_id
        self.next_index = from_index
        self.live = live
        self.page_size = page_size
        self.transport = transport
        self.replayed = 0  # events read from storage (replay and catch-up)
        self.replaying = False  # reading storage right now (replay or catch-up)
        self.complete = False
        self.sent = 0
        self.closed: str | None = None
        self._subscription: Subscription | None = None
        self.direct: LiveSink | None = None  # the transport's socket, when it offers one

    def close(self, reason: str) -> None:
        """End the iteration soon (from another task): disconnect, shutdown, revocation."""
        if self.closed is None:
            self.closed = reason
        if self._subscription is not None:
            self._subscription.close(reason)

    def _advance(self, events: list[Event]) -> list[Event]:
        self.next_index = events[-1].index + 1
        self.sent += len(events)
        self.complete = events[-1].is_complete
        return events

    def _contiguous(self, events: Sequence[Event]) -> tuple[list[Event], bool]:
        """The buffered events that continue exactly at ``next_index``, and whether a gap
        cut the run short.

        Skips what was already sent anywhere in the buffer, not only at its start: with
        several sources feeding the hub (this process's commits and other nodes'),
        a buffer may hold ``[35, 36, 34, 35, 36, 37]``.
        """
        expected = self.next_index
        run: list[Event] = []
        for event in events:
            if event.index < expected:
                continue
            if event.index > expected:
                return run, True
            run.append(event)
            expected += 1
        return run, False

    def _deliver_now(self, events: Sequence[Event]) -> bool:
        """Called inside ``Hub.publish`` while this reader is caught up and parked:
        write the events that continue at ``next_index`` straight to its socket.

        ``False`` (nothing written) sends the events down the ordinary path: a gap,
        a socket that cannot take them now, or anything unexpected. It never raises:
        it runs in the publisher's task, after the commit was acknowledged.
        """
        direct = self.direct
        if direct is None or self.closed is not None:
            return False
        try:
            run, gap = self._contiguous(events)
            if gap:
                return False
            if run:
                if not direct.send_events(run):
                    return False
                self.hub.direct_events += len(run)
                self._advance(run)
                if self.complete and self._subscription is not None:
                    self._subscription.wake()  # the loop in batches() ends
            return True
        except Exception:  # a write to a broken socket: let the ordinary path see it
            log.debug("direct delivery failed; falling back", exc_info=True)
            return False

    async def _replay(self, since: int | None = None) -> AsyncIterator[list[Event]]:
        """Stored events from ``next_index`` to the current end, page by page.

        ``since`` stamps the moment from which every commit reaches this reader's
        live buffer (see ``pages.py``): its subscription for the first replay; for a
        catch-up after an overflow or a gap, now, since the buffer was just emptied.
        """
        self.replaying = True
        limit, pages, fresh = self.page_size, self.hub.pages, False
        if since is None:
            since = pages.stamp()
        try:
            while not self.complete and self.closed is None:
                page, size, is_end = await pages.read(
                    self.reader, self.job_id, self.next_index, limit, since, fresh=fresh
                )
                if page:
                    self.replayed += len(page)
                    yield self._advance(page)
                if len(page) < limit:
                    if is_end:
                        return
                    fresh = True  # a shared page that may end too early: read on, alone
                    continue
                fresh = False
                # Size the next page by bytes, not events: ~REPLAY_PAGE_BYTES per read
                # keeps a long replay to a few hundred storage round trips per million
                # small events, and a page of big events from holding much memory.
                limit = REPLAY_PAGE_BYTES * len(page) // (size or 1)
                limit = max(1, min(MAX_REPLAY_PAGE_EVENTS, limit))
        finally:
            self.replaying = False

    async def batches(self) -> AsyncIterator[list[Event]]:
        subscription = None
        if self.live and self.closed is None:
            subscription = self._subscription = self.hub.subscribe(self.job_id)
        try:
            async for page in self._replay(subscription.stamp if subscription else None):
                yield page
            if subscription is None or self.complete:
                return
            while not self.complete:
                if self.direct is not None:
                    subscription.deliver = self._deliver_now
                try:
                    await subscription.wait()
                finally:
                    subscription.deliver = None
                if subscription.closed is not None:
                    self.closed = subscription.closed
                    return
                if subscription.lagged:
                    subscription.clear_lag()
                    async for page in self._replay():
                        yield page
                    continue
                events = subscription.take()
                if not events:
                    if subscription.take_idle():
                        yield []  # the transport sends its keepalive
                    continue
                run, gap = self._contiguous(events)
                if run:
                    yield self._advance(run)
                if gap and not self.complete:
                    async for page in self._replay():  # storage has what is missing
                        yield page
        finally:
            if subscription is not None:
                self.hub.unsubscribe(subscription)
