"""Graceful shutdown ends streams cleanly; readers resume with no gap and no duplicate."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import httpx
import websockets

from ..support.clients import parse_sse, raw_sse_ids, ws_collect
from ..support.live import LiveServer
from ..support.procs import ServerProcess


async def append(live_server: LiveServer, job: str, start: int, n: int) -> None:
    events = [{"data": f"line {i}\n"} for i in range(start, start + n)]
    r = await live_server.client().post(f"/api/v1/jobs/{job}/events", json={"events": events})
    assert r.status_code == 201 and r.json()["first_index"] == start


async def subscribed(live_server: LiveServer, n: int) -> None:
    while live_server.resources.hub.subscriber_count < n:
        await asyncio.sleep(0.005)


async def test_shutdown_closes_ws_1012_and_ends_sse_then_both_resume(
    live_server: LiveServer,
) -> None:
    job = await live_server.create_job()
    await append(live_server, job, 0, 5)
    sse_seen: list[int] = []

    async def sse_until_end() -> None:
        async for message in live_server.sse(job).messages():
            sse_seen.append(int(message.id or -1))

    sse = asyncio.create_task(sse_until_end())
    async with live_server.ws(job) as ws:
        await subscribed(live_server, 2)
        ws_seen = [e["index"] for e in await ws_collect(ws, limit=5)]
        await asyncio.wait_for(live_server.stop(), 10)
        await ws_collect(ws)
        assert ws.close_code == 1012, "clients must learn the server is restarting"
    await asyncio.wait_for(sse, 10)  # the SSE response ended cleanly, no exception
    assert sse_seen == ws_seen == [0, 1, 2, 3, 4]

    await live_server.start()
    await append(live_server, job, 5, 3)
    await live_server.client().post(
        f"/api/v1/jobs/{job}/events", json={"type": "complete", "success": True}
    )
    resumed = await live_server.sse(job).collect(last_event_id=str(sse_seen[-1]))
    assert [int(m.id or -1) for m in resumed] == [5, 6, 7, 8]
    async with live_server.ws(job, from_index=ws_seen[-1] + 1) as ws:
        assert [e["index"] for e in await ws_collect(ws)] == [5, 6, 7, 8]


async def test_readers_that_drop_mid_stream_resume_exactly(live_server: LiveServer) -> None:
    """Readers disconnect at random points while appends go on; stitched output is exact."""
    job = await live_server.create_job()
    total = 400

    async def producer() -> None:
        for start in range(0, total, 10):
            await append(live_server, job, start, 10)
            await asyncio.sleep(0.002)
        await live_server.client().post(
            f"/api/v1/jobs/{job}/events", json={"type": "complete", "success": True}
        )

    async def sse_reader(drop_every: int) -> list[int]:
        seen: list[int] = []
        while True:
            last = str(seen[-1]) if seen else None
            count = 0
            async for message in live_server.sse(job).messages(last_event_id=last):
                seen.append(int(message.id or -1))
                count += 1
                if count == drop_every:
                    break  # drop the connection mid-stream
            else:
                return seen  # the server ended the stream: complete

    async def ws_reader(drop_every: int) -> list[int]:
        seen: list[int] = []
        while True:
            async with live_server.ws(job, from_index=seen[-1] + 1 if seen else 0) as ws:
                events = await ws_collect(ws, limit=drop_every)
                seen.extend(e["index"] for e in events)
                if ws.close_code == 1000:
                    return seen
                if len(events) < drop_every:
                    return seen

    readers = [sse_reader(d) for d in (7, 33, 101)] + [ws_reader(d) for d in (9, 50, 120)]
    results = await asyncio.wait_for(asyncio.gather(producer(), *readers), 60)
    for seen in results[1:]:
        assert seen == list(range(total + 1))


async def test_sigterm_with_open_streams_exits_quickly(tmp_path: Path) -> None:
    """A real `streamer serve` with SSE and WebSocket readers exits on SIGTERM in seconds."""
    server = ServerProcess(tmp_path / "term.db")
    server.start()
    try:
        headers = {"Authorization": f"Bearer {server.key}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=10) as client:
            job = (await client.post("/api/v1/jobs", json={})).json()["id"]
            await client.post(f"/api/v1/jobs/{job}/events", json={"data": "x\n"})
            ws_url = f"ws://127.0.0.1:{server.port}/api/v1/jobs/{job}/events/ws"
            async with (
                client.stream("GET", f"/api/v1/jobs/{job}/events/stream") as sse,
                websockets.connect(ws_url, additional_headers=headers) as ws,
            ):
                await ws.recv()
                items = parse_sse(sse.aiter_bytes())
                while not isinstance(await anext(items), str):
                    pass
                took = await asyncio.to_thread(server.terminate)
                assert took < 10
                async for _ in items:
                    pass  # the response ends cleanly instead of hanging
                await ws_collect(ws)
                assert ws.close_code == 1012
    finally:
        server.kill()


async def test_graceful_restart_and_reconnect_storm_of_2000_readers(tmp_path: Path) -> None:
    """SIGTERM with 2,000 SSE readers connected: the server exits within 10 s, every
    response ends; then all 2,000 reconnect at once (jittered over ~1 s, as the SSE
    `retry:` and client backoff do) and each resumes with no gap and no 5xx."""
    readers_n = 2000
    # One user holds all 2,000 streams here: lift the per-user cap (default 100).
    server = ServerProcess(tmp_path / "many.db", env={"STREAMER_MAX_STREAMS_PER_USER": "5000"})
    server.start()
    try:
        headers = {"Authorization": f"Bearer {server.key}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as client:
            job = (await client.post("/api/v1/jobs", json={})).json()["id"]
            events = [{"data": f"{i}\n"} for i in range(100)]
            await client.post(f"/api/v1/jobs/{job}/events", json={"events": events})
        path = f"/api/v1/jobs/{job}/events/stream"
        first = [
            asyncio.create_task(raw_sse_ids(server.port, path, server.key))
            for _ in range(readers_n)
        ]
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            deadline = time.monotonic() + 60
            while True:  # until every reader is connected and caught up
                assert time.monotonic() < deadline, "readers did not all connect"
                metrics = (await client.get("/metrics")).text
                line = next(m for m in metrics.splitlines() if 'live_readers{transport="sse"}' in m)
                busy = next(m for m in metrics.splitlines() if 'catching_up{transport="sse"}' in m)
                if float(line.rsplit(" ", 1)[1]) >= readers_n and busy.endswith(" 0.0"):
                    break
                await asyncio.sleep(0.1)
        took = await asyncio.to_thread(server.terminate)
        assert took < 10
        before = await asyncio.wait_for(asyncio.gather(*first), 30)
        assert all(ids == list(range(100)) for ids in before)

        server.start()
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as client:
            events = [{"data": f"{i}\n"} for i in range(100, 150)]
            await client.post(f"/api/v1/jobs/{job}/events", json={"events": events})
            await client.post(
                f"/api/v1/jobs/{job}/events", json={"type": "complete", "success": True}
            )

        async def reconnect(last: int) -> list[int]:
            await asyncio.sleep(random.random())  # jitter
            return await raw_sse_ids(server.port, path, server.key, str(last))

        resumed = await asyncio.wait_for(
            asyncio.gather(*(reconnect(ids[-1]) for ids in before)), 60
        )
        assert all(ids == list(range(100, 151)) for ids in resumed)
    finally:
        server.kill()
