"""The hub never waits on a reader: bounded buffers, lag marking, closing."""

from __future__ import annotations

import asyncio

from streamer.core.hub import Hub
from streamer.core.models import NewEvent


def events(start: int, n: int) -> list:  # type: ignore[type-arg]
    return [NewEvent("log", str(i), None).encode(i, "t") for i in range(start, start + n)]


async def test_publish_buffers_in_order_and_wakes_the_reader() -> None:
    hub = Hub(buffer_limit=10)
    sub = hub.subscribe("job")
    waiter = asyncio.create_task(sub.wait())
    await asyncio.sleep(0)
    hub.publish("job", events(0, 3))
    await asyncio.wait_for(waiter, 1)
    assert [e.index for e in sub.take()] == [0, 1, 2]
    assert sub.take() == []


async def test_overflow_marks_lagged_and_drops_the_buffer_instead_of_growing() -> None:
    hub = Hub(buffer_limit=5)
    slow, other = hub.subscribe("job"), hub.subscribe("job")
    hub.publish("job", events(0, 4))
    other.take()
    hub.publish("job", events(4, 4))  # slow now holds 8 > 5
    assert slow.lagged and slow.take() == []
    assert not other.lagged and [e.index for e in other.take()] == [4, 5, 6, 7]
    assert hub.lag_events == 1
    slow.clear_lag()
    hub.publish("job", events(8, 1))
    assert [e.index for e in slow.take()] == [8]


async def test_the_ticker_marks_quiet_subscriptions_idle_and_close_wakes_with_a_reason() -> None:
    hub = Hub(buffer_limit=5, keepalive=0.03)
    ticker = asyncio.create_task(hub.run_keepalive())
    sub = hub.subscribe("job")
    await asyncio.wait_for(sub.wait(), 1)  # woken by the ticker: three quiet ticks
    assert sub.take_idle() and not sub.take_idle()
    hub.publish("job", events(0, 1))
    assert not sub.idle and sub.quiet == 0, "an event resets the quiet count"
    sub.take()
    waiter = asyncio.create_task(sub.wait())
    await asyncio.sleep(0)
    hub.close_job("job", "deleted")
    await asyncio.wait_for(waiter, 1)
    assert sub.closed == "deleted"
    ticker.cancel()
    hub.unsubscribe(sub)
    assert hub.subscriber_count == 0


async def test_follow_skips_repeats_inside_a_buffer_and_refills_gaps_from_storage(
    tmp_path: object,
) -> None:
    """Several sources can feed one hub (own commits, other nodes): a buffer may repeat
    or skip indexes anywhere, and follow() must still deliver each index once."""
    from pathlib import Path

    from streamer.core.follow import Follow
    from streamer.storage.sqlite import SQLiteStorage

    storage = SQLiteStorage(str(Path(str(tmp_path)) / "f.db"))
    hub = Hub(buffer_limit=100)
    await storage.open()
    try:
        user = await storage.identity.create_user("u", "u@x")
        job = await storage.jobs.create_job(user.id, None, {})
        stored = await storage.jobs.append(
            user.id, job.id, [NewEvent("log", str(i), None) for i in range(8)]
        )
        follow = Follow(storage.jobs, hub, job.id, 0)
        batches = follow.batches()
        assert [e.index for e in await anext(batches)] == list(range(8))  # replay
        more = await storage.jobs.append(
            user.id, job.id, [NewEvent("log", "x", None)] * 3 + [NewEvent("complete", None, True)]
        )
        # A messy buffer: repeats (5, 6), then 8, 9, a repeat of 8, then a gap to 11.
        hub.publish(job.id, [stored[5], stored[6], more[0], more[1], more[0], more[3]])
        got = [e.index async for batch in batches for e in batch]
        assert got == [8, 9, 10, 11]
    finally:
        await storage.close()
