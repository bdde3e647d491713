"""The replay→live merge against a scripted store: chosen interleavings, deterministic.

``ScriptedLog`` is a store whose reads return what is committed at the moment of the
read and whose publishing the test drives by hand: commits that are not published
yet, publications that come late, twice (two sources, like a cluster's), with holes
(a lost notification), or overflow a tiny live buffer. Whatever the script, a reader
from ``k`` must get ``k, k+1, ...`` to the ``complete`` event, each exactly once.
The live-server tests (``tests/server/test_follow_boundary.py``) check the same over
real sockets.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from streamer.core.follow import Follow, Inbox, batches
from streamer.core.hub import Hub
from streamer.core.models import Event, NewEvent, encode_events

STAMP = "2026-12-04T10:00:00.000000Z"


class ScriptedLog:
    """One job's committed events, read as snapshots; published only when told."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.events: list[Event] = []
        self.published = 0  # events handed to the hub so far, in order
        self.reads = 0

    async def read_events(self, job_id: str, from_index: int, limit: int) -> list[Event]:
        self.reads += 1
        snapshot = self.events[from_index : from_index + limit]
        await asyncio.sleep(0)  # the read takes a moment: commits can land meanwhile
        return snapshot

    def commit(self, n: int, *, last: bool = False) -> None:
        new = [NewEvent("log", f"{len(self.events) + i}\n", None) for i in range(n)]
        if last:
            new.append(NewEvent("complete", None, True))
        self.events += encode_events(new, len(self.events), STAMP)

    def publish(self, upto: int | None = None, *, skip: int = 0) -> None:
        """Publish committed events up to ``upto`` in order; ``skip`` drops the first
        few of them (a lost notification: the next publication leaves a gap)."""
        end = len(self.events) if upto is None else min(upto, len(self.events))
        batch = self.events[self.published + skip : end]
        self.published = max(self.published, end)
        if batch:
            self.hub.publish("job", batch)

    def republish(self, start: int, end: int) -> None:
        """A second source hands the hub events it already had (in a cluster)."""
        self.hub.publish("job", self.events[start:end])


async def read_all(follow: Follow) -> list[int]:
    got: list[int] = []
    async for batch in batches(follow):
        got += [e.index for e in batch]
    return got


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.mark.parametrize("seed", range(300))
async def test_random_interleavings_deliver_each_index_once(seed: int) -> None:
    rng = random.Random(seed)
    hub = Hub(limit=rng.choice([2, 8, 4096]))
    log = ScriptedLog(hub)
    log.commit(rng.randint(0, 30))
    log.publish()
    start = rng.randint(0, len(log.events))
    follow = Follow(log, hub, "job", start, page_size=rng.choice([1, 3, 50]))
    reader = asyncio.create_task(read_all(follow))
    for _ in range(rng.randint(5, 40)):
        step = rng.random()
        if step < 0.4:
            log.commit(rng.randint(1, 6))
        elif step < 0.7:
            log.publish(rng.randint(log.published, len(log.events)))
        elif step < 0.8 and log.published < len(log.events):
            log.publish(skip=1)  # a hole: the reader must fetch it from storage
        elif step < 0.9 and log.published:
            log.republish(rng.randint(0, log.published - 1), log.published)
        await settle()
    log.commit(rng.randint(0, 3), last=True)
    log.publish()
    got = await asyncio.wait_for(reader, 10)
    assert got == list(range(start, len(log.events))), f"seed {seed}"


async def test_commits_between_subscribe_and_replay_are_not_lost() -> None:
    """Committed and published while the first read is in flight: in the buffer."""
    hub = Hub(limit=100)
    log = ScriptedLog(hub)
    log.commit(5)
    log.publish()
    follow = Follow(log, hub, "job", 0)
    reader = asyncio.create_task(read_all(follow))
    await asyncio.sleep(0)  # subscribed, first read started: its snapshot has 0..4
    log.commit(3, last=True)
    log.publish()
    assert await asyncio.wait_for(reader, 5) == list(range(9))


async def test_a_reader_that_ends_its_replay_before_the_publish_still_gets_the_commit() -> None:
    """Committed before the read, published after the reader went live: delivered once."""
    hub = Hub(limit=100)
    log = ScriptedLog(hub)
    log.commit(4)  # committed, not yet published
    follow = Follow(log, hub, "job", 2)
    reader = asyncio.create_task(read_all(follow))
    await settle()  # replayed 2, 3 from storage; now live
    log.publish()  # 0..3 arrive late: all already sent or before the start
    log.commit(1, last=True)
    log.publish()
    assert await asyncio.wait_for(reader, 5) == [2, 3, 4, 5]


async def test_a_reader_that_stops_taking_falls_back_to_storage() -> None:
    """While the reader takes nothing, the job's channel keeps only its bound; the
    reader, once it reads again, gets the rest from storage, exactly."""
    hub = Hub(limit=2)
    log = ScriptedLog(hub)
    follow = Follow(log, hub, "job", 0)
    inbox = Inbox(max_bytes=1)  # not ready again until its reader takes what it has
    follow.start(inbox)
    await settle()
    assert follow.live
    for _ in range(10):
        log.commit(5)
        log.publish()
        await settle()
    log.commit(0, last=True)
    log.publish()
    got: list[int] = []
    async for item in inbox.items():
        if isinstance(item, list):
            got += [e.index for e in item]
    assert got == list(range(51))
    assert hub.lag_events > 0, "the reader never had to read storage"


async def test_a_closed_follow_ends_and_says_why() -> None:
    hub = Hub(limit=10)
    log = ScriptedLog(hub)
    log.commit(3)
    log.publish()
    follow = Follow(log, hub, "job", 0)
    reader = asyncio.create_task(read_all(follow))
    async with asyncio.timeout(5):
        while not follow.live:
            await asyncio.sleep(0)
    follow.close("shutdown")
    assert await asyncio.wait_for(reader, 5) == [0, 1, 2]
    assert follow.closed == "shutdown" and hub.subscriber_count == 0
