"""In-process fan-out of committed events: bounded, lag-marking, never blocking.

``publish`` is synchronous and does O(1) work per subscriber: it appends the shared
``Event`` objects to the subscriber's buffer and wakes it. When a buffer would grow
past its limit, the subscriber is marked *lagged* and its buffer dropped instead of
waiting for it: a slow reader can cost itself a trip to storage, never cost the
other readers their latency, and never make the server hold unbounded memory.
``follow()`` turns "lagged" back into a complete stream by reading storage.

Keepalives come from one ticker for the whole hub, not a timer per waiting reader:
a timer per wait would be armed and cancelled on every delivery.
Every third of the keepalive interval the ticker counts a quiet tick for each
subscription; three quiet ticks in a row mark it *idle* and wake it, so an idle
reader hears something at least every ``keepalive`` seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from .models import Event
from .pages import RecentPages


class Subscription:
    """One reader's live buffer for one job."""

    __slots__ = (
        "job_id",
        "limit",
        "lagged",
        "closed",
        "idle",
        "quiet",
        "deliver",
        "stamp",
        "_buffer",
        "_waiter",
    )

    def __init__(self, job_id: str, limit: int, stamp: int = 0) -> None:
        self.job_id = job_id
        self.stamp = stamp  # when it subscribed, on the clock of ``RecentPages``
        self.limit = limit
        self.lagged = False
        self.closed: str | None = None
        self.idle = False  # set by the hub's ticker: time for a keepalive
        self.quiet = 0  # ticks since the last event
        # Set by ``Follow`` only while its reader is caught up and parked: writes the
        # events straight to the reader's socket and says whether it did.
        self.deliver: Callable[[Sequence[Event]], bool] | None = None
        self._buffer: list[Event] = []
        self._waiter: asyncio.Future[None] | None = None

    def push(self, events: Sequence[Event]) -> None:
        if self.closed is not None:
            return
        self.quiet = 0
        self.idle = False
        deliver = self.deliver
        if deliver is not None and not self._buffer and not self.lagged and deliver(events):
            return
        if self.lagged or len(self._buffer) + len(events) > self.limit:
            self.lagged = True
            self._buffer.clear()
        else:
            self._buffer.extend(events)
        self._wake()

    def close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = reason
        self._wake()

    def take(self) -> list[Event]:
        """Everything buffered so far, in index order; the buffer starts afresh."""
        events, self._buffer = self._buffer, []
        return events

    def clear_lag(self) -> None:
        """Forget the overflow: the caller is about to catch up from storage."""
        self.lagged = False
        self._buffer.clear()

    def tick(self) -> None:
        """One quiet tick; the third in a row makes the subscription idle and wakes it."""
        self.quiet += 1
        if self.quiet >= 3:
            self.quiet = 0
            self.idle = True
            self._wake()

    def take_idle(self) -> bool:
        """Whether a keepalive is due (and forget that it was)."""
        idle, self.idle = self.idle, False
        return idle

    async def wait(self) -> None:
        """Until something is buffered, the buffer overflowed, it closed, or it is idle."""
        if self._buffer or self.lagged or self.closed is not None or self.idle:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def wake(self) -> None:
        """Wake the waiting reader (after a direct delivery of its last event)."""
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Hub:
    def __init__(self, buffer_limit: int, keepalive: float | None = None) -> None:
        self.buffer_limit = buffer_limit
        self.keepalive = keepalive
        self._subscribers: dict[str, set[Subscription]] = {}
        self.published = 0
        self.lag_events = 0
        self.direct_events = 0  # deliveries written straight to a socket by publish()
        self.pages = RecentPages()  # replay pages shared by readers of the same range

    def subscribe(self, job_id: str) -> Subscription:
        subscription = Subscription(job_id, self.buffer_limit, self.pages.stamp())
        self._subscribers.setdefault(job_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._subscribers.get(subscription.job_id)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscribers[subscription.job_id]

    def publish(self, job_id: str, events: Sequence[Event]) -> None:
        """Hand committed events to every subscriber of the job; never waits."""
        self.published += len(events)
        for subscription in self._subscribers.get(job_id, ()):
            was_lagged = subscription.lagged
            subscription.push(events)
            if subscription.lagged and not was_lagged:
                self.lag_events += 1

    def close_job(self, job_id: str, reason: str) -> None:
        self.pages.forget(job_id)
        for subscription in list(self._subscribers.get(job_id, ())):
            subscription.close(reason)

    def close_all(self, reason: str) -> None:
        for subscribers in list(self._subscribers.values()):
            for subscription in list(subscribers):
                subscription.close(reason)

    async def run_keepalive(self) -> None:
        """The ticker (run as a task by the app); without ``keepalive`` it returns."""
        if not self.keepalive:
            return
        while True:
            await asyncio.sleep(self.keepalive / 3)
            for subscribers in list(self._subscribers.values()):
                for subscription in subscribers:
                    subscription.tick()

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())
