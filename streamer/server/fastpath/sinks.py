"""Writing pre-framed bytes straight to a reader's socket, past the ASGI ``send`` chain.

Fan-out is the hot path: one committed event goes to every caught-up reader of its
job. Through ASGI that costs, per reader, a task wake-up, an ``await send()`` through
every middleware wrapper and uvicorn's chunk framing. Nchan writes each message to
every subscriber back to back from the publish call. This module lets
``Hub.publish`` do the same: each event is framed once (``frames.sse_chunk``,
``frames.ws_frame``) and written synchronously to every reader whose socket is
ready for it.

It needs the connection's transport, which ASGI does not expose, so ``serve`` runs
uvicorn with two small protocol subclasses that put a ``Sink`` into the request's
``scope["extensions"]``. A ``Sink`` says whether a write now is safe (the response
has started and is not finished, the peer is connected, the transport is below its
high-water mark) and writes. When it is not ready, or under another server, the
transports fall back to the ordinary awaited ``send`` with its send timeout: the
fast path is an optimisation, never the only path. The subclasses touch uvicorn
attributes that are not public API (``cycle``, ``flow``, ``writable``, ``conn``);
``tests/server/test_fastpath.py`` fails loudly if an uvicorn upgrade moves them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Protocol

from starlette.types import Scope
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from ...core.models import Event
from .frames import http_chunk, sse_chunk, sse_message, ws_frame, ws_text_frame

SCOPE_KEY = "streamer.sink"
# The uvicorn attributes the sinks read, which are not public API: what
# ``tests/server/test_fastpath.py`` checks by name on every uvicorn it runs with.
HTTP_CYCLE_READS = (
    "chunked_encoding",
    "response_started",
    "response_complete",
    "disconnected",
    "flow",
    "transport",
)
WS_PROTOCOL_READS = ("handshake_complete", "close_sent", "disconnected", "writable", "conn")


class Sink(Protocol):
    def ready(self) -> bool: ...

    def write(self, data: bytes) -> None: ...

    def on_lost(self, callback: Callable[[], None]) -> bool:
        """Call ``callback`` when the connection is lost; ``False`` if this sink
        cannot tell (the caller then watches ``receive()`` for a disconnect)."""
        ...


class Direct:
    """A reader's sink plus how its transport frames events and raw bytes.

    One event is written as its cached frame, shared by every reader; several (a
    reader that fell a little behind, a replay page) as one frame holding them all.
    """

    __slots__ = ("sink", "frame_event", "frame_bytes", "separator", "encode")

    def __init__(
        self,
        sink: Sink,
        frame_event: Callable[[Event], bytes],
        frame_bytes: Callable[[bytes], bytes],
        encode: Callable[[Event], bytes],
        separator: bytes,
    ) -> None:
        self.sink = sink
        self.frame_event = frame_event
        self.frame_bytes = frame_bytes
        self.encode = encode
        self.separator = separator

    def send_events(self, events: Sequence[Event]) -> bool:
        """Write ``events`` now if the socket can take them; ``False`` if not (nothing
        was written, and the caller takes the ordinary path)."""
        if not self.sink.ready():
            return False
        if len(events) == 1:
            self.sink.write(self.frame_event(events[0]))
        else:
            self.sink.write(self.frame_bytes(self.separator.join(map(self.encode, events))))
        return True

    def send_bytes(self, data: bytes) -> bool:
        if not self.sink.ready():
            return False
        self.sink.write(self.frame_bytes(data))
        return True


def direct_for(scope: Scope, transport: str) -> Direct | None:
    """The fast path for this connection, or ``None`` when the server gave no sink."""
    sink = scope.get("extensions", {}).get(SCOPE_KEY)
    if sink is None:
        return None
    if transport == "sse":
        return Direct(sink, sse_chunk, http_chunk, sse_message, b"")
    return Direct(sink, ws_frame, ws_text_frame, attrgetter("line"), b"\n")


class HTTPSink:
    """A chunked HTTP/1.1 response in progress (SSE): write whole chunks.

    It also reports the connection's loss, straight from the protocol: an SSE stream
    then needs no task of its own waiting on ``receive()`` for the disconnect, which
    is most of what an idle stream costs beyond its socket.
    """

    __slots__ = ("cycle", "lost")

    def __init__(self, cycle: RequestResponseCycle) -> None:
        self.cycle = cycle
        self.lost: Callable[[], None] | None = None

    def on_lost(self, callback: Callable[[], None]) -> bool:
        if self.cycle.disconnected:
            callback()
        else:
            self.lost = callback
        return True

    def ready(self) -> bool:
        cycle = self.cycle
        return bool(
            cycle.chunked_encoding
            and cycle.response_started
            and not cycle.response_complete
            and not cycle.disconnected
            and not cycle.flow.write_paused
            and not cycle.transport.is_closing()
        )

    def write(self, data: bytes) -> None:
        self.cycle.transport.write(data)


class WSSink:
    """An open WebSocket: write whole frames between the library's own frames."""

    __slots__ = ("protocol",)

    def __init__(self, protocol: WebSocketsSansIOProtocol) -> None:
        self.protocol = protocol

    def ready(self) -> bool:
        p = self.protocol
        return bool(
            p.handshake_complete
            and not p.close_sent
            and not p.disconnected
            and p.writable.is_set()
            and p.conn.state is State.OPEN
            and not p.transport.is_closing()
        )

    def write(self, data: bytes) -> None:
        self.protocol.transport.write(data)

    def on_lost(self, callback: Callable[[], None]) -> bool:
        return False  # the stream reads client frames anyway (close, oversized)
