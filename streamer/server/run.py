"""Serving the app: streamer's own server (the default), or uvicorn.

``build_server`` gives an object with one interface either way (``serve(sockets)``,
``run()``, ``started``, ``should_exit``, ``app``):

- **builtin** (``http/`` with ``lean.Dispatcher``): the hot routes on the lean
  path, every connection bound of ``http/`` (header and body timeouts, pipelining,
  per-client connections, the descriptor budget, bounded pongs), and the Starlette
  app for everything else. This is what ``streamer serve`` runs.
- **uvicorn**: the same app as a plain ASGI application, every route through the
  framework (the "ordinary path"). The tests run the replay→live and security
  suites on both; uvicorn's own limits apply there, not ``http/``'s.

Either way a shutdown ends every open stream first: SSE readers get a clean end of
response, WebSocket readers close code 1012, and both resume from their last index
when the server is back (without this an SSE response would hold the shutdown for
the whole grace period and then be cut mid-write).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
from collections.abc import Sequence
from typing import Protocol

import uvicorn
from starlette.applications import Starlette

from ..core.ports import Storage
from . import access_log
from .app import create_app
from .http.limits import Limits
from .http.server import Lifespan, Server, bind, run
from .lean import Dispatcher
from .resources import Resources
from .settings import Settings

log = logging.getLogger("streamer")


class Serving(Protocol):
    app: Starlette
    started: bool
    should_exit: bool

    async def serve(self, sockets: Sequence[socket.socket] | None = None) -> None: ...

    def run(self, sockets: Sequence[socket.socket] | None = None) -> None: ...


def limits(settings: Settings) -> Limits:
    return Limits(
        header_timeout=settings.header_timeout_seconds,
        request_timeout=settings.request_timeout_seconds,
        keepalive_timeout=settings.keepalive_timeout_seconds,
        max_pipelined=settings.max_pipelined_requests,
        max_head_bytes=settings.max_request_head_bytes,
        max_headers=settings.max_request_headers,
        max_request_bytes=settings.max_body_bytes,
        write_high_water=settings.write_high_water_bytes,
        max_connections_per_client=settings.max_connections_per_client,
        unlimited_clients=settings.unlimited_client_set,
        fd_reserve=settings.fd_reserve,
        ws_max_message_bytes=settings.ws_max_message_bytes,
        ws_max_pings_per_second=settings.ws_max_pings_per_second,
        ws_ping_interval=settings.keepalive_seconds,
        ws_ping_timeout=min(20.0, 2 * settings.keepalive_seconds),
    )


def end_streams(app: Starlette) -> None:
    res: Resources | None = getattr(app.state, "resources", None)
    if res is not None:
        res.streams.close_streams("shutdown")


class BuiltinServer:
    """The app behind streamer's own HTTP server."""

    def __init__(self, settings: Settings, app: Starlette, log_level: str) -> None:
        self.settings = settings
        self.app = app
        self.log_level = log_level
        self.http = Server(
            Dispatcher(app, settings),
            limits(settings),
            lifespan=Lifespan(app),
            on_shutdown=lambda: end_streams(app),
            grace=settings.shutdown_seconds,
        )

    @property
    def started(self) -> bool:
        return self.http.started

    @property
    def should_exit(self) -> bool:
        return self.http.should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self.http.should_exit = value

    async def serve(self, sockets: Sequence[socket.socket] | None = None) -> None:
        level = logging.getLevelName(self.log_level.upper())
        access_log.configure(self.settings.log_format, level)
        sockets = list(sockets or [bind(self.settings.host, self.settings.port)])
        host, port = sockets[0].getsockname()[:2]
        log.info("listening on http://%s:%d (pid %d)", host, port, os.getpid())
        await self.http.serve(sockets)

    def run(self, sockets: Sequence[socket.socket] | None = None) -> None:
        """Serve until SIGINT or SIGTERM."""

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, setattr, self, "should_exit", True)
            await self.serve(sockets)

        run(main)


class StreamerServer(uvicorn.Server):
    """uvicorn, ending the app's streams before it waits for open responses."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        end_streams(self.app)
        await super().shutdown(sockets)


def build_server(
    settings: Settings,
    *,
    storage: Storage | None = None,
    log_level: str = "info",
    lean: bool | None = None,
) -> BuiltinServer | StreamerServer:
    """The server ``settings.http`` names (``lean`` overrides: True is the builtin
    server, False uvicorn); ``storage`` replaces the one ``settings.db`` names."""
    app = create_app(settings, storage)
    if lean if lean is not None else settings.http == "builtin":
        return BuiltinServer(settings, app, log_level)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        timeout_graceful_shutdown=int(settings.shutdown_seconds),
        ws_per_message_deflate=False,  # 100+ KiB per connection, and no shared frames
        ws_max_size=settings.ws_max_message_bytes,  # readers send nothing worth more
        ws_ping_interval=settings.keepalive_seconds,
        ws_ping_timeout=min(20.0, 2 * settings.keepalive_seconds),
        lifespan="on",
        server_header=False,
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
