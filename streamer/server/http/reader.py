"""Reading requests off a connection: httptools' callbacks, and the bounds on them.

``RequestReader`` turns bytes into complete ``Request`` objects for its
``HTTPProtocol``, checking as it goes what one request may hold (head size and
header count, body size) and how many may wait (``max_pipelined``). Bytes are fed
to the parser a slice at a time, so a read holding thousands of tiny pipelined
requests stops at the bound, and the rest waits unparsed (with reading paused).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol
from urllib.parse import unquote

import httptools

from .limits import Limits
from .messages import Request

# Bytes parsed at once when no request head ends sooner (see ``_next_size``).
FEED_SLICE = 4096


class _Closed:
    """The callbacks of a closed connection's parser: none."""


class Connection(Protocol):
    """What the reader uses of its connection (``protocol.HTTPProtocol``)."""

    loop: asyncio.AbstractEventLoop
    limits: Limits
    queue: deque[Request]
    closed: bool
    lingering: bool

    @property
    def active(self) -> Request | None: ...

    @property
    def websocket(self) -> object: ...

    def received(self, request: Request) -> None: ...

    def upgrade(self, request: Request | None) -> None: ...

    def refuse(self, status: int, detail: str, **extra: object) -> None: ...

    def arm(self, seconds: float, reason: str) -> None: ...

    def write(self, data: bytes) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class RequestReader:
    """The parser's callbacks for one connection."""

    __slots__ = (
        "conn",
        "limits",
        "parser",
        "request",
        "in_head",
        "head_bytes",
        "head_size",
        "feeding",
        "pending",
        "offset",
        "body_left",
    )

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.limits = conn.limits
        self.parser = httptools.HttpRequestParser(self)
        self.request: Request | None = None  # being parsed
        self.in_head = False
        self.head_bytes = 0  # of the request head being read, fed so far
        self.head_size = 0  # of its request line and headers, as parsed
        self.feeding = False  # inside feed(): the parser must not be fed again from a callback
        self.pending = b""  # received; parsed up to ``offset`` (the queue's bound holds)
        self.offset = 0
        self.body_left = 0  # bytes of the declared body still to come

    def receive(self, data: bytes) -> None:
        if self.offset >= len(self.pending):
            self.pending, self.offset = data, 0
        else:
            self.pending, self.offset = self.pending[self.offset :] + data, 0

    def take_rest(self) -> bytes:
        """What was received and not parsed (after an upgrade: the first frames)."""
        rest = self.pending[self.offset :]
        self.pending, self.offset = b"", 0
        return rest

    def feed(self) -> None:
        """Parse what the connection has pending, a slice at a time, until the queue
        of complete requests is full. Not reentrant: a callback that would feed more
        (an answer that ends inside a callback) leaves it to the loop already here."""
        if self.feeding:
            return
        self.feeding = True
        try:
            self._feed()
        finally:
            self.feeding = False

    def _feed(self) -> None:
        conn = self.conn
        view = memoryview(self.pending)
        while (
            self.offset < len(view)
            and not conn.closed
            and conn.websocket is None
            and not conn.lingering
        ):
            if len(conn.queue) >= self.limits.max_pipelined:
                conn.pause_reading()
                return
            chunk = view[self.offset : self.offset + self._next_size()]
            self.offset += len(chunk)
            if self.in_head:
                self.head_bytes += len(chunk)
                if self.head_bytes > self.limits.max_head_bytes + FEED_SLICE:
                    conn.refuse(431, "request head is too large")
                    return
            try:
                self.parser.feed_data(chunk)
            except httptools.HttpParserUpgrade as upgrade:
                at = int(upgrade.args[0]) if upgrade.args else len(chunk)
                self.offset -= len(chunk) - at  # the rest is the WebSocket's
                request, self.request = self.request, None
                conn.upgrade(request)
                return
            except httptools.HttpParserCallbackError:
                return  # a callback refused the request and answered it
            except httptools.HttpParserError as exc:
                conn.refuse(400, f"malformed request: {exc}")
                return
        if self.offset >= len(self.pending):
            self.pending, self.offset = b"", 0
            if len(conn.queue) < self.limits.max_pipelined:
                conn.resume_reading()

    def _next_size(self) -> int:
        """How much to feed next: a declared body whole, else up to the end of the next
        request head (a slice at most), so one feed completes at most one request
        and the queue's bound is exact however tiny the pipelined requests are."""
        if self.body_left > 0:
            return self.body_left
        end = self.pending.find(b"\r\n\r\n", self.offset, self.offset + FEED_SLICE)
        return end + 4 - self.offset if end >= 0 else FEED_SLICE

    def close(self) -> None:
        """The connection is gone: drop the parser (it refers back to this reader)."""
        self.parser = httptools.HttpRequestParser(_Closed())
        self.request = None

    # httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        conn = self.conn
        self.request = Request(b"", conn.loop.time())
        self.head_bytes = self.head_size = self.body_left = 0
        self.in_head = True
        if conn.active is None and not conn.queue:
            conn.arm(self.limits.header_timeout, "header_timeout")

    def on_url(self, url: bytes) -> None:
        request = self.request
        assert request is not None
        request.target += url
        self.head_size += len(url)
        if self.head_size > self.limits.max_head_bytes:
            self.conn.refuse(431, "request target is too long")
            raise httptools.HttpParserCallbackError("target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.request
        assert request is not None
        request.headers.append((name.lower(), value))
        self.head_size += len(name) + len(value) + 4
        if self.head_size > self.limits.max_head_bytes:
            self.conn.refuse(431, "request head is too large")
            raise httptools.HttpParserCallbackError("head too large")
        if len(request.headers) > self.limits.max_headers:
            self.conn.refuse(431, "too many request headers")
            raise httptools.HttpParserCallbackError("too many headers")

    def on_headers_complete(self) -> None:
        request, conn, parser = self.request, self.conn, self.parser
        assert request is not None
        self.in_head = False
        request.method = parser.get_method().decode("ascii", "replace")
        request.version = parser.get_http_version()
        request.keep_alive = parser.should_keep_alive()
        request.upgrade = parser.should_upgrade()
        parsed = httptools.parse_url(request.target)
        request.path = unquote(parsed.path.decode("latin-1"), errors="surrogateescape")
        request.query = parsed.query or b""
        length = request.header(b"content-length")
        if length is not None and length.isdigit():
            if int(length) > self.limits.max_request_bytes:
                self._too_large()
                raise httptools.HttpParserCallbackError("body too large")
            self.body_left = int(length)
        if conn.active is None and not conn.queue:
            conn.arm(self.limits.request_timeout, "request_timeout")
            if request.header(b"expect") == b"100-continue" and not request.upgrade:
                conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        request = self.request
        assert request is not None
        request.body += body
        self.body_left = max(0, self.body_left - len(body))  # chunked: none declared
        if len(request.body) > self.limits.max_request_bytes:
            self._too_large()
            raise httptools.HttpParserCallbackError("body too large")

    def on_message_complete(self) -> None:
        request = self.request
        assert request is not None
        if request.upgrade:
            return  # handed over in feed(), once the parser stops
        self.request = None
        self.conn.received(request)

    def _too_large(self) -> None:
        limit = self.limits.max_request_bytes
        self.conn.refuse(
            413, f"request body is larger than {limit} bytes", field="body", limit=limit
        )
