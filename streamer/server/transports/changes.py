"""The change feed of the caller's jobs, over SSE and WebSocket: ``follow()`` of a feed.

A feed is a log keyed ``user:<id>`` whose entries are changes indexed by their
sequence number (``core/changes.py``), so it is followed by the one merge like a
job's log: subscribe to the user's hub channel, replay from storage, go live, read
storage again when it falls behind. Nothing here polls the database per connection;
other nodes' changes arrive through the cross-node watch, like events.

- SSE ``GET /api/v1/jobs/changes``: one message per change, ``id`` its sequence
  number, ``event`` its type, ``data`` its JSON. ``Last-Event-ID`` (or ``?after=``)
  resumes after that change; without either the feed starts now. ``?snapshot=true``
  first sends the job list as one ``snapshot`` message whose ``id`` is the head it
  is current at, then the changes after it: read as one snapshot of the database,
  so nothing is missed or repeated between the two. A reconnect with
  ``Last-Event-ID`` resumes and gets no second snapshot.
- WebSocket ``/api/v1/jobs/changes/ws``: text frames of newline-separated change
  JSON, the snapshot (when asked) as the first frame.

A resume point retention has dropped is 410 (reconnect with ``snapshot=true``); a
point past the head is 416. A reader that falls so far behind that retention drops
what it still needs is ended (SSE end, WebSocket 1011) and is answered 410 when it
resumes. A feed never ends by itself: it is one stream against the user's limit.
"""

from __future__ import annotations

import random
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any, NamedTuple

import orjson
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from ...core.changes import feed_key, start_seq
from ...core.errors import BadRequest, StreamerError
from ...core.follow import Follow
from ...core.keys import Credential
from ...core.models import Event
from ..http.protocol import HTTPProtocol
from ..openapi import Operation
from ..resources import Resources, resources
from . import frames
from .sse import HEADERS
from .streaming import Answered, lean
from .textlog import FALSE, TRUE
from .wire import (
    LeanChunks,
    LeanFrames,
    Pipe,
    Wire,
    check_origin,
    pipe_response,
    refuse_asgi,
    refuse_lean,
    serve_websocket,
)
from .ws import close_for

DOC = Operation(
    "Server-Sent Events: every change of the caller's jobs (created, updated, grew, deleted, "
    "each with the job's JSON), resumable by sequence number; snapshot=true sends the list "
    "first",
    (200, 400, 410, 416, 429, 503),
    ("after", "snapshot", "Last-Event-ID"),
    media="text/event-stream",
    streaming=True,
)
WS_DOC = Operation(
    "WebSocket (upgrade): the change feed as text frames of change JSON",
    (101, 400, 403, 410, 416, 429),
    ("after", "snapshot"),
    streaming=True,
)


class FeedStart(NamedTuple):
    credential: Credential
    start: int  # the first sequence number the reader gets
    snapshot: bytes | None  # the snapshot's JSON, when asked for


def _flag(conn: HTTPConnection, name: str) -> bool:
    raw = conn.query_params.get(name, "").lower()
    if raw not in TRUE | FALSE:
        raise BadRequest(f"{name} must be true or false", field=name)
    return raw in TRUE


async def feed_start(conn: HTTPConnection, last_event_id: str | None) -> FeedStart:
    """Authenticate (the Authorization header: a feed is not one job's, so no stream
    token opens it), then where the reader starts, and the snapshot if asked for."""
    res = resources(conn)
    res.streams.start_rate.take()
    credential = await res.auth.caller(conn)
    snapshot, after = _flag(conn, "snapshot"), conn.query_params.get("after")
    if snapshot and after is not None:
        raise BadRequest("give snapshot or after, not both", field="after")
    feed, user_id = res.storage.changes, credential.user_id
    if snapshot and last_event_id is None:
        limit = res.settings.feed_snapshot_jobs
        head, jobs = await feed.snapshot(user_id, limit + 1)
        body = {
            "seq": head,
            "type": "snapshot",
            "jobs": [job.public() for job in jobs[:limit]],
            "truncated": len(jobs) > limit,
        }
        return FeedStart(credential, head + 1, orjson.dumps(body))
    head, floor = await feed.head(user_id)
    return FeedStart(credential, start_seq(head, floor, after, last_event_id), None)


class FeedOutlet:
    """A feed's follow writing to its connection's ``Wire`` (attached once it exists)."""

    __slots__ = ("sse", "wire", "on_ready")

    def __init__(self, sse: bool) -> None:
        self.sse = sse
        self.wire: Wire | None = None
        self.on_ready: Callable[[], None] | None = None

    def attach(self, wire: Wire, follow: Follow) -> None:
        self.wire = wire
        wire.on_ready = self._ready
        wire.on_lost = follow.close

    def ready(self) -> bool:
        return self.wire is not None and self.wire.ready()

    def send(self, events: Sequence[Event]) -> None:
        assert self.wire is not None
        self.wire.write(frames.sse(events) if self.sse else frames.ws_payload(events))

    def keepalive(self, next_index: int) -> None:
        if self.sse and self.wire is not None:
            self.wire.write(b": keepalive next_seq=%d\n\n" % next_index)

    def finish(self, follow: Follow) -> None:
        if self.wire is not None:
            self.wire.end(close_for(follow))

    async def drain(self) -> None:
        if self.wire is None:
            raise ConnectionError("not connected yet")
        await self.wire.drain()

    def _ready(self) -> None:
        if self.on_ready is not None:
            self.on_ready()


def _open(res: Resources, started: FeedStart, transport: str, outlet: FeedOutlet) -> Follow:
    return res.streams.open_log(
        feed_key(started.credential.user_id),
        started.start,
        transport,
        started.credential,
        outlet,
        reader=res.storage.changes,
    )


def sse_message(seq: int, kind: str, body: bytes) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, kind.encode(), body)


async def changes_stream(request: Request) -> Response:
    started = await feed_start(request, request.headers.get("last-event-id"))
    res = resources(request)
    preamble = b"retry: %d\n: connected next_seq=%d\n\n" % (
        random.randint(1000, 3000),  # noqa: S311 - jitter, not a secret
        started.start,
    )
    if started.snapshot is not None:
        preamble += sse_message(started.start - 1, "snapshot", started.snapshot)
    outlet = FeedOutlet(sse=True)
    context = lean(request.scope)
    if context is None:
        pipe = Pipe(res.settings.stream_buffer_bytes)
        outlet.attach(pipe, follow := _open(res, started, "sse", outlet))
        return pipe_response(pipe, HEADERS, preamble, res.settings.send_timeout_seconds)
    conn = context.conn
    follow = _open(res, started, "sse", outlet)  # the 429 comes before the head
    outlet.attach(LeanChunks(conn), follow)
    conn.start(200, [*HEADERS, *context.headers], chunked=True)
    conn.write_chunk(preamble)
    return Answered()


async def _handshake(conn: HTTPConnection) -> FeedStart:
    check_origin(conn)
    return await feed_start(conn, None)


async def changes_ws_lean(scope: MutableMapping[str, Any], conn: HTTPProtocol) -> None:
    request = HTTPConnection(scope)
    outlet = FeedOutlet(sse=False)
    try:
        started = await _handshake(request)
        follow = _open(resources(request), started, "ws", outlet)
    except StreamerError as exc:
        refuse_lean(scope, conn, exc)
        return
    conn.accept_websocket([])
    wire = LeanFrames(conn)
    if started.snapshot is not None:
        wire.write(started.snapshot)
    outlet.attach(wire, follow)


async def changes_ws(websocket: WebSocket) -> None:
    res = resources(websocket)
    outlet = FeedOutlet(sse=False)
    pipe = Pipe(res.settings.stream_buffer_bytes)
    try:
        started = await _handshake(websocket)
        follow = _open(res, started, "ws", outlet)
    except StreamerError as exc:
        await refuse_asgi(websocket, exc)
        return
    if started.snapshot is not None:
        pipe.write(started.snapshot)
    outlet.attach(pipe, follow)
    await websocket.accept()
    settings = res.settings
    await serve_websocket(
        websocket, pipe, None, settings.ws_max_message_bytes, settings.send_timeout_seconds
    )
    follow.close("disconnect")  # a no-op when it has ended
