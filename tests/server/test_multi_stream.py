"""Several jobs on one stream (GET /api/v1/streams/events and its WebSocket), for real.

The replay→live boundary, per job, on one connection: readers follow a random subset
of up to 10 jobs being written, join at random cursors, drop at random moments and
resume with the composite id; each sees each job's events exactly once, in index
order. Then isolation (a foreign id is that job's 404 only), the limits (one stream
against the user's limit, at most max_jobs_per_stream jobs), and the WebSocket's
subscribe / unsubscribe.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets

from streamer.core import keys
from streamer.server.settings import Settings

from ..support.feeds import (
    MultiReader,
    frame_lines,
    parse_cursor,
    read_until_done,
    sse_messages,
    ws_connect,
)
from ..support.live import LiveServer, ReadHooks, serving, wait_until

STREAM = "/api/v1/streams/events"
STREAM_WS = "/api/v1/streams/events/ws"


@pytest.fixture(params=[True, False], ids=["lean", "asgi"])
async def server(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[LiveServer]:
    async with serving(settings, lean=request.param) as live:
        yield live


async def produce(server: LiveServer, job: str, total: int, seed: int) -> None:
    """``total`` log events in small random batches, then ``complete``."""
    rng, client, sent = random.Random(seed), server.client(), 0
    while sent < total:
        n = min(rng.randint(1, 6), total - sent)
        r = await client.post(
            f"/api/v1/jobs/{job}/events",
            json={"events": [{"data": f"{job} {sent + i}\n"} for i in range(n)]},
        )
        assert r.status_code == 201, r.text
        sent += n
        if rng.random() < 0.5:
            await asyncio.sleep(0)
    r = await client.post(f"/api/v1/jobs/{job}/events", json={"type": "complete", "success": True})
    assert r.status_code == 201, r.text


async def test_readers_of_random_subsets_get_each_job_exactly_once(server: LiveServer) -> None:
    """12 jobs written at once; 24 readers, each of a random subset of up to 10, joining
    at random cursors mid-write, dropping and resuming with the composite id."""
    rng = random.Random(20261215)
    client = server.client()
    jobs = [await server.create_job(client, name=f"m{i}") for i in range(12)]
    totals = {job: rng.randint(50, 250) for job in jobs}
    producers = [asyncio.create_task(produce(server, j, totals[j], i)) for i, j in enumerate(jobs)]
    readers: list[tuple[MultiReader, dict[str, int], asyncio.Task[None]]] = []
    for _i in range(24):
        subset = rng.sample(jobs, rng.randint(1, 10))
        starts = {}
        for job in subset:
            head = (await client.get(f"/api/v1/jobs/{job}")).json()["event_count"]
            starts[job] = rng.randint(0, head)
        start = ",".join(f"{job}:{index}" for job, index in starts.items())
        reader = MultiReader(server.url, server.key, subset)
        readers.append((reader, starts, asyncio.create_task(read_until_done(reader, start, rng))))
        await asyncio.sleep(rng.random() * 0.02)
    async with asyncio.timeout(90):
        await asyncio.gather(*producers)
        await asyncio.gather(*(task for _, _, task in readers))
    for reader, starts, _ in readers:
        for job, start in starts.items():
            got = reader.got.get(job, [])
            assert got == list(range(start, totals[job] + 1)), (
                f"{job} from {start}: {len(got)} events, first {got[:3]}, last {got[-3:]}"
            )
            # Its _end, unless the drop came right after its last event and the resume
            # found every job past its end (204).
            assert reader.ended.get(job, "complete") == "complete"
        assert reader.cursor is not None
        assert parse_cursor(reader.cursor) == {job: totals[job] + 1 for job in starts}
    assert sum(reader.connections for reader, _, _ in readers) > len(readers)
    await wait_until(lambda: server.resources.hub.subscriber_count == 0)
    await wait_until(lambda: not server.resources.streams.groups)


async def test_a_foreign_or_missing_job_is_refused_alone(server: LiveServer) -> None:
    other = server.client(await server.new_user("other"))
    theirs = await server.create_job(other, name="theirs")
    mine = await server.create_job(name="mine")
    await server.client().post(f"/api/v1/jobs/{mine}/events", json={"data": "hi\n"})
    reader = MultiReader(server.url, server.key, [theirs, mine, "nosuchjob12345"])
    messages = []
    async with asyncio.timeout(10):
        async for message in sse_messages(
            server.url, STREAM, server.key, {"jobs": reader.positions()}
        ):
            messages.append(message)
            if message.event == "log":
                break
    errors = [m.json() for m in messages if m.event == "_error"]
    assert [(e["job_id"], e["problem"]["status"]) for e in errors] == [
        (theirs, 404),
        ("nosuchjob12345", 404),
    ]
    assert errors[0]["problem"] == errors[1]["problem"]  # the same 404 for both
    assert messages[-1].json()["job_id"] == mine and messages[-1].id == f"{mine}:1"
    only_theirs = await server.client().get(STREAM, params={"jobs": theirs})
    assert only_theirs.status_code == 404 and only_theirs.json()["detail"] == "job not found"


async def test_bad_input_and_the_limits(settings: Settings) -> None:
    limited = settings.replace(max_streams_per_user=2, max_jobs_per_stream=50)
    async with serving(limited) as server:
        client = server.client()
        jobs = [await server.create_job(client, name=f"j{i}") for i in range(51)]
        for params, field in (
            ({}, "jobs"),
            ({"jobs": ""}, "jobs"),
            ({"jobs": f"{jobs[0]},{jobs[0]}"}, "jobs"),
            ({"jobs": f"{jobs[0]}:x"}, "jobs"),
            ({"jobs": "a b"}, "jobs"),
            ({"jobs": ",".join(jobs)}, "jobs"),  # 51 > max_jobs_per_stream
        ):
            r = await client.get(STREAM, params=params)
            assert r.status_code == 400 and r.json()["field"] == field, (params, r.text)
        bad_cursor = await client.get(
            STREAM, params={"jobs": jobs[0]}, headers={"Last-Event-ID": "nope:"}
        )
        assert bad_cursor.status_code == 400 and bad_cursor.json()["field"] == "Last-Event-ID"
        assert (await client.get(STREAM, params={"jobs": f"{jobs[0]}:5"})).status_code == 416
        # 50 jobs on one connection are one stream; a second stream fits, a third does not.
        fifty = asyncio.create_task(MultiReader(server.url, server.key, jobs[:50]).read())
        await wait_until(lambda: server.resources.streams.groups != set())
        group = next(iter(server.resources.streams.groups))
        await wait_until(lambda: group.members == 50)
        assert server.resources.streams.slots.count(1) == 1
        single = server.sse(jobs[50])
        single_task = asyncio.create_task(single.collect(limit=1))
        await wait_until(lambda: server.resources.streams.slots.count(1) == 2)
        third = await client.get(STREAM, params={"jobs": jobs[0]})
        assert third.status_code == 429, third.text
        for job in jobs:
            await client.patch(f"/api/v1/jobs/{job}", json={"status": "cancelled"})
        async with asyncio.timeout(10):
            await asyncio.gather(fifty, single_task)
        await wait_until(lambda: server.resources.streams.slots.count(1) == 0)


async def test_a_deleted_job_ends_alone_and_an_ended_set_is_204(server: LiveServer) -> None:
    client = server.client()
    a, b = await server.create_job(client), await server.create_job(client)
    reader = MultiReader(server.url, server.key, [a, b])
    task = asyncio.create_task(reader.read())
    await wait_until(lambda: server.resources.hub.subscriber_count == 2)
    await client.delete(f"/api/v1/jobs/{a}")
    await wait_until(lambda: a in reader.ended)
    assert reader.ended == {a: "deleted"} and not task.done()
    await client.post(f"/api/v1/jobs/{b}/events", json={"type": "complete", "success": True})
    async with asyncio.timeout(10):
        await task
    assert reader.ended == {a: "deleted", b: "complete"} and reader.got == {b: [0]}
    again = await client.get(STREAM, params={"jobs": b}, headers={"Last-Event-ID": f"{b}:1"})
    assert again.status_code == 204


async def test_websocket_subscribes_and_unsubscribes_without_reconnecting(
    server: LiveServer,
) -> None:
    client = server.client()
    a, b, c = [await server.create_job(client, name=n) for n in "abc"]
    for job in (a, b):
        await client.post(f"/api/v1/jobs/{job}/events", json={"data": f"{job} 0\n"})
    got: list[dict[str, Any]] = []

    async def until(ws: Any, predicate: Any) -> None:
        async with asyncio.timeout(10):
            while not any(predicate(m) for m in got):
                got.extend(frame_lines(await ws.recv()))

    async with ws_connect(server.ws_url, STREAM_WS, server.key, {"jobs": a}) as ws:
        await until(ws, lambda m: m.get("job_id") == a and m.get("index") == 0)
        await ws.send('{"subscribe": "%s", "from_index": 1}' % b)  # noqa: UP031
        await ws.send('{"subscribe": "%s", "tail": 1}' % b)  # noqa: UP031 - already: 409
        await ws.send('{"subscribe": "nosuchjob12345"}')
        await ws.send('{"subscribe": 5}')
        await until(ws, lambda m: m.get("type") == "_error" and m["problem"]["status"] == 400)
        await client.post(f"/api/v1/jobs/{b}/events", json={"data": f"{b} 1\n"})
        await until(ws, lambda m: m.get("job_id") == b and m.get("index") == 1)
        await ws.send('{"unsubscribe": "%s"}' % a)  # noqa: UP031
        await until(ws, lambda m: m.get("type") == "_end" and m["job_id"] == a)
        await client.post(f"/api/v1/jobs/{a}/events", json={"data": "unseen\n"})
        await ws.send('{"subscribe": "%s"}' % c)  # noqa: UP031
        await client.post(f"/api/v1/jobs/{c}/events", json={"type": "complete", "success": True})
        await until(ws, lambda m: m.get("type") == "_end" and m["job_id"] == c)
    events = [(m["job_id"], m["index"]) for m in got if "index" in m]
    assert events == [(a, 0), (b, 1), (c, 0)]
    controls = [(m["type"], m["job_id"]) for m in got if "index" not in m]
    assert controls[0] == ("_subscribed", a) and ("_subscribed", b) in controls
    errors = {m["job_id"]: m["problem"]["status"] for m in got if m.get("type") == "_error"}
    assert errors == {b: 409, "nosuchjob12345": 404, None: 400}
    ends = {m["job_id"]: (m["reason"], m["next_index"]) for m in got if m.get("type") == "_end"}
    assert ends == {a: ("unsubscribed", 1), c: ("complete", 1)}
    await wait_until(lambda: not server.resources.streams.groups)
    await wait_until(lambda: server.resources.hub.subscriber_count == 0)


@pytest.mark.parametrize("boundary", ["after_subscribe", "after_replay"])
async def test_appends_during_a_paused_boundary_reach_a_multi_job_reader_once(
    settings: Settings, boundary: str
) -> None:
    """Each job's follow paused exactly at its boundary while all three are written."""
    paused, release = asyncio.Event(), asyncio.Event()
    waiting: set[str] = set()

    async def pause(job_id: str) -> None:
        waiting.add(job_id)
        if len(waiting) == 3:
            paused.set()
        await release.wait()

    async with serving(settings, hooks=ReadHooks(**{boundary: pause})) as server:
        client = server.client()
        jobs = [await server.create_job(client) for _ in range(3)]
        for job in jobs:
            await append_all(client, job, "before", 4)
        reader = MultiReader(server.url, server.key, jobs)
        task = asyncio.create_task(reader.read(",".join(f"{j}:2" for j in jobs)))
        await asyncio.wait_for(paused.wait(), 10)
        for job in jobs:  # every follow is between subscribe and replay (or replay and live)
            await append_all(client, job, "during", 5)
        release.set()
        for job in jobs:
            await append_all(client, job, "after", 3)
            done = {"type": "complete", "success": True}
            await client.post(f"/api/v1/jobs/{job}/events", json=done)
        async with asyncio.timeout(20):
            await task
    assert reader.got == {job: list(range(2, 13)) for job in jobs}


async def append_all(client: Any, job: str, label: str, n: int) -> None:
    events = [{"data": f"{label} {i}\n"} for i in range(n)]
    r = await client.post(f"/api/v1/jobs/{job}/events", json={"events": events})
    assert r.status_code == 201, r.text


async def test_a_websocket_following_nothing_still_ends_on_revocation_and_shutdown(
    settings: Settings,
) -> None:
    """The connection, not only its follows, is tracked: an idle multi-job WebSocket
    holds its slot, closes 4401 when its key is revoked, 1012 on shutdown."""
    async with serving(settings.replace(auth_recheck_seconds=0.2)) as server:
        identity = server.resources.storage.identity
        user = await keys.verify_key(identity, server.key)
        doomed = await keys.issue_key(identity, user.id, "doomed")
        async with ws_connect(server.ws_url, STREAM_WS, doomed) as ws:
            await wait_until(lambda: server.resources.streams.slots.count(user.id) == 1)
            key = next(k for k in await identity.list_keys(user.id) if k.name == "doomed")
            assert await identity.revoke_key(key.id)
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 4401
        await wait_until(lambda: server.resources.streams.slots.count(user.id) == 0)
        async with ws_connect(server.ws_url, STREAM_WS, server.key) as ws:
            await wait_until(lambda: server.resources.streams.slots.count(user.id) == 1)
            stopping = asyncio.create_task(server.stop())
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1012
            await stopping


@pytest.mark.slow
async def test_many_readers_of_many_jobs_get_each_job_exactly_once(settings: Settings) -> None:
    """The random-subset test at a larger size: 40 jobs, 60 readers of up to 30."""
    async with serving(settings.replace(max_jobs_per_stream=30)) as server:
        rng = random.Random(15)
        client = server.client()
        jobs = [await server.create_job(client, name=f"s{i}") for i in range(40)]
        totals = {job: rng.randint(200, 800) for job in jobs}
        writers = [
            asyncio.create_task(produce(server, j, totals[j], i)) for i, j in enumerate(jobs)
        ]
        readers = []
        for _ in range(60):
            subset = rng.sample(jobs, rng.randint(1, 30))
            reader = MultiReader(server.url, server.key, subset)
            readers.append(
                (
                    reader,
                    asyncio.create_task(
                        read_until_done(reader, reader.positions(), rng, (200, 3000))
                    ),
                )
            )
            await asyncio.sleep(rng.random() * 0.05)
        async with asyncio.timeout(600):
            await asyncio.gather(*writers)
            await asyncio.gather(*(task for _, task in readers))
        for reader, _ in readers:
            for job in reader.jobs:
                assert reader.got.get(job, []) == list(range(totals[job] + 1)), job
