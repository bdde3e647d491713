"""Wire forms of events: SSE messages, HTTP/1.1 chunks, WebSocket frames.

Each event is framed once per form and the frame is kept on the event
(``Event.wire``), so fan-out to a thousand readers frames it once, and a replay page
shared by several readers is framed once for all of them.
"""

from __future__ import annotations

from ...core.models import Event


def _cached(event: Event, key: str) -> bytes | None:
    wire = event.wire
    return None if wire is None else wire.get(key)


def _keep(event: Event, key: str, frame: bytes) -> bytes:
    if event.wire is None:
        event.wire = {key: frame}
    else:
        event.wire[key] = frame
    return frame


def sse_message(event: Event) -> bytes:
    """``id``, ``event`` and ``data`` (the event's JSON line): one SSE message."""
    frame = _cached(event, "sse")
    if frame is None:
        frame = _keep(
            event,
            "sse",
            b"id: %d\nevent: %s\ndata: %s\n\n" % (event.index, event.type.encode(), event.line),
        )
    return frame


def http_chunk(data: bytes) -> bytes:
    """``data`` as one chunk of a chunked HTTP/1.1 response body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def sse_chunk(event: Event) -> bytes:
    """The event's SSE message as one HTTP chunk, for writing straight to a socket."""
    frame = _cached(event, "sse_chunk")
    if frame is None:
        frame = _keep(event, "sse_chunk", http_chunk(sse_message(event)))
    return frame


def ws_text_frame(payload: bytes) -> bytes:
    """A final, unmasked text frame: what a server sends (RFC 6455 5.2), no extension
    bits (the server never negotiates per-message compression)."""
    size = len(payload)
    if size < 126:
        return b"\x81" + bytes((size,)) + payload
    if size < 1 << 16:
        return b"\x81\x7e" + size.to_bytes(2, "big") + payload
    return b"\x81\x7f" + size.to_bytes(8, "big") + payload


def ws_frame(event: Event) -> bytes:
    """The event's JSON line as one WebSocket text frame."""
    frame = _cached(event, "ws")
    if frame is None:
        frame = _keep(event, "ws", ws_text_frame(event.line))
    return frame


def ws_text(events: list[Event]) -> str:
    """Events as the text of one WebSocket message: newline-separated JSON lines."""
    return b"\n".join([e.line for e in events]).decode()
