"""Wire forms of events for each transport, built once per event and shared.

Each form is kept on the event (``Event.wire``) the first time it is built, so fan-out
to a thousand readers frames an event once, and a replay page shared by several
readers is framed once for all of them. A run of several events is the join of the
single forms, one write.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from ...core.models import Event
from ..http.websocket import text_frame


def _cached(event: Event, key: str) -> bytes | None:
    wire = event.wire
    return None if wire is None else wire.get(key)


def _keep(event: Event, key: str, form: bytes) -> bytes:
    if event.wire is None:
        event.wire = {key: form}
    else:
        event.wire[key] = form
    return form


def http_chunk(data: bytes) -> bytes:
    """``data`` as one chunk of a chunked HTTP/1.1 body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def sse_message(event: Event) -> bytes:
    """``id``, ``event`` and ``data`` (the event's JSON line): one SSE message."""
    form = _cached(event, "sse")
    if form is None:
        head = b"id: %d\nevent: %s\ndata: " % (event.index, event.type.encode())
        form = _keep(event, "sse", head + event.line + b"\n\n")
    return form


def sse(events: Sequence[Event]) -> bytes:
    """SSE messages for a run of events. A run (a replay page, a busy flush) is framed
    in one pass and not kept: its events are rarely framed again, and keeping a form
    on each would cost more than building it."""
    if len(events) == 1:
        return sse_message(events[0])
    return b"".join(
        [
            b"id: %d\nevent: %s\ndata: %s\n\n" % (e.index, e.type.encode(), e.line)
            if e.wire is None
            else sse_message(e)
            for e in events
        ]
    )


def sse_chunk(events: Sequence[Event]) -> bytes:
    """``sse(events)`` as one HTTP chunk; a single event's chunk is kept on it."""
    if len(events) > 1:
        return http_chunk(sse(events))
    event = events[0]
    form = _cached(event, "sse_chunk")
    if form is None:
        form = _keep(event, "sse_chunk", http_chunk(sse_message(event)))
    return form


def sse_preamble(next_index: int, retry_ms: int) -> bytes:
    """The first bytes of a stream: the reconnect delay, and where it starts."""
    return b"retry: %d\n: connected next_index=%d\n\n" % (retry_ms, next_index)


def sse_keepalive(next_index: int) -> bytes:
    return b": keepalive next_index=%d\n\n" % next_index


def ws_payload(events: Sequence[Event]) -> bytes:
    """One WebSocket message: the events' JSON lines, newline-separated."""
    if len(events) == 1:
        return events[0].line
    return b"\n".join([e.line for e in events])


def ws_frame(events: Sequence[Event]) -> bytes:
    """``ws_payload(events)`` as a text frame; a single event's frame is kept on it."""
    if len(events) > 1:
        return text_frame(ws_payload(events))
    event = events[0]
    form = _cached(event, "ws")
    if form is None:
        form = _keep(event, "ws", text_frame(event.line))
    return form


def text(events: Sequence[Event]) -> bytes:
    """The plain-text log: each event's ``data``, raw (events with none add nothing)."""
    parts = []
    for event in events:
        form = _cached(event, "text")
        if form is None:
            data = orjson.loads(event.line)["data"]
            form = _keep(event, "text", data.encode() if data is not None else b"")
        parts.append(form)
    return b"".join(parts)


def text_chunk(events: Sequence[Event]) -> bytes:
    """``text(events)`` as an HTTP chunk, or nothing when there is no text (an empty
    chunk would end the body)."""
    data = text(events)
    return http_chunk(data) if data else b""
