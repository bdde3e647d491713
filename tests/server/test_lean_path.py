"""The lean path (streamer/server/lean.py, streamer/server/http/): frames are exact,
live events go from the hub's flush straight to the sockets, and a lean answer
carries what the middleware gives every other route."""

from __future__ import annotations

import asyncio

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from streamer.core.models import Event
from streamer.server.http.websocket import text_frame, unmask
from streamer.server.transports import frames

from ..support.clients import ws_collect
from ..support.live import LiveServer, wait_until


def parse_frame(data: bytes, *, mask: bool = False) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=mask)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        return frame
    raise AssertionError("incomplete frame")  # pragma: no cover


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65_535, 65_536, 200_000])
def test_text_frame_parses_back_as_one_final_unmasked_text_frame(size: int) -> None:
    payload = b"x" * size
    frame = parse_frame(text_frame(payload))
    assert (frame.opcode, frame.fin, frame.data) == (Opcode.TEXT, True, payload)
    assert not (frame.rsv1 or frame.rsv2 or frame.rsv3)


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 1000])
def test_unmask_is_the_rfc_6455_xor(size: int) -> None:
    data, mask = bytes(range(256)) * 4, b"\x01\x82\x43\xf4"
    data = data[:size]
    assert unmask(data, mask) == bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def test_event_wire_forms_are_built_once_and_agree() -> None:
    event = Event(7, "log", b'{"index":7}')
    sse = frames.sse_message(event)
    assert sse == b'id: 7\nevent: log\ndata: {"index":7}\n\n'
    assert frames.sse_chunk([event]) == b"%x\r\n%s\r\n" % (len(sse), sse)
    assert frames.ws_frame([event]) == text_frame(event.line)
    assert frames.sse_chunk([event]) is frames.sse_chunk([event])
    assert frames.ws_frame([event]) is frames.ws_frame([event])
    two = [event, Event(8, "step", b'{"index":8}')]
    assert parse_frame(frames.ws_frame(two)).data == b'{"index":7}\n{"index":8}'


async def test_live_events_reach_sse_and_ws_readers_from_the_hubs_flush(
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
    streams = live_server.resources.streams
    await wait_until(lambda: len(streams.open_streams) == 2)
    await wait_until(lambda: all(f.live for f in streams.open_streams))
    flushes = hub.flushes
    for i in range(20):
        r = await client.post(f"/api/v1/jobs/{job}/events", json={"data": f"{i}\n"})
        assert r.status_code == 201
    r = await client.post(f"/api/v1/jobs/{job}/events", json={"type": "complete", "success": True})
    assert r.status_code == 201
    for reader in readers:
        assert await asyncio.wait_for(reader, 20) == list(range(21))
    assert hub.flushes - flushes >= 21, "each commit reached the readers in a flush"
    assert streams.open_streams == set() and hub.subscriber_count == 0


async def test_a_lean_answer_has_the_security_headers_and_an_access_log_line(
    live_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    job = await live_server.create_job()
    caplog.set_level("INFO", logger="streamer.access")
    r = await live_server.client().post(f"/api/v1/jobs/{job}/events", json={"data": "x\n"})
    assert r.status_code == 201
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    bad = await live_server.client().post(f"/api/v1/jobs/{job}/events", content=b"{")
    assert bad.status_code == 400 and bad.headers["content-type"] == "application/problem+json"
    await wait_until(
        lambda: sum(f"/api/v1/jobs/{job}/events" in r.message for r in caplog.records) >= 2
    )
