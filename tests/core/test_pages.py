"""Replay pages shared between readers (streamer/pages.py): full pages only, and exact."""

from __future__ import annotations

import asyncio

from ..support.clients import ws_collect
from ..support.live import LiveServer


async def fill(live_server: LiveServer, job: str, n: int, *, complete: bool = False) -> None:
    client = live_server.client()
    events = [{"data": f"line {i}\n"} for i in range(n)]
    r = await client.post(f"/api/v1/jobs/{job}/events", json={"events": events})
    assert r.status_code == 201, r.text
    if complete:
        r = await client.post(
            f"/api/v1/jobs/{job}/events", json={"type": "complete", "success": True}
        )
        assert r.status_code == 201, r.text


async def test_readers_asking_for_the_same_page_share_one_read(
    live_server: LiveServer,
) -> None:
    job = await live_server.create_job()
    await fill(live_server, job, 10)
    pages, storage = live_server.resources.hub.pages, live_server.resources.storage.jobs
    since = pages.stamp()
    (first, _, _), (second, _, _) = await asyncio.gather(
        pages.read(storage, job, 0, 5, since), pages.read(storage, job, 0, 5, since)
    )
    assert [e.index for e in first] == [0, 1, 2, 3, 4]
    assert second is first, "the second reader should have waited for the first's read"
    assert pages.hits == 1


async def test_a_short_shared_page_ends_the_log_only_for_readers_subscribed_before_it(
    live_server: LiveServer,
) -> None:
    """A page that ended at the head of the log may be stale for a later subscriber:
    it still gets the page, but is told to read on from its end."""
    job = await live_server.create_job()
    await fill(live_server, job, 10)
    pages, storage = live_server.resources.hub.pages, live_server.resources.storage.jobs
    early = pages.stamp()  # a reader that subscribed before the read below
    short, _, is_end = await pages.read(storage, job, 0, 20, early)
    assert len(short) == 10 and is_end, "a reader's own read is always the end for it"
    shared, _, is_end = await pages.read(storage, job, 0, 20, early)
    assert shared is short and is_end
    await fill(live_server, job, 5)
    late = pages.stamp()  # subscribed after the short page was read
    shared, _, is_end = await pages.read(storage, job, 0, 20, late)
    assert shared is short and not is_end
    assert pages.hits == 2
    # What the late reader does next: read on from the page's end, by itself.
    rest, _, is_end = await pages.read(storage, job, 10, 20, late)
    assert [e.index for e in rest] == [10, 11, 12, 13, 14] and is_end


async def test_a_deleted_jobs_pages_are_dropped(live_server: LiveServer) -> None:
    job = await live_server.create_job()
    await fill(live_server, job, 10, complete=True)
    pages, storage = live_server.resources.hub.pages, live_server.resources.storage.jobs
    assert len((await pages.read(storage, job, 0, 5, pages.stamp()))[0]) == 5
    r = await live_server.client().delete(f"/api/v1/jobs/{job}")
    assert r.status_code == 204, r.text
    assert (await pages.read(storage, job, 0, 5, pages.stamp()))[0] == []


async def test_a_reconnect_storm_reads_each_page_once_and_every_reader_is_exact(
    live_server: LiveServer,
) -> None:
    """90 SSE and WebSocket readers (under the per-user stream limit), each 300 events
    behind a completed job's end, arrive at once: the short last page is shared too."""
    job = await live_server.create_job()
    await fill(live_server, job, 1000, complete=True)

    async def sse_reader() -> list[int]:
        messages = await live_server.sse(job, from_index=700).collect()
        return [m.json()["index"] for m in messages]

    async def ws_reader() -> list[int]:
        async with live_server.ws(job, from_index=700) as ws:
            return [e["index"] for e in await ws_collect(ws)]

    readers = [sse_reader() if i % 2 else ws_reader() for i in range(90)]
    for indexes in await asyncio.wait_for(asyncio.gather(*readers), 60):
        assert indexes == list(range(700, 1001))
    assert live_server.resources.hub.pages.hits > 0


async def test_reopening_a_stream_reads_past_a_shared_page_that_is_not_its_end(
    live_server: LiveServer,
) -> None:
    """Each reopened stream finds the previous reader's short last page shared, is told
    it may not be its end, and reads on by itself (once: its own read is its end).
    A long TTL keeps every page shared for the whole test."""
    live_server.resources.hub.pages.ttl = 600.0
    job = await live_server.create_job()
    await fill(live_server, job, 3)
    client = live_server.client()
    for _ in range(5):
        async with client.stream("GET", f"/api/v1/jobs/{job}/events/stream") as r:
            assert r.status_code == 200
            lines = r.aiter_lines()
            ids = []
            while len(ids) < 3:
                line = await asyncio.wait_for(anext(lines), 10)
                if line.startswith("id: "):
                    ids.append(int(line[4:]))
            assert ids == [0, 1, 2]
    assert live_server.resources.hub.pages.hits >= 4


async def test_kept_pages_stay_under_the_byte_bound(live_server: LiveServer) -> None:
    """A lone reader of a long log must not leave its whole replay in the cache."""
    job = await live_server.create_job()
    await fill(live_server, job, 200)
    pages, storage = live_server.resources.hub.pages, live_server.resources.storage.jobs
    pages.max_bytes = 4_000
    first, size, _ = await pages.read(storage, job, 0, 10, 0)
    assert size == sum(len(e.line) for e in first), "a page carries its lines' size"
    one_page = 2 * size
    assert 0 < one_page < pages.max_bytes
    for start in range(10, 200, 10):
        page, _, _ = await pages.read(storage, job, start, 10, pages.stamp())
        assert [e.index for e in page] == list(range(start, start + 10))
        assert pages.held_bytes <= pages.max_bytes
    assert pages.held_bytes > pages.max_bytes - one_page, "the newest pages are kept"
