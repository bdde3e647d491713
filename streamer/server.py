"""Running the app under uvicorn, with a shutdown that ends streams cleanly.

uvicorn waits for open responses before it runs the lifespan shutdown, and an SSE
response never ends by itself, so without help Ctrl-C would hang until the grace
period and then cut streams mid-write. ``StreamerServer`` ends every open stream
first: SSE readers get a clean end of response, WebSocket readers close code 1012,
and both resume from their last index when the server is back.
"""

from __future__ import annotations

import socket

import uvicorn
from starlette.applications import Starlette

from .app import create_app
from .config import Settings
from .follow import FollowHooks


class StreamerServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        ctx = getattr(self.app.state, "ctx", None)
        if ctx is not None:
            ctx.close_streams("shutdown")
        await super().shutdown(sockets)


def build_server(
    settings: Settings, *, hooks: FollowHooks | None = None, log_level: str = "info"
) -> StreamerServer:
    app = create_app(settings, hooks)
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
        ws_ping_timeout=max(20.0, settings.keepalive_seconds),
        lifespan="on",
        server_header=False,
    )
    return StreamerServer(config, app)
