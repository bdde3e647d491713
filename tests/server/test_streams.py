"""Every detail of API.md's SSE and WebSocket sections, and the text log."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from streamer.server.settings import Settings

from ..support.clients import parse_sse, ws_collect, ws_refused
from ..support.live import LiveServer


async def job_with(live_server: LiveServer, n: int, complete: bool | None = None) -> str:
    client = live_server.client()
    job = await live_server.create_job()
    if n:
        events = [{"data": f"line {i}\n"} for i in range(n)]
        r = await client.post(f"/api/v1/jobs/{job}/events", json={"events": events})
        assert r.status_code == 201
    if complete is not None:
        r = await client.post(
            f"/api/v1/jobs/{job}/events", json={"type": "complete", "success": complete}
        )
        assert r.status_code == 201
    return job


def stream_url(live_server: LiveServer, job: str) -> str:
    return f"/api/v1/jobs/{job}/events/stream"


# --- SSE ------------------------------------------------------------------------------


async def test_sse_headers_and_one_message_per_event(live_server: LiveServer) -> None:
    job = await job_with(live_server, 2, complete=False)
    sse = live_server.sse(job)
    messages = await sse.collect()
    assert sse.headers is not None
    assert sse.headers["content-type"].startswith("text/event-stream")
    assert sse.headers["cache-control"] == "no-cache"
    assert sse.headers["x-accel-buffering"] == "no"
    assert [(m.id, m.event) for m in messages] == [("0", "log"), ("1", "log"), ("2", "complete")]
    first = messages[0].json()
    assert first["data"] == "line 0\n" and first["success"] is None
    assert first["timestamp"].endswith("Z") and len(first["timestamp"]) == 27
    assert messages[2].json()["success"] is False


async def test_sse_data_with_newlines_stays_one_data_line(live_server: LiveServer) -> None:
    """Event JSON is one line, so CR/LF in data can never split or inject SSE fields."""
    job = await live_server.create_job()
    client = live_server.client()
    nasty = "a\r\nid: 99\nevent: complete\r\rdata: x\n\n"
    await client.post(f"/api/v1/jobs/{job}/events", json={"data": nasty})
    await client.post(f"/api/v1/jobs/{job}/events", json={"type": "complete", "success": True})
    messages = await live_server.sse(job).collect()
    assert [m.id for m in messages] == ["0", "1"]
    assert messages[0].json()["data"] == nasty


async def test_last_event_id_wins_over_from_index(live_server: LiveServer) -> None:
    job = await job_with(live_server, 10, complete=True)
    messages = await live_server.sse(job, from_index=2).collect(last_event_id="6")
    assert [m.id for m in messages] == ["7", "8", "9", "10"]


async def test_tail_starts_n_events_before_the_end(live_server: LiveServer) -> None:
    job = await job_with(live_server, 10, complete=True)
    assert [m.id for m in await live_server.sse(job, tail=3).collect()] == ["8", "9", "10"]
    assert len(await live_server.sse(job, tail=1000).collect()) == 11
    async with live_server.ws(job, tail=2) as ws:
        assert [e["index"] for e in await ws_collect(ws)] == [9, 10]
    log = await live_server.client().get(f"/api/v1/jobs/{job}/log", params={"tail": 2})
    assert log.text == "line 9\n"


async def test_finished_job_replays_and_ends_at_once(live_server: LiveServer) -> None:
    job = await job_with(live_server, 3, complete=True)
    messages = await asyncio.wait_for(live_server.sse(job).collect(), 10)
    assert len(messages) == 4 and messages[-1].event == "complete"


async def test_reader_past_complete_gets_204(live_server: LiveServer) -> None:
    job = await job_with(live_server, 3, complete=True)
    sse = live_server.sse(job, from_index=4)
    assert await sse.collect() == [] and sse.status == 204
    sse = live_server.sse(job)
    assert await sse.collect(last_event_id="3") == [] and sse.status == 204


async def test_from_index_equal_to_next_index_tails_from_now(live_server: LiveServer) -> None:
    job = await job_with(live_server, 3)
    reader = asyncio.create_task(live_server.sse(job, from_index=3).collect())
    client = live_server.client()
    # Wait until the reader is subscribed before appending (no sleep: poll the hub).
    while live_server.resources.hub.subscriber_count == 0:
        await asyncio.sleep(0.005)
    await client.post(f"/api/v1/jobs/{job}/events", json={"data": "new\n"})
    await client.post(f"/api/v1/jobs/{job}/events", json={"type": "complete", "success": True})
    assert [m.id for m in await asyncio.wait_for(reader, 10)] == ["3", "4"]


async def test_cursor_beyond_next_index_is_416_naming_it(live_server: LiveServer) -> None:
    job = await job_with(live_server, 3)
    for path in ("events/stream", "log", "events"):
        r = await live_server.client().get(f"/api/v1/jobs/{job}/{path}", params={"from_index": 4})
        assert r.status_code == 416, path
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["next_index"] == 3 and "3" in r.json()["detail"]


@pytest.mark.parametrize("bad", ["-1", "abc", "1.5", "1e3", "99999999999999999999", "+1", "0x10"])
async def test_malformed_cursor_is_400(live_server: LiveServer, bad: str) -> None:
    job = await job_with(live_server, 3)
    client = live_server.client()
    for params in ({"from_index": bad}, {"tail": bad}):
        r = await client.get(stream_url(live_server, job), params=params)
        assert r.status_code == 400, (params, r.text)
        assert r.json()["field"] in params
    r = await client.get(stream_url(live_server, job), headers={"Last-Event-ID": bad})
    assert r.status_code == 400 and r.json()["field"] == "Last-Event-ID"


async def test_keepalive_comment_carries_the_next_index(settings: Settings) -> None:
    server = LiveServer(settings.replace(keepalive_seconds=0.2))
    await server.start()
    try:
        server.key = await server.new_user("owner")
        job = await job_with(server, 2)
        comments: list[str] = []
        async with (
            httpx.AsyncClient(timeout=10) as client,
            client.stream(
                "GET",
                f"{server.url}/api/v1/jobs/{job}/events/stream",
                headers={"Authorization": f"Bearer {server.key}"},
            ) as response,
        ):
            async for item in parse_sse(response.aiter_bytes()):
                if isinstance(item, str):
                    comments.append(item)
                    if item.startswith("keepalive"):
                        break
        assert comments[0] == "connected next_index=0"
        assert comments[-1] == "keepalive next_index=2"
    finally:
        for c in server.clients:
            await c.aclose()
        await server.stop()


async def test_stream_ends_when_the_job_is_cancelled(live_server: LiveServer) -> None:
    """A job made final by PATCH gets a server-appended complete event; readers end."""
    job = await job_with(live_server, 1)
    reader = asyncio.create_task(live_server.sse(job).collect())
    r = await live_server.client().patch(f"/api/v1/jobs/{job}", json={"status": "cancelled"})
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    messages = await asyncio.wait_for(reader, 10)
    assert [m.event for m in messages] == ["log", "complete"]
    assert messages[-1].json()["success"] is False


async def test_deleting_a_job_ends_its_streams(live_server: LiveServer) -> None:
    job = await job_with(live_server, 1)
    sse = asyncio.create_task(live_server.sse(job).collect())
    async with live_server.ws(job) as ws:
        while live_server.resources.hub.subscriber_count < 2:
            await asyncio.sleep(0.005)
        assert (await live_server.client().delete(f"/api/v1/jobs/{job}")).status_code == 204
        await asyncio.wait_for(ws_collect(ws), 10)
        assert ws.close_code == 4404
    assert len(await asyncio.wait_for(sse, 10)) == 1


# --- WebSocket ------------------------------------------------------------------------


async def test_ws_frames_hold_newline_separated_events_and_close_1000(
    live_server: LiveServer,
) -> None:
    job = await job_with(live_server, 50, complete=True)
    frames: list[str] = []
    async with live_server.ws(job) as ws:
        async for frame in ws:
            frames.append(frame)
        assert ws.close_code == 1000
    events = [json.loads(line) for frame in frames for line in frame.split("\n")]
    assert [e["index"] for e in events] == list(range(51))
    assert len(frames) < 51, "a replay should coalesce events into few frames"


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"from_index": "-1"}, 400, "from_index"),
        ({"from_index": "9"}, 416, "from_index"),
        ({"tail": "x"}, 400, "tail"),
    ],
)
async def test_ws_bad_cursor_is_refused_at_the_handshake_naming_the_field(
    live_server: LiveServer, params: dict[str, str], status: int, field: str
) -> None:
    job = await job_with(live_server, 3)
    got, problem = await ws_refused(live_server.ws_url, job, live_server.key, params)
    assert (got, problem["status"], problem["field"]) == (status, status, field)


async def test_ws_missing_job_and_bad_key_are_refused_404_and_401(live_server: LiveServer) -> None:
    status, problem = await ws_refused(live_server.ws_url, "nope", live_server.key, {})
    assert status == problem["status"] == 404
    job = await job_with(live_server, 1)
    assert (await ws_refused(live_server.ws_url, job, "stk_bad", {}))[0] == 401


async def test_ws_past_complete_closes_1000_at_once(live_server: LiveServer) -> None:
    job = await job_with(live_server, 2, complete=True)
    async with live_server.ws(job, from_index=3) as ws:
        assert await ws_collect(ws) == []
        assert ws.close_code == 1000


async def test_ws_foreign_origin_is_refused(live_server: LiveServer) -> None:
    job = await job_with(live_server, 1)
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(
            f"{live_server.ws_url}/api/v1/jobs/{job}/events/ws",
            additional_headers={"Authorization": f"Bearer {live_server.key}"},
            origin=websockets.Origin("http://evil.example"),
        ):
            pass
    assert refused.value.response.status_code == 403


# --- text log -------------------------------------------------------------------------


async def test_text_log_without_follow_returns_stored_data_and_ends(
    live_server: LiveServer,
) -> None:
    job = await job_with(live_server, 3)  # not complete: must still end
    r = await asyncio.wait_for(live_server.client().get(f"/api/v1/jobs/{job}/log"), 10)
    assert r.text == "line 0\nline 1\nline 2\n"
    r = await live_server.client().get(f"/api/v1/jobs/{job}/log", params={"from_index": 1})
    assert r.text == "line 1\nline 2\n"


async def test_text_log_rejects_a_bad_follow_flag(live_server: LiveServer) -> None:
    job = await job_with(live_server, 1)
    r = await live_server.client().get(f"/api/v1/jobs/{job}/log", params={"follow": "maybe"})
    assert r.status_code == 400 and r.json()["field"] == "follow"
