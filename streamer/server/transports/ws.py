"""WebSocket over ``follow()``: text frames of newline-separated event JSON.

Everything that can be refused is refused during the handshake, with the HTTP
status and problem+json the REST routes give (403 for a browser ``Origin`` that is
not allowed, 401, 404, 416, 429, 503), before any frame is exchanged: a page on
another site must not read logs with the victim's credentials (cross-site
WebSocket hijacking), and an unauthenticated client gets no open socket to flood.
After the handshake, the stream's end is a close code: 1000 after ``complete``,
1012 on shutdown, 4404 when the job is deleted, 4401 when the key is revoked, 1008
for a reader that stopped reading, 1011 when storage failed.

Clients have nothing to say: a message larger than ``ws_max_message_bytes`` is
closed with 1009 before it is read into memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket, WebSocketDisconnect

from ...core.errors import Forbidden, StreamerError
from ...core.follow import Follow, Inbox
from ...core.models import Event
from ..http.protocol import HTTPProtocol
from ..openapi import Operation
from ..requests import StreamStart, problem, stream_start
from ..resources import resources
from . import frames
from .streaming import answer, lean

DOC = Operation(
    "WebSocket (upgrade): text frames of newline-separated event JSON, from from_index, live",
    (101, 400, 403, 404, 416, 429),
    ("job_id", "from_index", "tail", "token"),
    streaming=True,
)
log = logging.getLogger("streamer")
CLOSES = {
    "shutdown": (1012, "server restarting: resume from the next index"),
    "deleted": (4404, "job deleted"),
    "revoked": (4401, "API key revoked or user deactivated"),
    "too_big": (1009, "message too big"),
    "send_timeout": (1008, "send timeout: resume from the last index"),
    "storage_error": (1011, "storage unavailable: resume later"),
}


def close_for(follow: Follow) -> tuple[int, str] | None:
    """The close code and reason a stream ends with (None: the client left)."""
    if follow.complete:
        return 1000, ""
    return CLOSES.get(follow.closed or "")


def origin_allowed(conn: HTTPConnection) -> bool:
    """No ``Origin`` (not a browser), an origin on the allowlist, or exactly the
    service's own: same scheme (ws -> http, wss -> https) and same host and port.

    Exact comparisons only: ``http://host:port.evil.com``, ``null`` and an
    ``https`` page on an ``http`` service are all refused. Behind a TLS-terminating
    proxy, list the public origin in ``STREAMER_ALLOWED_ORIGINS``.
    """
    origin = conn.headers.get("origin")
    if origin is None:
        return True  # not a browser: browsers always send Origin on WebSockets
    if origin in resources(conn).origin_allowlist:
        return True
    own_scheme = "https" if conn.url.scheme == "wss" else "http"
    own_host = conn.headers.get("host", "").lower()
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return (
        parts.scheme == own_scheme
        and bool(own_host)
        and parts.netloc.lower() == own_host
        and not (parts.path or parts.query or parts.fragment or "@" in parts.netloc)
    )


async def handshake(conn: HTTPConnection) -> StreamStart:
    """Everything checked before a WebSocket is accepted (raises the refusal)."""
    if not origin_allowed(conn):
        raise Forbidden(
            "this origin may not open WebSockets (STREAMER_ALLOWED_ORIGINS)", field="Origin"
        )
    return await stream_start(conn)


# the lean path ---------------------------------------------------------------------------


class WebSocketOutlet:
    """An accepted WebSocket on the lean server, written from the hub's flush."""

    __slots__ = ("conn", "on_ready")

    def __init__(self, conn: HTTPProtocol) -> None:
        self.conn = conn
        self.on_ready: Callable[[], None] | None = None
        conn.on_drain.append(self._drained)

    def ready(self) -> bool:
        ws = self.conn.websocket
        return ws is not None and ws.writable

    def send(self, events: Sequence[Event]) -> None:
        ws = self.conn.websocket
        if ws is not None:
            ws.send(frames.ws_frame(events))

    def keepalive(self, next_index: int) -> None:
        """Nothing: the server pings every WebSocket."""

    def finish(self, follow: Follow) -> None:
        ws, closing = self.conn.websocket, close_for(follow)
        if ws is not None and closing is not None:
            ws.close(*closing)

    async def drain(self) -> None:
        await self.conn.drain()

    def _drained(self) -> None:
        if self.on_ready is not None:
            self.on_ready()


async def events_ws_lean(scope: MutableMapping[str, Any], conn: HTTPProtocol) -> None:
    """The lean path's handshake and stream; a refusal is an HTTP problem answer."""
    request = HTTPConnection(scope)
    try:
        job, from_index, credential = await handshake(request)
        follow = None
        if from_index is not None:
            follow = resources(request).streams.open(
                job, from_index, "ws", credential, WebSocketOutlet(conn)
            )
    except StreamerError as exc:
        context = lean(scope)
        if conn.active is not None:
            conn.active.keep_alive = False  # an upgrade refused: the connection ends
        answer(conn, problem(exc), context.headers if context is not None else [])
        return
    ws = conn.accept_websocket([])
    if follow is None:
        ws.close(1000, "job complete")
        return
    ws.on_close = lambda code: follow.close("disconnect")


# the ASGI path ---------------------------------------------------------------------------


async def events_ws(websocket: WebSocket) -> None:
    res = resources(websocket)
    try:
        job, from_index, credential = await handshake(websocket)
        inbox = Inbox(res.settings.stream_buffer_bytes)
        follow = None
        if from_index is not None:
            follow = res.streams.open(job, from_index, "ws", credential, inbox)
    except StreamerError as exc:
        try:
            await websocket.send_denial_response(problem(exc))
        except RuntimeError:  # the server cannot answer a handshake with a response
            await websocket.close(exc.ws_code)
        return
    await websocket.accept()
    if follow is None:
        await websocket.close(1000, reason="job complete")
        return
    limit = res.settings.ws_max_message_bytes

    async def watch_disconnect() -> None:
        # Clients have nothing to say; reading keeps close frames and pings flowing.
        try:
            while (message := await websocket.receive())["type"] != "websocket.disconnect":
                size = len(message.get("bytes") or b"") + len(
                    (message.get("text") or "").encode("utf-8", "surrogatepass")
                )
                if size > limit:
                    follow.close("too_big")
                    return
        except RuntimeError:
            pass
        follow.close("disconnect")

    watcher = asyncio.create_task(watch_disconnect())
    timeout = res.settings.send_timeout_seconds
    try:
        async for item in inbox.items():
            if isinstance(item, list):
                async with asyncio.timeout(timeout):
                    await websocket.send_text(frames.ws_payload(item).decode())
    except TimeoutError:
        follow.close("send_timeout")
    except (WebSocketDisconnect, RuntimeError, OSError):
        follow.close("disconnect")
    finally:
        watcher.cancel()
        follow.close("disconnect")  # a no-op when it has ended
    closing = close_for(follow)
    if closing is not None:
        await _close_quietly(websocket, *closing)


async def _close_quietly(websocket: WebSocket, code: int, reason: str) -> None:
    """Best effort, bounded: a peer that stopped reading cannot take the close frame
    either, and its stream's memory must be released now, not after the close
    handshake times out."""
    try:
        async with asyncio.timeout(1.0):
            await websocket.close(code, reason)
    except (RuntimeError, OSError, TimeoutError):
        pass
