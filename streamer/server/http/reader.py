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

FEED_SLICE = 4096  # bytes parsed at once, so the pipelining bound is checked often


class _Closed:
    """The callbacks of a closed connection's parser: none."""


class Connection(Protocol):
    """What the reader uses of its connection (``protocol.HTTPProtocol``)."""

    loop: asyncio.AbstractEventLoop
    limits: Limits
    pending: bytes
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

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.limits = conn.limits
        self.parser = httptools.HttpRequestParser(self)
        self.request: Request | None = None  # being parsed
        self.in_head = False
        self.head_bytes = 0  # of the request head being read, fed so far

    def feed(self) -> None:
        """Parse what the connection has pending, a slice at a time, until the queue
        of complete requests is full."""
        conn = self.conn
        while conn.pending and not conn.closed and conn.websocket is None and not conn.lingering:
            if len(conn.queue) >= self.limits.max_pipelined:
                conn.pause_reading()
                return
            chunk, conn.pending = conn.pending[:FEED_SLICE], conn.pending[FEED_SLICE:]
            if self.in_head:
                self.head_bytes += len(chunk)
                if self.head_bytes > self.limits.max_head_bytes + FEED_SLICE:
                    conn.refuse(431, "request head is too large")
                    return
            try:
                self.parser.feed_data(chunk)
            except httptools.HttpParserUpgrade as upgrade:
                offset = int(upgrade.args[0]) if upgrade.args else len(chunk)
                conn.pending = chunk[offset:] + conn.pending
                request, self.request = self.request, None
                conn.upgrade(request)
                return
            except httptools.HttpParserCallbackError:
                return  # a callback refused the request and answered it
            except httptools.HttpParserError as exc:
                conn.refuse(400, f"malformed request: {exc}")
                return
        if not conn.pending and len(conn.queue) < self.limits.max_pipelined:
            conn.resume_reading()

    def close(self) -> None:
        """The connection is gone: drop the parser (it refers back to this reader)."""
        self.parser = httptools.HttpRequestParser(_Closed())
        self.request = None

    # httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        conn = self.conn
        self.request = Request(b"", conn.loop.time())
        self.head_bytes = 0
        self.in_head = True
        if conn.active is None and not conn.queue:
            conn.arm(self.limits.header_timeout, "header_timeout")

    def on_url(self, url: bytes) -> None:
        request = self.request
        assert request is not None
        request.target += url
        if len(request.target) > self.limits.max_head_bytes:
            self.conn.refuse(431, "request target is too long")
            raise httptools.HttpParserCallbackError("target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.request
        assert request is not None
        request.headers.append((name.lower(), value))
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
        if length is not None and length.isdigit() and int(length) > self.limits.max_request_bytes:
            self._too_large()
            raise httptools.HttpParserCallbackError("body too large")
        if conn.active is None and not conn.queue:
            conn.arm(self.limits.request_timeout, "request_timeout")
            if request.header(b"expect") == b"100-continue" and not request.upgrade:
                conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        request = self.request
        assert request is not None
        request.body += body
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
