"""One streamed connection, on either path, as the change feed and multi-job streams see it.

A single job's stream ends with its follow, so its outlet can be the response itself
(``streaming.ChunkedOutlet``, ``ws.WebSocketOutlet``). A connection that carries
several logs, or a log that is not a job's, outlives any one follow: its outlets
write *messages* to a ``Wire``, which owns the connection, tells them when it can
take writes again (``on_ready``), when the client left (``on_lost``), and is ended
once, with a WebSocket close code where there is one. A message is what the
transport frames as one unit: a run of SSE messages (one HTTP chunk), or one
WebSocket text message.

- ``LeanChunks``: an SSE body on the lean server, written from the hub's flush.
- ``LeanFrames``: a WebSocket on the lean server; client messages go to
  ``on_message``.
- ``Pipe``: the ASGI path. Messages queue for the response coroutine
  (``pipe_response`` for SSE, ``serve_websocket`` for WebSocket), bounded by bytes:
  past ``max_bytes`` the wire is not ready, and the writers wait (a follow leaves
  its events in the hub's channel, or stops reading storage).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, MutableMapping
from typing import Any, Protocol

from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from ...core.backlog import Backlog
from ...core.errors import Forbidden, StreamerError
from ..http.messages import Headers
from ..http.protocol import HTTPProtocol
from ..http.websocket import text_frame
from ..requests import problem
from .streaming import QueuedResponse, answer, lean
from .ws import origin_allowed

Close = tuple[int, str] | None  # a WebSocket close code and reason (None: the client left)


class Wire(Protocol):
    on_ready: Callable[[], None] | None  # the connection can take writes again
    on_lost: Callable[[str], None] | None  # the client left (the reason: disconnect, ...)

    def ready(self) -> bool: ...

    def write(self, message: bytes) -> None: ...

    async def drain(self) -> None:
        """Until ``ready()``; ``ConnectionError`` when the connection is gone."""

    def end(self, close: Close) -> None:
        """End the response (SSE) or close the socket with ``close`` (WebSocket)."""


def _lost(conn: HTTPProtocol) -> bool:
    """Closed, or closing: the peer has gone and ``connection_lost`` is on its way. The
    members of a shared connection would otherwise each write to it once more."""
    transport = conn.transport
    return conn.closed or transport is None or transport.is_closing()


class _Lean:
    """What both lean wires share: the connection's drain and loss, told onwards."""

    __slots__ = ("conn", "on_ready", "on_lost")

    def __init__(self, conn: HTTPProtocol) -> None:
        self.conn = conn
        self.on_ready: Callable[[], None] | None = None
        self.on_lost: Callable[[str], None] | None = None
        conn.on_drain.append(self._drained)

    async def drain(self) -> None:
        await self.conn.drain()

    def _drained(self) -> None:
        if self.on_ready is not None:
            self.on_ready()

    def _lost(self) -> None:
        if self.on_lost is not None:
            self.on_lost("disconnect")


class LeanChunks(_Lean):
    """An SSE response on the lean server whose head is written."""

    __slots__ = ()

    def __init__(self, conn: HTTPProtocol) -> None:
        super().__init__(conn)
        conn.on_lost.append(self._lost)

    def ready(self) -> bool:
        return self.conn.writable and not _lost(self.conn)

    def write(self, message: bytes) -> None:
        if not _lost(self.conn):
            self.conn.write_chunk(message)

    def end(self, close: Close) -> None:
        self.conn.finish()


class LeanFrames(_Lean):
    """An accepted WebSocket on the lean server."""

    __slots__ = ("on_message",)

    def __init__(self, conn: HTTPProtocol) -> None:
        super().__init__(conn)
        ws = conn.websocket
        assert ws is not None
        self.on_message: Callable[[str | bytes], None] | None = None
        ws.on_close = lambda code: self._lost()
        ws.on_message = self._message

    def ready(self) -> bool:
        ws = self.conn.websocket
        return ws is not None and ws.writable and not _lost(self.conn)

    def write(self, message: bytes) -> None:
        ws = self.conn.websocket
        if ws is not None and not _lost(self.conn):
            ws.send(text_frame(message))

    def end(self, close: Close) -> None:
        ws = self.conn.websocket
        if ws is not None and close is not None:
            ws.close(*close)

    def _message(self, data: str | bytes) -> None:
        if self.on_message is not None:
            self.on_message(data)


class Pipe(Backlog[bytes]):
    """The ASGI path's wire: messages queued for one response coroutine."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_bytes)
        self.on_lost: Callable[[str], None] | None = None
        self.gone = False  # the consumer has seen the client leave
        self.close: Close = None

    def write(self, message: bytes) -> None:
        self.put(message, len(message))

    def end(self, close: Close) -> None:
        if not self.ended:
            self.close = close
            self.complete()

    def lost(self, reason: str = "disconnect") -> None:
        """The consumer saw the client leave (or stop reading: ``send_timeout``)."""
        self.clear()
        self.end(self.close)
        if not self.gone:
            self.gone = True
            if self.on_lost is not None:
                self.on_lost(reason)


def pipe_response(pipe: Pipe, headers: Headers, preamble: bytes, send_timeout: float) -> Response:
    """An SSE response on the ASGI path: the pipe's messages; a client that leaves (or
    stops reading) loses the pipe."""
    return QueuedResponse(pipe.items(), pipe.lost, headers, preamble, send_timeout)


async def serve_websocket(
    websocket: WebSocket,
    pipe: Pipe,
    on_message: Callable[[str | bytes], None] | None,
    max_message: int,
    send_timeout: float,
) -> None:
    """An accepted WebSocket on the ASGI path: the pipe's messages out, each send
    bounded by the send timeout; the client's messages (at most ``max_message``
    bytes, else close 1009) to ``on_message``; then the pipe's close code."""

    async def receive() -> None:
        try:
            while (message := await websocket.receive())["type"] != "websocket.disconnect":
                data: str | bytes = message.get("text") or message.get("bytes") or b""
                raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
                if len(raw) > max_message:
                    pipe.end((1009, "message too big"))
                    pipe.lost("too_big")
                    return
                if on_message is not None:
                    on_message(data)
        except RuntimeError:
            pass
        pipe.lost()

    reader = asyncio.create_task(receive())
    try:
        async for item in pipe.items():
            async with asyncio.timeout(send_timeout):
                await websocket.send_text(item.decode())
    except TimeoutError:
        pipe.lost("send_timeout")
    except (WebSocketDisconnect, RuntimeError, OSError):
        pipe.lost()
    finally:
        reader.cancel()
    if pipe.close is not None:
        try:
            async with asyncio.timeout(1.0):
                await websocket.close(*pipe.close)
        except (RuntimeError, OSError, TimeoutError):
            pass


# WebSocket handshakes ----------------------------------------------------------------------


def check_origin(conn: HTTPConnection) -> None:
    """A browser origin that may not open WebSockets is refused (403) at the handshake."""
    if not origin_allowed(conn):
        raise Forbidden(
            "this origin may not open WebSockets (STREAMER_ALLOWED_ORIGINS)", field="Origin"
        )


def refuse_lean(scope: MutableMapping[str, Any], conn: HTTPProtocol, exc: StreamerError) -> None:
    """A refused upgrade on the lean server: the problem as an HTTP answer, then close."""
    context = lean(scope)
    if conn.active is not None:
        conn.active.keep_alive = False
    answer(conn, problem(exc), context.headers if context is not None else [])


async def refuse_asgi(websocket: WebSocket, exc: StreamerError) -> None:
    """A refused upgrade on the ASGI path: the problem, or its close code where the
    server cannot answer a handshake with a response."""
    try:
        await websocket.send_denial_response(problem(exc))
    except RuntimeError:
        await websocket.close(exc.ws_code)
