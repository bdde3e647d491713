"""The socket fast path (streamer/server/fastpath/): frames are exact, and the sinks
find in uvicorn's protocol objects every attribute they read.

The sinks reach into uvicorn's internals; if an upgrade moves what they use,
``test_the_sinks_find_every_uvicorn_attribute_they_read`` names it, instead of every
delivery silently taking the slow path.
"""

from __future__ import annotations

import asyncio

import pytest
import uvicorn
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from streamer.core.models import Event
from streamer.server.fastpath import frames, protocols
from streamer.server.fastpath.frames import ws_text_frame
from streamer.server.fastpath.sinks import HTTP_CYCLE_READS, WS_PROTOCOL_READS

from ..support.clients import ws_collect
from ..support.live import LiveServer, wait_until


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
    sse = frames.sse_message(event)
    assert sse == b'id: 7\nevent: log\ndata: {"index":7}\n\n'
    assert frames.sse_chunk(event) == b"%x\r\n%s\r\n" % (len(sse), sse)
    assert frames.ws_frame(event) == ws_text_frame(event.line)
    assert frames.sse_chunk(event) is frames.sse_chunk(event)
    assert frames.ws_frame(event) is frames.ws_frame(event)


async def test_live_events_reach_sse_and_ws_readers_straight_from_publish(
    live_server: LiveServer,
) -> None:
    job = await live_server.create_job()
    client = live_server.client()
    hub = live_server.resources.hub

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


async def test_the_sinks_find_every_uvicorn_attribute_they_read(live_server: LiveServer) -> None:
    job = await live_server.create_job()
    streams = live_server.resources.streams
    async with live_server.ws(job):
        sse = asyncio.create_task(live_server.sse(job).collect())
        await wait_until(lambda: len(streams.open_streams) == 2)
        sinks = {f.transport: f.direct.sink for f in streams.open_streams if f.direct}  # type: ignore[attr-defined]
        assert set(sinks) == {"sse", "ws"}, "the server gave no sink: the fast path is off"
        owners = {
            "sse": (sinks["sse"].cycle, HTTP_CYCLE_READS),
            "ws": (sinks["ws"].protocol, WS_PROTOCOL_READS),
        }
        for owner, names in owners.values():
            missing = [n for n in names if not hasattr(owner, n)]
            assert not missing, (
                f"uvicorn {uvicorn.__version__}: {type(owner).__name__} has no {missing}; "
                "the fast path needs them (see streamer/server/fastpath/sinks.py)"
            )
        sse.cancel()


def test_the_fast_path_is_on_only_for_tested_uvicorn_releases() -> None:
    assert protocols.supported(uvicorn.__version__), f"uvicorn {uvicorn.__version__} untested"
    assert not protocols.supported("0.52.0") and protocols.supported("0.52.1")
    assert not protocols.supported("0.56.0") and not protocols.supported("1.0.0")
