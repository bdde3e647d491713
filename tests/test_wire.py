"""The fan-out fast path (streamer/wire.py): frames are exact, and the sinks are there.

The sinks reach into uvicorn's protocol objects; if an uvicorn upgrade moves what they
use, these tests fail instead of every delivery silently taking the slow path.
"""

from __future__ import annotations

import asyncio

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from streamer.models import Event, ws_text_frame

from .clients import ws_collect
from .conftest import LiveServer, wait_until


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65_535, 65_536, 200_000])
def test_ws_text_frame_parses_back_as_one_final_unmasked_text_frame(size: int) -> None:
    payload = b"x" * size
    reader = StreamReader()
    reader.feed_data(ws_text_frame(payload))
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame = done.value
    else:  # pragma: no cover - the parser wanted more bytes than the frame has
        raise AssertionError("incomplete frame")
    assert (frame.opcode, frame.fin, frame.data) == (Opcode.TEXT, True, payload)
    assert not (frame.rsv1 or frame.rsv2 or frame.rsv3)


def test_event_wire_forms_are_built_once_and_agree() -> None:
    event = Event(7, "log", b'{"index":7}')
    assert event.sse == b'id: 7\nevent: log\ndata: {"index":7}\n\n'
    assert event.sse_chunk == b"%x\r\n%s\r\n" % (len(event.sse), event.sse)
    assert event.ws_frame == ws_text_frame(event.line)
    assert event.sse_chunk is event.sse_chunk and event.ws_frame is event.ws_frame


async def test_live_events_reach_sse_and_ws_readers_straight_from_publish(
    live_server: LiveServer,
) -> None:
    job = await live_server.create_job()
    client = live_server.client()
    hub = live_server.ctx.hub

    async def sse_reader() -> list[int]:
        return [m.json()["index"] for m in await live_server.sse(job).collect()]

    async def ws_reader() -> list[int]:
        async with live_server.ws(job) as ws:
            return [e["index"] for e in await ws_collect(ws)]

    readers = [asyncio.create_task(sse_reader()), asyncio.create_task(ws_reader())]
    await wait_until(lambda: hub.subscriber_count == 2)
    for i in range(20):
        r = await client.post(f"/api/v1/jobs/{job}/events", json={"data": f"{i}\n"})
        assert r.status_code == 201
    r = await client.post(f"/api/v1/jobs/{job}/events", json={"type": "complete", "success": True})
    assert r.status_code == 201
    for reader in readers:
        assert await asyncio.wait_for(reader, 20) == list(range(21))
    # Both readers were parked and caught up: nearly every delivery went direct.
    assert hub.direct_events >= 30, hub.direct_events
