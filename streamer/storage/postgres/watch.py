"""Cross-node delivery for PostgreSQL: one LISTEN connection, NOTIFY as a wake-up hint.

Every append sends ``pg_notify('streamer_events', 'node:first:last:job')`` inside its
transaction, so PostgreSQL delivers it at commit, in commit order (and so, per job,
in index order). Every change of a user's feed does the same under the key
``user:<id>``, with its sequence number as the index: the watcher carries both
kinds of log alike. The payload never carries the data (payloads are capped at 8000
bytes): ``Watcher.events()`` reads the rows back and yields them for this node's hub.

What the hub gets, per job, is one run: increasing, contiguous, each index once.
Two sources feed it (this node's ``on_commit`` and ``events()``), so one number
keeps them honest: ``seen``, per job, the highest index already handed to this
node's hub. Everything published passes ``_accept``, which drops what is at or below
``seen``; ``events()`` reads from ``seen + 1``; and when this node commits index
``n`` while another node's ``seen + 1 .. n - 1`` are not published here yet,
``fill()`` reads them from storage first. Readers that subscribed earlier got every
published index; readers that subscribe later replay it from storage (``follow()``).

Notifications are hints. A lost one costs latency, never an event: after every
(re)connect of the LISTEN connection, once LISTEN is in place, ``events()`` catches
up every job it tracks: the jobs in ``seen`` and the jobs read through
``read_events``, which is how a live reader's job becomes known before any
notification named it. For a job it never published, the last event is enough:
``follow()`` sees the gap at the head of its buffer and reads storage. Pending
notifications are merged per job, so memory is bounded by busy jobs, not by
notifications, and this node's own notifications are skipped (``on_commit`` already
published those events).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

from ...core.errors import StreamerError
from ...core.models import Event

log = logging.getLogger("streamer.storage")

CHANNEL = "streamer_events"
PAGE = 1000
MAX_SEEN = 100_000  # jobs whose delivered index is remembered (completed ones are dropped)
MAX_READ = 10_000  # jobs remembered because someone read them (reconnect catch-up only)
PING_SECONDS = 30.0  # a silent LISTEN connection is checked this often
BACKOFF = (0.05, 2.0)  # reconnect delay: first, cap (doubling, jittered)

Read = Callable[[str, int, int], Awaitable[list[Event]]]
Counts = Callable[[list[str]], Awaitable[dict[str, int]]]
Connect = Callable[[], Awaitable[Any]]


def payload(node: str, job_id: str, first: int, last: int) -> str:
    """The NOTIFY payload; the job id goes last, so nothing in it can break the split."""
    return f"{node}:{first}:{last}:{job_id}"


def parse_payload(text: str) -> tuple[str, int, int, str] | None:
    node, first, last, job_id = (text.split(":", 3) + ["", "", ""])[:4]
    if not (first.isdigit() and last.isdigit() and job_id):
        return None
    return node, int(first), int(last), job_id


def _remember(table: OrderedDict[str, Any], key: str, value: Any, limit: int) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > limit:
        table.popitem(last=False)


def backoff_delays() -> Iterable[float]:
    """Capped, jittered exponential delays: a cluster does not reconnect in lockstep."""
    delay = BACKOFF[0]
    while True:
        yield delay * random.uniform(0.5, 1.5)  # noqa: S311 - jitter, not a secret
        delay = min(delay * 2, BACKOFF[1])


class Watcher:
    """The LISTEN connection of one node and the catch-up bookkeeping around it."""

    def __init__(self, node: str, connect: Connect, read: Read, counts: Counts) -> None:
        self.node = node
        self._connect = connect
        self._read = read
        self._counts = counts
        self._seen: OrderedDict[str, int] = OrderedDict()
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._read_jobs: OrderedDict[str, None] = OrderedDict()
        self._remote: dict[str, tuple[int, int]] = {}
        self._recheck: set[str] = set()
        self._catch_up_all = False
        self._wake = asyncio.Event()
        self.listening = asyncio.Event()
        self.connects = 0

    # bookkeeping fed by the storage -----------------------------------------------------

    async def fill(self, job_id: str, events: Sequence[Event]) -> list[Event]:
        """What ``on_commit`` should publish for this node's commit of ``events``.

        Normally exactly ``events``. In a cluster, another node may have committed
        indexes between what this hub has and ``events`` whose notification is still
        on its way: they are read from storage and published first, so the hub never
        sees a gap. Indexes ``events()`` already published are left out.
        """
        seen = self._seen.get(job_id)
        if seen is None or events[0].index <= seen + 1:
            return self._accept(job_id, events)
        missing: list[Event] = []
        try:
            start = seen + 1
            while start < events[0].index:
                page = await self._read(job_id, start, min(PAGE, events[0].index - start))
                page = [e for e in page if e.index < events[0].index]
                if not page:
                    break
                missing += page
                start = page[-1].index + 1  # a feed's log may skip numbers (retention)
        except StreamerError:
            self.recheck(job_id)  # storage just failed: let ``events()`` try again
        return self._accept(job_id, [*missing, *events])

    def _accept(self, job_id: str, events: Sequence[Event]) -> list[Event]:
        """Record ``events`` as published and return the part not published before."""
        if job_id in self._finished:
            return []
        seen = self._seen.get(job_id, -1)
        fresh = [e for e in events if e.index > seen]
        if not fresh:
            return []
        if fresh[-1].is_complete:  # nothing can follow: stop tracking, skip late hints
            self._seen.pop(job_id, None)
            self._read_jobs.pop(job_id, None)
            _remember(self._finished, job_id, None, MAX_READ)
        else:
            _remember(self._seen, job_id, fresh[-1].index, MAX_SEEN)
        return fresh

    def was_read(self, job_id: str, events: Sequence[Event]) -> None:
        """Someone on this node reads the job: catch it up after a reconnect."""
        if events and events[-1].is_complete:
            self._read_jobs.pop(job_id, None)
        else:
            _remember(self._read_jobs, job_id, None, MAX_READ)

    def recheck(self, job_id: str) -> None:
        """Look at the job again (a write failed ambiguously, or a read did)."""
        self._recheck.add(job_id)
        self._wake.set()

    def forget(self, job_id: str) -> None:
        """The job is deleted."""
        self._seen.pop(job_id, None)
        self._read_jobs.pop(job_id, None)
        self._finished.pop(job_id, None)

    def _notified(self, conn: Any, pid: int, channel: str, text: str) -> None:
        parsed = parse_payload(text)
        if parsed is None:
            log.warning("ignoring a malformed notification on %s: %r", channel, text[:100])
            return
        node, first, last, job_id = parsed
        if node != self.node:  # this node's own commits went out through on_commit
            self._merge_remote(job_id, first, last)
            self._wake.set()

    def _merge_remote(self, job_id: str, first: int, last: int) -> None:
        old = self._remote.get(job_id, (first, last))
        self._remote[job_id] = (min(old[0], first), max(old[1], last))

    # the LISTEN connection ---------------------------------------------------------------

    async def _listen_forever(self) -> None:
        """Keep one LISTEN connection up; after each connect, ask for a full catch-up."""
        delays = iter(backoff_delays())
        while True:
            try:
                conn = await self._connect()
            except Exception as exc:  # noqa: BLE001 - a supervisor: log, back off, retry
                log.warning("LISTEN connection failed (%s); retrying", exc)
                await asyncio.sleep(next(delays))
                continue
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
            try:
                await conn.add_listener(CHANNEL, self._notified)
                delays = iter(backoff_delays())
                self.connects += 1
                self.listening.set()
                self._catch_up_all = True  # LISTEN is in place: what it missed is in storage
                self._wake.set()
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(PING_SECONDS):
                            await lost.wait()
                    if not lost.is_set():  # silence: make sure the peer is really there
                        await conn.fetchval("SELECT 1", timeout=5)
                log.warning("LISTEN connection lost; reconnecting")
            except Exception as exc:  # noqa: BLE001 - a supervisor: log, back off, retry
                log.warning("LISTEN connection failed (%s); reconnecting", exc)
            finally:
                self.listening.clear()
                conn.terminate()
            await asyncio.sleep(next(delays))  # a server that keeps dropping us: no hot loop

    # what the hub gets --------------------------------------------------------------------

    async def events(self) -> AsyncIterator[tuple[str, Sequence[Event]]]:
        """Other nodes' events for this node's hub; runs until cancelled, never raises."""
        listener = asyncio.create_task(self._listen_forever(), name="streamer-listen")
        delays = iter(backoff_delays())
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                try:
                    async for item in self._drain():
                        yield item
                except StreamerError as exc:  # storage unavailable: what failed is kept
                    log.warning("cross-node delivery failed (%s); retrying", exc.detail)
                    await asyncio.sleep(next(delays))
                    self._wake.set()
                else:
                    delays = iter(backoff_delays())
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _drain(self) -> AsyncIterator[tuple[str, Sequence[Event]]]:
        """Catch-ups first, then pending notifications; on failure the work is kept."""
        if self._catch_up_all:
            self._catch_up_all = False
            try:
                async for item in self._catch_up([*dict.fromkeys([*self._seen, *self._read_jobs])]):
                    yield item
            except StreamerError:
                self._catch_up_all = True
                raise
        if self._recheck:
            jobs, self._recheck = list(self._recheck), set()
            try:
                async for item in self._catch_up(jobs):
                    yield item
            except StreamerError:
                self._recheck.update(jobs)
                raise
        while self._remote:
            job_id = next(iter(self._remote))
            first, last = self._remote.pop(job_id)
            seen = self._seen.get(job_id)
            if job_id in self._finished or (seen is not None and last <= seen):
                continue
            try:
                async for item in self._pages(job_id, first if seen is None else seen + 1):
                    yield item
            except StreamerError:
                self._merge_remote(job_id, first, last)
                raise

    async def _catch_up(self, jobs: list[str]) -> AsyncIterator[tuple[str, Sequence[Event]]]:
        """Whatever exists beyond what was delivered, for each job; or its last event.

        For a job read here but never published, the last event is enough:
        ``follow()`` treats it as a gap and reads the rest from storage itself.
        """
        for offset in range(0, len(jobs), PAGE):
            chunk = jobs[offset : offset + PAGE]
            counts = await self._counts(chunk)
            for job_id in chunk:
                count = counts.get(job_id)
                if count is None:  # deleted
                    self.forget(job_id)
                    continue
                seen = self._seen.get(job_id)
                if count == 0 or (seen is not None and count - 1 <= seen):
                    continue
                async for item in self._pages(job_id, count - 1 if seen is None else seen + 1):
                    yield item

    async def _pages(self, job_id: str, start: int) -> AsyncIterator[tuple[str, Sequence[Event]]]:
        while job_id not in self._finished:
            page = await self._read(job_id, start, PAGE)
            fresh = self._accept(job_id, page)
            if fresh:
                yield job_id, fresh
            if len(page) < PAGE:
                return
            start = page[-1].index + 1
