"""Limits that are not a single size check: append rate, open streams, and the rate at
which this node accepts new streams.

All are cheap on the hot path (a dict lookup and some arithmetic) and all are **per
node**: the buckets and the stream count live in this process's memory, so on N
nodes a key may append N times ``append_rate`` and a user may hold N times
``max_streams_per_user`` streams. (The per-job byte cap is cluster-wide: it is a
column checked inside the append's transaction, in ``journal``.)
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from .errors import Overloaded, PayloadTooLarge, TooManyRequests

STREAM_RETRY_AFTER = 5.0  # a slot frees when another stream ends; no better estimate


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class AppendRate:
    """A token bucket per API key: ``rate`` events per second, at most ``burst`` at once.

    An append of ``n`` events needs ``n`` tokens; short of them it is refused (429)
    with ``Retry-After`` saying when they will be there, and takes nothing, so a
    client that waits as told succeeds. A batch larger than the whole bucket could
    never pass and is a 413 instead. ``rate`` 0 turns the limiter off.
    """

    rate: float
    burst: int
    _buckets: dict[int, _Bucket] = field(default_factory=dict)

    def take(self, key_id: int, events: int, now: float | None = None) -> None:
        if self.rate <= 0:
            return
        if events > self.burst:
            raise PayloadTooLarge(
                f"a batch of {events} events is larger than the append burst of {self.burst} "
                "(append_burst); send smaller batches",
                field="events",
                limit=self.burst,
            )
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens < events:
            wait = (events - bucket.tokens) / self.rate
            raise TooManyRequests(
                f"append rate limit of {self.rate:g} events/s per key (append_rate) reached",
                retry_after=wait,
            )
        bucket.tokens -= events


@dataclass
class StreamStartRate:
    """New streams per second on this node, all users together: a token bucket of
    ``burst`` that refills at ``rate``; the start past it is ``Overloaded`` (503 with
    ``Retry-After``; WebSocket 1013). ``rate`` 0 turns it off.

    It protects the node, not fairness between users (``StreamSlots`` does that), so
    it is checked before the credential is looked up: a reconnect storm of thousands
    of readers costs this node a few arithmetic operations per refused start, not a
    database read each, and the readers come back spread over the next seconds.
    """

    rate: float
    burst: int
    refused: int = 0
    _bucket: _Bucket | None = None

    def take(self, now: float | None = None) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic() if now is None else now
        bucket = self._bucket
        if bucket is None:
            bucket = self._bucket = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens < 1:
            self.refused += 1
            raise Overloaded(
                f"too many streams starting on this server: over {self.rate:g}/s "
                "(max_stream_starts_per_second); try again later",
                retry_after=(1 - bucket.tokens) / self.rate,
                limit=self.rate,
            )
        bucket.tokens -= 1


@dataclass
class StreamSlots:
    """Open streams per user on this node; ``acquire`` refuses the one past ``limit``."""

    limit: int
    _open: Counter[int] = field(default_factory=Counter)

    def acquire(self, user_id: int) -> None:
        if self._open[user_id] >= self.limit:
            raise TooManyRequests(
                f"this user already has {self.limit} open streams (max_streams_per_user); "
                "close one first",
                retry_after=STREAM_RETRY_AFTER,
            )
        self._open[user_id] += 1

    def release(self, user_id: int) -> None:
        self._open[user_id] -= 1
        if self._open[user_id] <= 0:
            del self._open[user_id]

    def count(self, user_id: int) -> int:
        return self._open[user_id]

    @property
    def total(self) -> int:
        return sum(self._open.values())
