"""The hub: one contiguous run per job, flushed once per loop turn, bounded, never
waiting on a reader."""

from __future__ import annotations

import asyncio

from streamer.core.hub import Channel, Hub
from streamer.core.models import Event, NewEvent


def events(start: int, n: int) -> list[Event]:
    return [NewEvent("log", str(i), None).encode(i, "t") for i in range(start, start + n)]


class Reader:
    """A reader that takes whatever its channel has, when pumped."""

    def __init__(self, hub: Hub, job: str, next_index: int = 0, live: bool = True) -> None:
        self.next_index = next_index
        self.live = live
        self.got: list[list[int]] = []
        self.ticks = 0
        self.closed: str | None = None
        self.channel: Channel = hub.subscribe(job, self)

    def pump(self) -> None:
        run = self.channel.since(self.next_index)
        if run:
            self.got.append([e.index for e in run])
            self.next_index = run[-1].index + 1

    def tick(self, now: float) -> None:
        self.ticks += 1

    def close(self, reason: str) -> None:
        self.closed = reason


async def test_publishes_in_one_loop_turn_reach_a_reader_in_one_write() -> None:
    hub = Hub(limit=100)
    reader = Reader(hub, "job")
    for i in range(5):
        hub.publish("job", events(i * 2, 2))
    assert reader.got == []  # nothing is written from inside publish
    await asyncio.sleep(0)
    assert reader.got == [list(range(10))] and hub.flushes == 1


async def test_the_run_drops_repeats_and_restarts_after_a_hole() -> None:
    hub = Hub(limit=100)
    reader = Reader(hub, "job")
    hub.publish("job", events(0, 3))
    hub.publish("job", events(1, 3))  # 1, 2 again, then 3
    await asyncio.sleep(0)
    assert reader.got == [[0, 1, 2, 3]]
    hub.publish("job", events(6, 2))  # 4 and 5 never came: a new run from 6
    channel = reader.channel
    assert (channel.base, channel.next) == (6, 8)
    assert channel.since(4) is None, "the reader must read 4 and 5 from storage"


async def test_the_run_keeps_only_what_a_reader_still_needs_within_its_bounds() -> None:
    hub = Hub(limit=4, max_bytes=10_000)
    fast, parked = Reader(hub, "job"), Reader(hub, "job", live=False)
    hub.publish("job", events(0, 3))
    await asyncio.sleep(0)
    assert fast.got == [[0, 1, 2]] and parked.got == []
    assert fast.channel.base == 0, "kept for the reader that has not taken them"
    hub.publish("job", events(3, 5))
    await asyncio.sleep(0)
    assert fast.channel.base == 4 and len(fast.channel.events) == 4  # the limit
    assert fast.channel.since(parked.next_index) is None  # it must read storage
    parked.next_index = 9  # it read 0..8 from storage
    hub.publish("job", events(8, 1))
    await asyncio.sleep(0)
    assert fast.channel.base == 9 and fast.channel.events == []  # everyone is past


async def test_the_run_is_bounded_by_bytes_too() -> None:
    hub = Hub(limit=1000, max_bytes=300)
    reader = Reader(hub, "job", live=False)
    hub.publish("job", events(0, 50))
    await asyncio.sleep(0)
    assert reader.channel.size <= 300 and reader.channel.events[-1].index == 49


async def test_a_channel_lives_while_it_has_readers_and_close_job_closes_them() -> None:
    hub = Hub(limit=10)
    a, b = Reader(hub, "job"), Reader(hub, "job")
    hub.publish("other", events(0, 1))  # no readers: nothing kept
    assert "other" not in hub.channels
    hub.close_job("job", "deleted")
    assert a.closed == b.closed == "deleted"
    hub.unsubscribe(a.channel, a)
    hub.unsubscribe(b.channel, b)
    assert hub.channels == {} and hub.subscriber_count == 0


async def test_the_ticker_ticks_every_reader() -> None:
    hub = Hub(limit=10, keepalive=0.03)
    reader = Reader(hub, "job")
    ticker = asyncio.create_task(hub.run_ticker())
    try:
        async with asyncio.timeout(2):
            while reader.ticks < 2:
                await asyncio.sleep(0.01)
    finally:
        ticker.cancel()


async def test_follow_skips_repeats_inside_a_buffer_and_refills_gaps_from_storage(
    tmp_path: object,
) -> None:
    """Several sources can feed one hub (own commits, other nodes): a buffer may repeat
    or skip indexes anywhere, and follow() must still deliver each index once."""
    from pathlib import Path

    from streamer.core.follow import Follow, batches
    from streamer.storage.sqlite import SQLiteStorage

    storage = SQLiteStorage(str(Path(str(tmp_path)) / "f.db"))
    hub = Hub(limit=100)
    await storage.open()
    try:
        user = await storage.identity.create_user("u", "u@x")
        job = await storage.jobs.create_job(user.id, None, {})
        stored = await storage.jobs.append(
            user.id, job.id, [NewEvent("log", str(i), None) for i in range(8)]
        )
        follow = Follow(storage.jobs, hub, job.id, 0)
        reading = batches(follow)
        assert [e.index for e in await anext(reading)] == list(range(8))  # replay
        more = await storage.jobs.append(
            user.id, job.id, [NewEvent("log", "x", None)] * 3 + [NewEvent("complete", None, True)]
        )
        # A messy buffer: repeats (5, 6), then 8, 9, a repeat of 8, then a gap to 11.
        hub.publish(job.id, [stored[5], stored[6], more[0], more[1], more[0], more[3]])
        got = [e.index async for batch in reading for e in batch]
        assert got == [8, 9, 10, 11]
    finally:
        await storage.close()
