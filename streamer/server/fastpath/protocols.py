"""uvicorn's protocols, subclassed to give each request or WebSocket a ``Sink``.

``serve`` runs uvicorn with these (``PROTOCOLS``); the sinks they put into
``scope["extensions"]`` are what ``sinks.direct_for`` finds. The subclasses touch
uvicorn attributes that are not public API, which is why ``pyproject.toml`` bounds
uvicorn on both sides and ``tests/server/test_fastpath.py`` fails loudly, naming the
attribute, when an upgrade moves one.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

from .sinks import SCOPE_KEY, HTTPSink, WSSink

# The uvicorn releases the fast path is tested on (pyproject.toml says the same):
# 0.52.1 is the first whose protocols have every attribute the sinks read.
TESTED = ((0, 52, 1), (0, 56))


def supported(release: str | None = None) -> bool:
    """Whether this uvicorn is one the fast path was tested on. Outside that range
    ``serve`` takes the ordinary ASGI path, which any uvicorn supports."""
    parts = tuple(int(p) for p in (release or version("uvicorn")).split(".")[:3] if p.isdigit())
    return TESTED[0] <= parts < TESTED[1]


class StreamerHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, giving each request an ``HTTPSink``."""

    sink: HTTPSink | None = None

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # not an upgrade
            self.sink = HTTPSink(cycle)
            extensions: dict[str, Any] = self.scope.setdefault("extensions", {})
            extensions[SCOPE_KEY] = self.sink

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        sink = self.sink
        if sink is not None and sink.lost is not None:
            lost, sink.lost = sink.lost, None
            lost()


class StreamerWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets (sans-I/O) protocol, giving each connection a ``WSSink``."""

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            extensions: dict[str, Any] = scope.setdefault("extensions", {})
            extensions[SCOPE_KEY] = WSSink(self)


PROTOCOLS: dict[str, Any] = {"http": StreamerHttpToolsProtocol, "ws": StreamerWebSocketProtocol}
"""``uvicorn.Config`` arguments selecting the sink-providing protocols."""
