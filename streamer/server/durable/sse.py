"""The protocol's SSE reads: ``data`` events and ``control`` events, over ``follow()``.

Each delivery is one ``data`` event (the messages' text; for a JSON stream one
array; for any other, one base64 string, so every data event decodes on its own)
followed by a ``control`` event: ``streamNextOffset``, ``streamCursor``, and
``upToDate`` once the reader has caught up, or ``streamClosed`` at a closed
stream's end, after which the response ends. A reader that catches up with nothing
to send still gets its ``upToDate`` control event, so it knows where it stands.

Lines of a data event go out as ``data:`` lines, split at every line break of the
payload, so a payload cannot forge an event (a line that starts with a space gets
one more, which SSE parsers drop). Single-event data frames are built once and
kept on the event, for every reader of a fan-out.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ...core import messages
from ...core.durable import View, cursor
from ...core.follow import Follow
from ...core.keys import Credential
from ...core.messages import BYTES, JSON, offset
from ...core.models import Event
from ..http.messages import Headers
from ..resources import Resources
from ..transports.streaming import Answered, lean
from ..transports.wire import LeanChunks, Pipe, Wire, pipe_response
from .reads import Settling, open_follow

LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def data_event(events: Sequence[Event], kind: str) -> bytes:
    """One ``data`` event holding ``events``' messages."""
    if len(events) == 1:
        cached = events[0].wire
        key = "ds-sse-" + kind
        if cached is not None and key in cached:
            return cached[key]
    parts = [messages.message_bytes(e, kind) for e in events]
    if kind == JSON:
        payload = b"[" + b",".join(parts) + b"]"
    elif kind == BYTES:
        payload = base64.b64encode(b"".join(parts))
    else:
        payload = b"".join(parts).decode("utf-8", "replace").encode("utf-8")
    lines = [
        b"data: " + line if line.startswith(b" ") else b"data:" + line
        for line in LINE_BREAK.split(payload)
    ]
    frame = b"event: data\n" + b"\n".join(lines) + b"\n\n"
    if len(events) == 1:
        if events[0].wire is None:
            events[0].wire = {}
        events[0].wire["ds-sse-" + kind] = frame
    return frame


def control_event(fields: dict[str, object]) -> bytes:
    return b"event: control\ndata:" + orjson.dumps(fields) + b"\n\n"


class SSEOutlet(Settling):
    """A follow's outlet writing the protocol's SSE events to a ``Wire``."""

    def __init__(self, view: View, start: int, sink: Wire, client_cursor: str | None) -> None:
        super().__init__()
        self.kind = view.kind
        self.sink = sink
        self.client_cursor = client_cursor
        self.next_index = start
        self.pending: list[Event] = []
        self.owed = True  # an upToDate control event, once the reader has caught up
        sink.on_ready = self._drained

    def attach(self, follow: Follow) -> None:
        self.follow = follow
        self._settle_soon(0.0)

    def ready(self) -> bool:
        return self.sink.ready()

    def send(self, events: Sequence[Event]) -> None:
        self.pending.extend(events)
        follow = self.follow
        if follow is not None and not follow.replaying and not events[-1].is_complete:
            self._flush(caught_up=True)
        else:
            self._settle_soon(0.0)

    def keepalive(self, next_index: int) -> None:
        if not self.pending:
            self.sink.write(b": keepalive\n\n")

    def finish(self, follow: Follow) -> None:
        self._flush(caught_up=follow.complete or not follow.tails)
        self.sink.end(None)

    async def drain(self) -> None:
        await self.sink.drain()

    def _drained(self) -> None:
        if self.on_ready is not None:
            self.on_ready()

    def _replaying(self) -> None:
        if self.pending:
            self._flush(caught_up=False)

    def _settled(self) -> None:
        if self.pending or self.owed:
            self._flush(caught_up=True)

    def _flush(self, *, caught_up: bool) -> None:
        pending, self.pending = self.pending, []
        found = messages.messages(pending)
        closed = next((e.index for e in pending if e.is_complete), None)
        parts = []
        if found:
            parts.append(data_event(found, self.kind))
            self.next_index = found[-1].index + 1
        at = closed if closed is not None else self.next_index
        control: dict[str, object] = {"streamNextOffset": offset(at)}
        if closed is not None:
            control.update(streamClosed=True, upToDate=True)
        else:
            control["streamCursor"] = cursor(self.client_cursor)
            if caught_up:
                control["upToDate"] = True
        if found or closed is not None or (caught_up and self.owed):
            parts.append(control_event(control))
            self.owed = not caught_up
        if parts:
            self.sink.write(b"".join(parts))


def open_sse(
    request: Request,
    res: Resources,
    credential: Credential,
    view: View,
    start: int,
    client_cursor: str | None,
    extra: dict[str, str],
) -> Response:
    """Start an SSE read of ``view`` from ``start``."""
    headers: Headers = [
        (b"content-type", b"text/event-stream"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
        *[(k.lower().encode(), v.encode()) for k, v in extra.items()],
    ]
    if view.kind == BYTES:
        headers.append((b"stream-sse-data-encoding", b"base64"))
    context = lean(request.scope)
    if context is not None:
        conn = context.conn
        outlet = SSEOutlet(view, start, LeanChunks(conn), client_cursor)
        open_follow(res, request, view, start, "ds-sse", credential, outlet)  # 429 before the head
        conn.start(200, [*headers, *context.headers], chunked=True)  # writes come after it
        return Answered()
    pipe = Pipe(res.settings.stream_buffer_bytes)
    outlet = SSEOutlet(view, start, pipe, client_cursor)
    follow = open_follow(res, request, view, start, "ds-sse", credential, outlet)
    pipe.on_lost = follow.close
    return pipe_response(pipe, headers, b"", res.settings.send_timeout_seconds)
