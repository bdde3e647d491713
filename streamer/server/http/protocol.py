"""One HTTP/1.1 connection: parsing, bounded pipelining, timeouts, writing, upgrade.

The service's own connection handling, so that what anyone who can reach the port
can make it hold is bounded here, before any route runs:

- **Time.** A request's head must arrive within ``header_timeout`` of its first
  byte, and its body within ``request_timeout``; an idle keep-alive connection is
  closed after ``keepalive_timeout``. A connection that sends one byte a second is
  closed, not kept.
- **Pipelining.** Requests that arrive while one is being answered wait in a queue
  of at most ``max_pipelined``; past it the connection stops reading (the client's
  bytes stay in the kernel's buffers) until answers go out. The bytes fed to the
  parser at once are bounded too, so a burst of tiny requests in one read cannot
  queue thousands before the bound is checked.
- **Bodies.** A body past ``max_request_bytes`` is refused (413) as soon as its
  declared length or its received bytes pass the bound, and the connection closed.
- **Writes.** The transport's write buffer has a high-water mark; handlers and
  stream outlets see ``writable`` and ``drain()``, and a connection that does not
  read its answers stops being read itself.

Requests are parsed by httptools (llhttp, strict). Each complete request is handed
to the server's ``dispatch`` in a task; streaming responses then continue without
one (``write_chunk`` from the hub's flush).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import orjson

from .limits import Limits
from .messages import REASONS, Headers, Request
from .reader import RequestReader
from .websocket import WebSocket, accept_key

log = logging.getLogger("streamer.http")
Dispatch = Callable[["HTTPProtocol", Request], Coroutine[Any, Any, None]]


class Host(Protocol):
    """What a connection needs from its server (``server.Server``)."""

    limits: Limits
    dispatch: Dispatch
    timed: dict[HTTPProtocol, None]  # connections with a deadline armed

    def admit(self, conn: HTTPProtocol) -> bool: ...

    def forget(self, conn: HTTPProtocol) -> None: ...

    def answered(self) -> None: ...

    def note_refused(self, conn: HTTPProtocol, status: int, detail: str) -> None: ...


class HTTPProtocol(asyncio.Protocol):
    """The server side of one connection. Slotted: an idle stream's connection is
    most of what an idle reader costs."""

    __slots__ = (
        "server",
        "limits",
        "loop",
        "transport",
        "client",
        "local",
        "reader",
        "active",
        "queue",
        "task",
        "websocket",
        "writable",
        "reading",
        "closed",
        "lingering",
        "head_done",
        "chunked",
        "responses",
        "status",
        "sent",
        "on_done",
        "on_drain",
        "on_lost",
        "_drained",
        "deadline",
        "deadline_reason",
    )

    def __init__(self, server: Host) -> None:
        self.server = server
        self.limits: Limits = server.limits
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.client: tuple[str, int] | None = None
        self.local: tuple[str, int] | None = None
        self.reader = RequestReader(self)
        self.active: Request | None = None  # being answered
        self.queue: deque[Request] = deque()  # complete, waiting for their turn
        self.task: asyncio.Task[None] | None = None
        self.websocket: WebSocket | None = None
        self.writable = True
        self.reading = True
        self.closed = False
        self.lingering = False  # refused: draining what the client still sends
        self.head_done = False  # the active request's response head is written
        self.chunked = False
        self.responses = 0
        self.status = 0  # of the response being written
        self.sent = 0  # bytes written on this connection
        self.on_done: Callable[[], None] | None = None  # the active response is over
        self.on_drain: list[Callable[[], None]] = []
        self.on_lost: list[Callable[[], None]] = []
        self._drained: asyncio.Future[None] | None = None
        # One deadline at a time (head, body, idle keep-alive, linger), checked by the
        # server's sweep: a float per request instead of a timer armed and cancelled.
        self.deadline = 0.0
        self.deadline_reason = ""

    # asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp: asyncio.Transport = transport  # type: ignore[assignment]  # uvloop's: no subclass
        self.transport = tcp
        peer = transport.get_extra_info("peername")
        self.client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        sock = transport.get_extra_info("sockname")
        self.local = (str(sock[0]), int(sock[1])) if isinstance(sock, tuple) else None
        tcp.set_write_buffer_limits(high=self.limits.write_high_water)
        if not self.server.admit(self):
            return
        self.arm(self.limits.header_timeout, "header_timeout")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._disarm()
        self.server.forget(self)
        self._release_drain()
        lost, self.on_lost = self.on_lost, []
        for callback in lost:
            callback()
        if self.websocket is not None:
            self.websocket.lost()
        self._done()
        self.reader.close()  # the parser and the reader refer to each other and to us

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        self._release_drain()
        for callback in list(self.on_drain):
            callback()
        if self.active is None and not self.closed:
            self._next()

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return  # the rest of a refused request: read and dropped, never parsed
        if self.websocket is not None:
            self.websocket.feed(data)
            return
        self.reader.receive(data)
        self.reader.feed()

    def eof_received(self) -> bool | None:
        if self.lingering:
            self.close()
        return None  # close our side too

    # answering -----------------------------------------------------------------------------

    def received(self, request: Request) -> None:
        """A complete request (from the reader): answer it now, or after those ahead."""
        self.queue.append(request)
        if self.active is None:
            self._next()

    def _next(self) -> None:
        """Answer the next queued request, if any and if none is being answered, and
        only while the client takes its answers: a client that pipelines and never
        reads gets no more answers buffered for it (``resume_writing`` goes on)."""
        if self.active is not None or self.closed or not self.writable:
            return
        if not self.queue:
            self.arm(self.limits.keepalive_timeout, "idle")
            self.resume_reading()
            return
        request = self.active = self.queue.popleft()
        self.head_done = self.chunked = False
        self._disarm()
        self.task = self.loop.create_task(self._run(request))
        if self.reading:
            self.reader.feed()

    async def _run(self, request: Request) -> None:
        try:
            await self.server.dispatch(self, request)
        except Exception:  # noqa: BLE001 - a bug in one request must not take the server
            log.exception("unhandled error answering %s %s", request.method, request.path)
            if not self.head_done:
                self.respond(500, [(b"content-type", b"text/plain")], b"internal error\n")
            else:
                self.close()
        finally:
            self.task = None

    def start(self, status: int, headers: Headers, *, chunked: bool = False) -> None:
        """Write a response head. ``chunked``: a body of unknown length follows."""
        request = self.active
        assert request is not None and not self.head_done
        self.head_done = True
        self.chunked = chunked
        self.status = status
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"OK"))]
        lines += [b"%s: %s\r\n" % (name, value) for name, value in headers]
        if chunked:
            lines.append(b"transfer-encoding: chunked\r\n")
        if not request.keep_alive:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        self.write(b"".join(lines))

    def respond(self, status: int, headers: Headers, body: bytes = b"") -> None:
        """A whole response: head (with its content length) and body, one write."""
        request = self.active
        if request is None or self.head_done or self.closed:
            return
        self.head_done = True
        self.status = status
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"OK"))]
        lines += [b"%s: %s\r\n" % pair for pair in headers if pair[0] != b"content-length"]
        if status >= 200 and status not in (204, 304):
            lines.append(b"content-length: %d\r\n" % len(body))
        if not request.keep_alive:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        if request.method != "HEAD":
            lines.append(body)
        self.write(b"".join(lines))
        self.finish()

    def write_chunk(self, data: bytes) -> None:
        """Part of a chunked body (nothing for empty data: that would end it)."""
        if data and not self.closed:
            self.write(b"%x\r\n%s\r\n" % (len(data), data))

    def finish(self) -> None:
        """The active response is complete: end a chunked body, then go on."""
        if self.active is None:
            return
        if self.chunked and not self.closed:
            self.write(b"0\r\n\r\n")
        request, self.active = self.active, None
        self.responses += 1
        self.on_drain.clear()
        self.on_lost.clear()
        self._done()
        if not request.keep_alive:
            self.close()
            return
        self._next()

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None and not self.transport.is_closing():
            self.sent += len(data)
            self.transport.write(data)

    def _done(self) -> None:
        done, self.on_done = self.on_done, None
        if done is not None:
            done()
        self.server.answered()

    async def drain(self) -> None:
        """Until the write buffer is below its high-water mark; ``ConnectionError`` if
        the connection closes first."""
        while not self.writable:
            if self.closed:
                raise ConnectionError("connection closed")
            self._drained = self.loop.create_future()
            await self._drained
        if self.closed:
            raise ConnectionError("connection closed")

    def refuse(self, status: int, detail: str, **extra: object) -> None:
        """Answer a request that cannot be read (malformed, too large, too slow) with a
        problem, then close: the rest of the connection cannot be trusted. When an
        earlier request is still being answered, only close (no answer may jump the
        queue)."""
        if self.closed:
            return
        if self.active is None and status >= 400:
            body = orjson.dumps(
                {
                    **extra,
                    "type": "about:blank",
                    "title": REASONS.get(status, b"Error").decode(),
                    "status": status,
                    "detail": detail,
                }
            )
            self.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: application/problem+json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                % (status, REASONS.get(status, b"Error"), len(body), body)
            )
        self.server.note_refused(self, status, detail)
        if status in (413, 431) and self.active is None:
            self._linger()
        else:
            self.close()

    def _linger(self) -> None:
        """Close after the client has had a moment to read the answer: a client that
        is still sending its body would otherwise see the connection reset before it
        reads the 413. What it sends meanwhile is dropped unread (no memory); the
        connection closes when it finishes sending or after a bounded wait."""
        self.lingering = True
        self.reader.take_rest()
        self.resume_reading()
        self.arm(min(self.limits.request_timeout, 5.0), "linger")

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self._disarm()
            self.transport.close()

    # WebSocket upgrade --------------------------------------------------------------------

    def upgrade(self, request: Request | None) -> None:
        """An upgrade request (from the reader): answered like any request, in turn."""
        if request is None or request.header(b"upgrade") is None:
            self.refuse(400, "malformed upgrade request")
            return
        self.pause_reading()  # nothing is read until the handshake is answered
        self.queue.append(request)
        if self.active is None:
            self._next()

    def accept_websocket(self, headers: Headers) -> WebSocket:
        """Answer the active upgrade request with 101 and speak WebSocket from now on."""
        request = self.active
        assert request is not None and not self.head_done
        key = request.header(b"sec-websocket-key") or b""
        self.head_done = True
        self.status = 101
        head = [
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n",
            b"sec-websocket-accept: %s\r\n" % accept_key(key),
            *(b"%s: %s\r\n" % pair for pair in headers),
            b"\r\n",
        ]
        self.write(b"".join(head))
        self.responses += 1
        self.websocket = WebSocket(self)
        leftover = self.reader.take_rest()
        self.resume_reading()
        if leftover:
            self.websocket.feed(leftover)
        return self.websocket

    # timers and reading ---------------------------------------------------------------------

    def arm(self, seconds: float, reason: str) -> None:
        if seconds <= 0:
            self._disarm()
            return
        self.deadline = self.loop.time() + seconds
        self.deadline_reason = reason
        self.server.timed[self] = None

    def _disarm(self) -> None:
        if self.deadline:
            self.deadline = 0.0
            self.server.timed.pop(self, None)

    def expired(self, now: float) -> None:
        """From the server's sweep: act on a deadline that has passed."""
        if not self.deadline or now < self.deadline:
            return
        reason = self.deadline_reason
        self._disarm()
        if self.closed or self.websocket is not None:
            return
        if reason in ("idle", "linger") or self.active is not None:
            self.close()  # an idle keep-alive connection: nothing to say
        else:
            self.refuse(408, f"request not received in time ({reason})")

    def pause_reading(self) -> None:
        if self.reading and self.transport is not None and not self.closed:
            self.reading = False
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self.reading and self.transport is not None and not self.closed and self.writable:
            self.reading = True
            self.transport.resume_reading()
            if self.websocket is None:
                self.reader.feed()

    def _release_drain(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    @property
    def idle(self) -> bool:
        """Answering nothing: between requests, or still reading one (what a
        slow-header attack holds open). The server may close these first."""
        return self.active is None and self.websocket is None and not self.queue
