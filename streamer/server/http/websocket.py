"""The server side of a WebSocket (RFC 6455) after its handshake: frames in, frames out.

Clients of ``streamer`` say little (a close, pings, at most a subscription), so the
reader is strict and bounded: every client frame must be masked, a message past
``ws_max_message_bytes`` is refused with 1009 before it is buffered, a text
message that is not UTF-8 gets 1007, anything malformed 1002; each is one log line
at INFO, never a traceback. A ping is answered only while the connection's write
buffer is below its high-water mark, and at most ``ws_max_pings_per_second``: a
client that sends pings and never reads the pongs, or floods pings, is closed
(1008), neither buffered for nor served at the expense of everyone else. No
per-message compression is offered, so every frame the server sends can be built
once and shared.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Callable
from typing import Protocol

from .limits import Limits

log = logging.getLogger("streamer.http")
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CLOSE_GRACE = 1.0  # seconds a peer has to answer our close frame before the socket closes

TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


class Connection(Protocol):
    """The connection a WebSocket runs on (``protocol.HTTPProtocol``)."""

    loop: asyncio.AbstractEventLoop
    limits: Limits
    client: tuple[str, int] | None
    writable: bool
    closed: bool

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


def accept_key(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key.strip() + GUID).digest())  # noqa: S324 - RFC 6455


def frame(opcode: int, payload: bytes) -> bytes:
    """A final, unmasked frame, as a server sends it."""
    size = len(payload)
    head = 0x80 | opcode
    if size < 126:
        return bytes((head, size)) + payload
    if size < 1 << 16:
        return bytes((head, 126)) + size.to_bytes(2, "big") + payload
    return bytes((head, 127)) + size.to_bytes(8, "big") + payload


def text_frame(payload: bytes) -> bytes:
    """A text frame (``payload`` is UTF-8)."""
    return frame(TEXT, payload)


def unmask(data: bytes, mask: bytes) -> bytes:
    """XOR ``data`` with the repeated 4-byte ``mask``, as one big-integer operation."""
    size = len(data)
    if not size:
        return data
    key = int.from_bytes((mask * (size // 4 + 1))[:size], "big")
    return (int.from_bytes(data, "big") ^ key).to_bytes(size, "big")


class WebSocket:
    """One open WebSocket on an ``HTTPProtocol`` connection."""

    __slots__ = (
        "conn",
        "buffer",
        "message",
        "opcode",
        "on_message",
        "on_close",
        "close_sent",
        "close_code",
        "last_seen",
        "pinged",
        "pings",
        "ping_second",
    )

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.buffer = b""
        self.message = bytearray()
        self.opcode: int | None = None  # of the message being received in fragments
        self.on_message: Callable[[str | bytes], None] | None = None
        self.on_close: Callable[[int | None], None] | None = None
        self.close_sent = False
        self.close_code: int | None = None  # the peer's, when it closed first
        self.last_seen = conn.loop.time()
        self.pinged = False
        self.pings = 0  # client pings in the current second
        self.ping_second = 0

    @property
    def writable(self) -> bool:
        return self.conn.writable and not self.conn.closed and not self.close_sent

    def send(self, data: bytes) -> None:
        """Write an already framed message (or several)."""
        if not self.close_sent:
            self.conn.write(data)

    def ping(self) -> None:
        if self.writable:
            self.pinged = True
            self.conn.write(frame(PING, b""))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (once), then close the socket when the peer answers or
        after ``CLOSE_GRACE``."""
        if self.close_sent or self.conn.closed:
            return
        self.close_sent = True
        payload = code.to_bytes(2, "big") + reason.encode()[:120]
        self.conn.write(frame(CLOSE, payload))
        if self.close_code is not None:
            self.conn.close()
        else:
            self.conn.loop.call_later(CLOSE_GRACE, self.conn.close)

    def lost(self) -> None:
        """The connection is gone (from ``HTTPProtocol.connection_lost``)."""
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            on_close(self.close_code)

    def feed(self, data: bytes) -> None:
        """Bytes from the client: parse every whole frame; keep a partial one."""
        self.last_seen = self.conn.loop.time()
        self.pinged = False
        buffer = self.buffer + data if self.buffer else data
        limit = self.conn.limits.ws_max_message_bytes
        while buffer and not self.conn.closed:
            if len(buffer) < 2:
                break
            b0, b1 = buffer[0], buffer[1]
            fin, opcode, length = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            offset = 2
            if length == 126:
                if len(buffer) < 4:
                    break
                length, offset = int.from_bytes(buffer[2:4], "big"), 4
            elif length == 127:
                if len(buffer) < 10:
                    break
                length, offset = int.from_bytes(buffer[2:10], "big"), 10
            if b0 & 0x70 or not b1 & 0x80:
                self._fail(1002, "frames from a client must be masked and use no extension")
                return
            if opcode >= 0x8 and (not fin or length > 125):
                self._fail(1002, "a control frame must be final and short")
                return
            if opcode < 0x8 and len(self.message) + length > limit:
                self._fail(1009, "message too big")
                return
            end = offset + 4 + length
            if len(buffer) < end:
                break
            payload = unmask(buffer[offset + 4 : end], buffer[offset : offset + 4])
            buffer = buffer[end:]
            self._frame(bool(fin), opcode, payload)
        self.buffer = buffer

    def _frame(self, fin: bool, opcode: int, payload: bytes) -> None:
        if opcode == PING:
            if not self.conn.writable:  # it does not read what we send: no pong buffered
                self._fail(1008, "pings while not reading")
                return
            second = int(self.last_seen)
            if second != self.ping_second:
                self.ping_second, self.pings = second, 0
            self.pings += 1
            if self.pings > self.conn.limits.ws_max_pings_per_second:
                self._fail(1008, "too many pings")
                return
            self.conn.write(frame(PONG, payload))
        elif opcode == PONG:
            return
        elif opcode == CLOSE:
            self._closed_by_peer(payload)
        elif opcode in (TEXT, BINARY):
            if self.opcode is not None:
                self._fail(1002, "a new message before the last one ended")
                return
            self.opcode = opcode
            self.message += payload
            if fin:
                self._message()
        elif opcode == CONTINUATION:
            if self.opcode is None:
                self._fail(1002, "a continuation frame with no message")
                return
            self.message += payload
            if fin:
                self._message()
        else:
            self._fail(1002, f"unknown opcode {opcode}")

    def _message(self) -> None:
        data, opcode = bytes(self.message), self.opcode
        self.message, self.opcode = bytearray(), None
        if opcode == TEXT:
            try:
                text = data.decode()
            except UnicodeDecodeError:
                self._fail(1007, "text message is not valid UTF-8")
                return
            if self.on_message is not None:
                self.on_message(text)
        elif self.on_message is not None:
            self.on_message(data)

    def _closed_by_peer(self, payload: bytes) -> None:
        code = 1005
        if len(payload) >= 2:
            code = int.from_bytes(payload[:2], "big")
            try:
                payload[2:].decode()
            except UnicodeDecodeError:
                self._fail(1007, "close reason is not valid UTF-8")
                return
        elif payload:
            self._fail(1002, "a one-byte close payload")
            return
        self.close_code = code
        if self.close_sent:
            self.conn.close()
        else:
            self.close(1000 if code in (1005, 1006) else code)

    def _fail(self, code: int, reason: str) -> None:
        """A protocol error by the client: one INFO line, a close frame, the end."""
        client = self.conn.client
        log.info("websocket from %s closed with %d: %s", client[0] if client else "-", code, reason)
        self.buffer = b""
        self.close(code, reason)
        self.conn.close()
