"""The change feed (GET /api/v1/jobs/changes and its WebSocket) on a real server.

Both paths (the lean server, and uvicorn through the framework). The big one: random
creates, status changes, appends and deletes from several producers while readers
drop and resume at random sequence numbers; every reader's list ends equal to
storage's, and no connection repeats or misses a change it should carry.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from streamer.core.changes import feed_key
from streamer.server.settings import Settings

from ..support.feeds import (
    LAST,
    FeedReader,
    FeedView,
    StreamRefused,
    all_jobs,
    frame_lines,
    random_writes,
    sse_messages,
    ws_connect,
)
from ..support.live import LiveServer, serving, wait_until

FEED = "/api/v1/jobs/changes"
FEED_WS = "/api/v1/jobs/changes/ws"


@pytest.fixture(params=[True, False], ids=["lean", "asgi"])
async def server(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[LiveServer]:
    fast = settings.replace(feed_growth_interval_seconds=0.05)
    async with serving(fast, lean=request.param) as live:
        yield live


async def changes(
    server: LiveServer,
    n: int | None,
    key: str | None = None,
    until: str | None = None,
    **params: Any,
) -> list[Any]:
    """Messages of one feed connection: the first ``n``, or up to the one whose id is
    ``until`` (bounded in time)."""
    out = []
    headers = params.pop("headers", None)
    async with asyncio.timeout(10):
        async for message in sse_messages(server.url, FEED, key or server.key, params, headers):
            out.append(message)
            if len(out) == n or message.id == until:
                break
    return out


async def test_snapshot_then_changes_then_exact_resume(server: LiveServer) -> None:
    client = server.client()
    first = [await server.create_job(client, name=f"j{i}") for i in range(3)]
    reader = asyncio.create_task(changes(server, None, until="6", snapshot="true"))
    fourth = await server.create_job(client, name="j3")  # the snapshot may come before or
    await client.patch(f"/api/v1/jobs/{fourth}", json={"status": "running"})  # after any
    await client.delete(f"/api/v1/jobs/{first[0]}")  # of these: each shows exactly once
    got = await reader
    assert got[0].event == "snapshot" and "snapshot" not in [m.event for m in got[1:]]
    head = int(got[0].id)
    assert [int(m.id) for m in got[1:]] == list(range(head + 1, 7))
    view = FeedView()
    for message in got:
        view.apply(message)
    assert set(view.jobs) == {*first[1:], fourth} and view.jobs[fourth]["status"] == "running"
    # Resume after each point: exactly the changes after it, once, in order; no snapshot.
    for point in range(0, 6):
        resumed = await changes(server, 6 - point, headers={"Last-Event-ID": str(point)})
        assert [int(m.id) for m in resumed] == list(range(point + 1, 7))
        after = await changes(server, 6 - point, after=str(point))
        assert [m.id for m in after] == [m.id for m in resumed]
    with_both = await changes(server, 1, snapshot="true", headers={"Last-Event-ID": "5"})
    assert [m.id for m in with_both] == ["6"]  # a reconnect resumes; no second snapshot


async def test_resume_points_past_the_head_or_dropped_are_refused_clearly(
    settings: Settings,
) -> None:
    async with serving(settings.replace(feed_keep_changes=4)) as server:
        client = server.client()
        for i in range(10):
            await server.create_job(client, name=f"j{i}")
        head, floor = await server.resources.storage.changes.head(1)
        assert head == 10 and floor > 0
        ahead = await client.get(FEED, params={"after": "11"})
        assert ahead.status_code == 416 and ahead.json()["head"] == 10
        gone = await client.get(FEED, headers={"Last-Event-ID": "1"})
        assert gone.status_code == 410, gone.text
        problem = gone.json()
        assert problem["oldest"] == floor and "snapshot=true" in problem["detail"]
        assert gone.headers["content-type"] == "application/problem+json"
        kept = await changes(server, 10 - floor, after=str(floor))
        assert [int(m.id) for m in kept] == list(range(floor + 1, 11))
        for bad in ({"after": "-1"}, {"after": "x"}, {"snapshot": "maybe"}):
            r = await client.get(FEED, params=bad)
            assert r.status_code == 400 and r.json()["field"] in bad, r.text
        both = await client.get(FEED, params={"after": "3", "snapshot": "true"})
        assert both.status_code == 400 and both.json()["field"] == "after"


async def test_each_user_sees_only_their_jobs_and_needs_an_api_key(live_server: LiveServer) -> None:
    other = await live_server.new_user("other")
    theirs = live_server.client(other)
    first = await live_server.create_job(theirs, name="theirs")
    reader = asyncio.create_task(changes(live_server, None, other, until="2", snapshot="true"))
    await wait_until(lambda: bool(live_server.resources.streams.open_streams))
    await live_server.create_job(name="not yours")
    second = await live_server.create_job(theirs, name="theirs too")
    got = await reader
    assert [j["id"] for j in got[0].json()["jobs"]] == [first]
    assert [m.json()["job"]["id"] for m in got[1:]] == [second]
    assert (await live_server.client("").get(FEED)).status_code == 401
    token = (await theirs.post(f"/api/v1/jobs/{first}/stream-tokens")).json()["token"]
    refused = await live_server.client("").get(FEED, params={"token": token})
    assert refused.status_code == 401  # a stream token opens one job's streams, not a feed


async def test_websocket_snapshot_first_then_live_changes(server: LiveServer) -> None:
    client = server.client()
    job = await server.create_job(client, name="a")
    async with ws_connect(server.ws_url, FEED_WS, server.key, {"snapshot": "true"}) as ws:
        snapshot = frame_lines(await asyncio.wait_for(ws.recv(), 5))[0]
        assert snapshot["type"] == "snapshot" and [j["id"] for j in snapshot["jobs"]] == [job]
        await client.post(f"/api/v1/jobs/{job}/events", json={"data": "x\n"})
        await client.patch(f"/api/v1/jobs/{job}", json={"status": "cancelled"})
        seen: list[dict[str, Any]] = []
        while len(seen) < 2:
            seen += frame_lines(await asyncio.wait_for(ws.recv(), 5))
    assert [(c["seq"], c["type"], c["job"]["status"]) for c in seen] == [
        (2, "updated", "running"),
        (3, "updated", "cancelled"),
    ]
    async with ws_connect(server.ws_url, FEED_WS, server.key, {"after": "2"}) as ws:
        assert frame_lines(await asyncio.wait_for(ws.recv(), 5))[0]["seq"] == 3
    refused = ws_connect(server.ws_url, FEED_WS, server.key, {"after": "9"})
    with pytest.raises(Exception) as caught:  # noqa: PT011 - websockets' InvalidStatus
        async with refused:
            pass
    assert getattr(caught.value, "response").status_code == 416  # noqa: B009


async def test_a_feed_is_one_stream_against_the_limit(settings: Settings) -> None:
    async with serving(settings.replace(max_streams_per_user=1)) as server:
        reader = asyncio.create_task(changes(server, 1))
        await wait_until(lambda: server.resources.streams.slots.count(1) == 1)
        second = await server.client().get(FEED)
        assert second.status_code == 429, second.text
        await server.create_job(name="frees the slot")
        await reader
        async with asyncio.timeout(5):  # the slot is released when the feed ends
            while server.resources.streams.slots.count(1):
                await asyncio.sleep(0.01)


# --- the random test --------------------------------------------------------------------


async def test_random_writers_and_resuming_readers_end_with_storage_s_list(
    server: LiveServer,
) -> None:
    """3 writers, 4 readers dropping and resuming at random sequence numbers; then the
    trailing growth of every job is recorded by the sweep, and one last job created:
    each reader's list equals storage's, event counts included."""
    readers = [FeedReader([server.url], server.key, seed) for seed in range(4)]
    tasks = [asyncio.create_task(r.run()) for r in readers]
    async with asyncio.timeout(90):
        await asyncio.gather(*(random_writes(server.client(), seed, 40) for seed in range(3)))
        changes_of = server.resources.storage.changes
        while await changes_of.pending_growth(2**62, 10):  # the trailing growth sweep
            await asyncio.sleep(0.02)
        await server.create_job(name=LAST)
        await asyncio.gather(*tasks)
    # What storage keeps now: a grew change superseded meanwhile is gone (every change
    # carries the whole job), and a reader that read after that never saw it.
    kept = [e.index for e in await changes_of.read_rows(feed_key(1), 0, 100_000)]
    truth = await all_jobs(server.client())
    for reader in readers:
        reader.check(truth, kept)
    assert len(kept) > 50


async def test_the_last_growth_of_a_burst_arrives(settings: Settings) -> None:
    """Appends inside the growth interval record nothing; the sweep records the last."""
    async with serving(settings.replace(feed_growth_interval_seconds=1.0)) as server:
        client = server.client()
        job = await server.create_job(client)
        got: list[Any] = []

        async def read() -> None:
            async for message in sse_messages(server.url, FEED, server.key, {"after": "1"}):
                got.append(message.json())
                if message.json()["job"]["event_count"] == 21:
                    return

        reader = asyncio.create_task(read())
        for i in range(21):  # the first starts the job (updated), the rest are held back
            await client.post(f"/api/v1/jobs/{job}/events", json={"data": f"{i}\n"})
        async with asyncio.timeout(10):
            await reader
    assert [(c["type"], c["job"]["event_count"]) for c in got] == [("updated", 1), ("grew", 21)]


async def test_a_refused_stream_says_why(live_server: LiveServer) -> None:
    with pytest.raises(StreamRefused) as refused:
        async for _ in sse_messages(live_server.url, FEED, live_server.key, {"after": "1"}):
            pass
    assert refused.value.status == 416
    client = httpx.AsyncClient(base_url=live_server.url)
    async with client:
        assert (await client.get(FEED)).status_code == 401
