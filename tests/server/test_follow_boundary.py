"""The replay→live boundary: every reader gets k, k+1, ... exactly once, whenever it joins."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from streamer.server.settings import Settings

from ..support.clients import ds_long_poll_read, ds_sse_read, ws_collect
from ..support.live import LiveServer, ReadHooks, serving

TOTAL = 1500


async def produce(live_server: LiveServer, job: str, total: int, batch: int = 7) -> None:
    """Append ``total`` numbered log events in small batches, then complete the job."""
    client = live_server.client()
    sent = 0
    while sent < total:
        n = min(batch, total - sent)
        events = [{"data": f"line {sent + i}\n"} for i in range(n)]
        r = await client.post(f"/api/v1/jobs/{job}/events", json={"events": events})
        assert r.status_code == 201, r.text
        sent += n
        await asyncio.sleep(0)
    r = await client.post(f"/api/v1/jobs/{job}/events", json={"type": "complete", "success": True})
    assert r.status_code == 201


def assert_exact(indexes: list[int], start: int, end: int) -> None:
    assert indexes == list(range(start, end)), (
        f"expected {start}..{end - 1}, got {len(indexes)} events "
        f"(first {indexes[:3]}, last {indexes[-3:]})"
    )


async def sse_reader(live_server: LiveServer, job: str, start: int) -> list[int]:
    messages = await live_server.sse(job, from_index=start).collect()
    for m in messages:
        assert m.id == str(m.json()["index"]) and m.event == m.json()["type"]
    return [m.json()["index"] for m in messages]


async def ws_reader(live_server: LiveServer, job: str, start: int) -> list[int]:
    async with live_server.ws(job, from_index=start) as ws:
        events = await ws_collect(ws)
        assert ws.close_code == 1000
    return [e["index"] for e in events]


@pytest.fixture(params=[True, False], ids=["lean", "asgi"])
async def either_path_server(
    request: pytest.FixtureRequest, settings: Settings
) -> AsyncIterator[LiveServer]:
    """streamer's own server (the lean path: deliveries written from the hub's flush)
    or uvicorn (every route through the framework, each write awaited): both exact."""
    async with serving(settings, lean=request.param) as server:
        yield server


async def test_readers_joining_at_random_points_each_get_exactly_their_suffix(
    either_path_server: LiveServer,
) -> None:
    """100 readers (half SSE, half WebSocket) join at random from_index values mid-append."""
    live_server = either_path_server
    rng = random.Random(20261122)
    job = await live_server.create_job(name="boundary")
    producer = asyncio.create_task(produce(live_server, job, TOTAL))
    readers: list[tuple[int, asyncio.Task[list[int]]]] = []
    client = live_server.client()
    for i in range(100):
        head = (await client.get(f"/api/v1/jobs/{job}")).json()["event_count"]
        start = rng.randint(0, head)  # anywhere from the start to "tail from now"
        read = sse_reader if i % 2 == 0 else ws_reader
        readers.append((start, asyncio.create_task(read(live_server, job, start))))
        await asyncio.sleep(rng.random() * 0.01)
    await asyncio.wait_for(producer, 60)
    for start, task in readers:
        assert_exact(await asyncio.wait_for(task, 60), start, TOTAL + 1)
    hub = live_server.resources.hub
    assert hub.flushes > 0 and hub.subscriber_count == 0, (hub.flushes, hub.subscriber_count)


@pytest.mark.parametrize("boundary", ["after_subscribe", "after_replay"])
async def test_appends_during_a_paused_boundary_are_delivered_once(
    settings: Settings, boundary: str
) -> None:
    """Pause a reader exactly at the boundary while events are appended: no gap, no dup."""
    paused, release = asyncio.Event(), asyncio.Event()

    async def pause(job_id: str) -> None:
        paused.set()
        await release.wait()

    server = LiveServer(settings, ReadHooks(**{boundary: pause}))
    await server.start()
    try:
        server.key = await server.new_user("owner")
        client = server.client()
        job = await server.create_job(client)
        for i in range(5):
            await client.post(f"/api/v1/jobs/{job}/events", json={"data": f"before {i}\n"})
        reader = asyncio.create_task(sse_reader(server, job, 2))
        await asyncio.wait_for(paused.wait(), 10)
        # The reader is between subscribe and replay (or replay and live) right now.
        for i in range(5):
            await client.post(f"/api/v1/jobs/{job}/events", json={"data": f"during {i}\n"})
        release.set()
        for i in range(3):
            await client.post(f"/api/v1/jobs/{job}/events", json={"data": f"after {i}\n"})
        await client.post(f"/api/v1/jobs/{job}/events", json={"type": "complete", "success": True})
        assert_exact(await asyncio.wait_for(reader, 20), 2, 14)
    finally:
        for c in server.clients:
            await c.aclose()
        await server.stop()


async def test_a_reader_whose_buffer_overflows_catches_up_from_storage(
    settings: Settings,
) -> None:
    """A tiny live buffer forces the lagged path: the reader still gets every event once."""
    # A job's channel keeps 4 events: every 25-event batch leaves its live readers behind.
    server = LiveServer(settings.replace(subscriber_buffer=4), lean=False)
    await server.start()
    try:
        server.key = await server.new_user("owner")
        job = await server.create_job()
        readers = [asyncio.create_task(sse_reader(server, job, 0)) for _ in range(3)]
        readers += [asyncio.create_task(ws_reader(server, job, 0)) for _ in range(3)]
        await produce(server, job, 600, batch=25)  # every batch overflows a 4-event buffer
        for task in readers:
            assert_exact(await asyncio.wait_for(task, 30), 0, 601)
        assert server.resources.hub.lag_events > 0, "the overflow path was not exercised"
    finally:
        for c in server.clients:
            await c.aclose()
        await server.stop()


async def test_text_log_follow_prints_every_line_once(live_server: LiveServer) -> None:
    """The plain-text transport sits on the same follow(): joined mid-append, exact output."""
    job = await live_server.create_job()
    producer = asyncio.create_task(produce(live_server, job, 500))
    chunks: list[Any] = []
    async with live_server.client().stream(
        "GET", f"/api/v1/jobs/{job}/log", params={"follow": "true"}
    ) as response:
        assert response.headers["content-type"].startswith("text/plain")
        async for chunk in response.aiter_text():
            chunks.append(chunk)
    await producer
    assert "".join(chunks) == "".join(f"line {i}\n" for i in range(500))


DS_PATH = "/v1/stream/boundary/ds"


async def ds_produce(server: LiveServer, producers: int, batches: int, size: int) -> None:
    """``producers`` writers appending numbered JSON messages in batches, then a close."""
    client = server.client()

    async def write(p: int) -> None:
        for b in range(batches):
            body = [{"p": p, "n": b * size + i} for i in range(size)]
            r = await client.post(DS_PATH, json=body)
            assert r.status_code == 204, r.text
            await asyncio.sleep(0)

    await asyncio.gather(*(write(p) for p in range(producers)))
    closed = await client.post(DS_PATH, headers={"Stream-Closed": "true"})
    assert closed.status_code == 204


async def test_durable_streams_readers_joining_at_random_offsets_get_each_message_once(
    either_path_server: LiveServer,
) -> None:
    """40 Durable Streams readers (half SSE, half long-poll) join at random offsets while
    two producers append: each gets exactly the stream's messages from its offset, in
    the stream's order, and both end at the closed stream's final offset."""
    server = either_path_server
    rng = random.Random(20261204)
    client = server.client()
    assert (await client.put(DS_PATH, headers={"Content-Type": "application/json"})).is_success
    producer = asyncio.create_task(ds_produce(server, producers=2, batches=60, size=5))
    readers = []
    for i in range(40):
        head = await client.head(DS_PATH)
        tail = int(head.headers["Stream-Next-Offset"][-16:])
        start = rng.randint(0, tail)
        offset = f"0000000000000000_{start:016d}"
        read = ds_sse_read if i % 2 == 0 else ds_long_poll_read
        readers.append((start, asyncio.create_task(read(server.url, DS_PATH, server.key, offset))))
        await asyncio.sleep(rng.random() * 0.01)
    await asyncio.wait_for(producer, 60)
    whole = await client.get(DS_PATH, params={"offset": "-1"})
    everything = whole.json()
    assert len(everything) == 600 and whole.headers["Stream-Closed"] == "true"
    for start, task in readers:
        got, final = await asyncio.wait_for(task, 60)
        assert got == everything[start:], f"reader from {start}: {len(got)} messages"
        assert final == whole.headers["Stream-Next-Offset"]
    assert server.resources.hub.subscriber_count == 0


@pytest.mark.parametrize("read", [ds_sse_read, ds_long_poll_read], ids=["sse", "long-poll"])
@pytest.mark.parametrize("boundary", ["after_subscribe", "after_replay"])
async def test_durable_streams_reads_paused_at_the_boundary_miss_nothing(
    settings: Settings, boundary: str, read: Any
) -> None:
    """A Durable Streams reader paused between subscribe and replay (or replay and
    live) while messages are appended: none missing, none twice."""
    paused, release = asyncio.Event(), asyncio.Event()

    async def pause(job_id: str) -> None:
        paused.set()
        await release.wait()

    async with serving(settings) as server:
        client = server.client()
        await client.put(DS_PATH, json=[{"n": i} for i in range(5)])
        setattr(server.hooks, boundary, pause)
        reader = asyncio.create_task(
            read(server.url, DS_PATH, server.key, "0000000000000000_0000000000000002")
        )
        await asyncio.wait_for(paused.wait(), 10)
        await client.post(DS_PATH, json=[{"n": i} for i in range(5, 10)])
        release.set()
        await client.post(DS_PATH, json=[{"n": 10}], headers={"Stream-Closed": "true"})
        got, _ = await asyncio.wait_for(reader, 20)
        assert got == [{"n": i} for i in range(2, 11)]
