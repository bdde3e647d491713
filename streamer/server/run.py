"""Running the app under uvicorn, with a shutdown that ends streams cleanly.

uvicorn waits for open responses before it runs the lifespan shutdown, and an SSE
response never ends by itself, so without help Ctrl-C would hang until the grace
period and then cut streams mid-write. ``StreamerServer`` ends every open stream
first: SSE readers get a clean end of response, WebSocket readers close code 1012,
and both resume from their last index when the server is back.
"""

from __future__ import annotations

import gc
import logging
import socket

import uvicorn
from starlette.applications import Starlette

from ..core.ports import Storage
from .app import create_app
from .fastpath import protocols
from .settings import Settings

log = logging.getLogger("streamer")


class StreamerServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        res = getattr(self.app.state, "resources", None)
        if res is not None:
            res.streams.close_streams("shutdown")
        await super().shutdown(sockets)


def build_server(
    settings: Settings,
    *,
    storage: Storage | None = None,
    log_level: str = "info",
    direct_writes: bool = True,
) -> StreamerServer:
    """uvicorn configured for streaming. ``direct_writes=False`` keeps uvicorn's own
    protocols, so every delivery takes the ASGI send path: tests run the replay→live
    machinery both ways. On a uvicorn the fast path was not tested on, it is off
    (with a warning): the ordinary path works on any."""
    if direct_writes and not protocols.supported():
        log.warning(
            "uvicorn %s is outside the range the socket fast path was tested on (%s); "
            "serving without it",
            uvicorn.__version__,
            protocols.TESTED,
        )
        direct_writes = False
    app = create_app(settings, storage)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        timeout_graceful_shutdown=int(settings.shutdown_seconds),
        ws_per_message_deflate=False,  # 100+ KiB per connection, and no shared frames
        ws_max_size=settings.ws_max_message_bytes,  # readers send nothing worth more
        # Pings keep idle WebSockets alive through proxies' read timeouts (like SSE's
        # keepalive comments) and find half-open connections.
        ws_ping_interval=settings.keepalive_seconds,
        ws_ping_timeout=min(20.0, 2 * settings.keepalive_seconds),
        lifespan="on",
        server_header=False,
        **(protocols.PROTOCOLS if direct_writes else {}),  # sinks for the fast path
    )
    return StreamerServer(config, app)


def tune_gc() -> None:
    """Collect cycles less often in a serving process.

    Requests and deliveries allocate many short-lived objects and almost no cycles
    (reference counting frees them), yet the default threshold (700) runs a
    generation-0 collection every few requests, each walking every young object.
    ``freeze()`` moves everything imported at startup out of every later
    collection's way.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
