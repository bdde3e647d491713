"""Listening, admitting and shedding connections, and a clean shutdown.

``Server`` owns the listening sockets and every open connection. What it holds for
whoever connects, with no credentials at all:

- **Per client.** At most ``max_connections_per_client`` connections from one
  address; the next is closed at once. Addresses in ``unlimited_clients`` (by
  default the machine itself, where a reverse proxy would run) have no cap.
- **File descriptors.** At start the soft ``RLIMIT_NOFILE`` is raised to the hard
  limit; connections may then use all but ``fd_reserve`` descriptors (kept for the
  database, logs, health checks). At the budget, a new connection first makes room
  by closing the oldest connection that is answering nothing (reading a slow
  request head, or idle between requests); if every connection is busy the new one
  is answered 503 with ``Retry-After`` and closed. Established streams are never
  shed for a newcomer.
- **Liveness.** One task pings every open WebSocket each ``ws_ping_interval`` and
  closes those silent for ``ws_ping_timeout`` more (half-open connections).

Shutdown stops accepting, asks the app to end its streams (SSE readers get a clean
end, WebSocket readers close code 1012: both resume), waits for requests in flight
up to the grace period, then closes what is left and runs the app's lifespan end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from .asgi import ASGIApp, Message
from .limits import Limits
from .protocol import Dispatch, HTTPProtocol

log = logging.getLogger("streamer.http")
RETRY_AFTER = b"1"
SWEEP_EVERY = 0.25  # seconds between checks of the connections' deadlines


def raise_fd_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; the soft limit after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 16


class Lifespan:
    """Drives an ASGI app's lifespan protocol: startup before serving, shutdown after."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._startup: asyncio.Future[None] | None = None
        self._shutdown: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        loop = asyncio.get_running_loop()
        self._startup, self._shutdown = loop.create_future(), loop.create_future()
        self._task = loop.create_task(self._run())
        await self._inbox.put({"type": "lifespan.startup"})
        await self._startup

    async def shutdown(self) -> None:
        if self._shutdown is None:
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._shutdown

    async def _run(self) -> None:
        async def send(message: Message) -> None:
            kind = message["type"]
            target = self._startup if kind.startswith("lifespan.startup") else self._shutdown
            if target is not None and not target.done():
                if kind.endswith(".failed"):
                    target.set_exception(RuntimeError(message.get("message", kind)))
                else:
                    target.set_result(None)

        try:
            await self.app(
                {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, self._inbox.get, send
            )
        except BaseException as exc:
            for future in (self._startup, self._shutdown):
                if future is not None and not future.done():
                    future.set_exception(
                        exc if isinstance(exc, Exception) else RuntimeError(str(exc))
                    )
            raise


class Server:
    """An HTTP/1.1 and WebSocket server for one app."""

    def __init__(
        self,
        dispatch: Dispatch,
        limits: Limits,
        *,
        lifespan: Lifespan | None = None,
        on_shutdown: Callable[[], None] | None = None,
        grace: float = 10.0,
    ) -> None:
        self.dispatch = dispatch
        self.limits = limits
        self.lifespan = lifespan
        self.on_shutdown = on_shutdown
        self.grace = grace
        self.loop = (
            asyncio.get_event_loop_policy().get_event_loop() if False else None
        )  # set in serve
        self.connections: dict[HTTPProtocol, None] = {}  # oldest first
        self.timed: dict[HTTPProtocol, None] = {}  # those with a deadline armed
        self.per_client: Counter[str] = Counter()
        self.budget = 0
        self.refused: Counter[str] = Counter()  # why connections and requests were refused
        self.started = False
        self.shutting_down = False
        self._exit = asyncio.Event()
        self._quiet = asyncio.Event()  # set during shutdown once no request is in flight
        self._servers: list[asyncio.AbstractServer] = []

    # the life cycle -----------------------------------------------------------------------

    @property
    def should_exit(self) -> bool:
        return self._exit.is_set()

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        if value:
            self._exit.set()

    async def serve(self, sockets: Iterable[socket.socket]) -> None:
        """Serve on ``sockets`` (bound, not yet listening) until ``should_exit``."""
        loop = asyncio.get_running_loop()
        self._exit, self._quiet = asyncio.Event(), asyncio.Event()
        limit = raise_fd_limit()
        self.budget = max(16, limit - open_fds() - self.limits.fd_reserve)
        if self.lifespan is not None:
            await self.lifespan.startup()
        for sock in sockets:
            sock.setblocking(False)
            server = await loop.create_server(
                lambda: HTTPProtocol(self), sock=sock, backlog=2048, start_serving=True
            )
            self._servers.append(server)
        ticker = loop.create_task(self._tick(), name="streamer-ws-pings")
        sweeper = loop.create_task(self._sweep(), name="streamer-deadlines")
        self.started = True
        try:
            await self._exit.wait()
        finally:
            ticker.cancel()
            sweeper.cancel()
            await self._shut_down()

    async def _shut_down(self) -> None:
        self.shutting_down = True
        for server in self._servers:
            server.close()
        if self.on_shutdown is not None:
            self.on_shutdown()  # streams end now; their connections then finish
        for conn in list(self.connections):
            if conn.idle:
                conn.close()
        self.answered()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.grace):
                await self._quiet.wait()
        for conn in list(self.connections):
            if conn.websocket is not None:
                conn.websocket.close(1012, "server restarting: resume from the next index")
            else:
                conn.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        if self.lifespan is not None:
            await self.lifespan.shutdown()

    async def _sweep(self) -> None:
        """Every connection's deadline (head, body, keep-alive, linger), checked
        several times a second: a timeout fires within a fraction of a second of its
        time, at the cost of a float per request instead of a timer."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            now = loop.time()
            for conn in [c for c in self.timed if now >= c.deadline]:
                conn.expired(now)

    async def _tick(self) -> None:
        """Ping open WebSockets; close the ones that stopped answering."""
        interval = self.limits.ws_ping_interval
        if interval <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            now = asyncio.get_running_loop().time()
            for conn in list(self.connections):
                ws = conn.websocket
                if ws is None or ws.close_sent:
                    continue
                if now - ws.last_seen > interval + self.limits.ws_ping_timeout:
                    ws.close(1011, "keepalive ping timeout")
                    conn.close()
                elif now - ws.last_seen >= interval:
                    ws.ping()

    # admission ------------------------------------------------------------------------------

    def admit(self, conn: HTTPProtocol) -> bool:
        """Whether ``conn`` may stay; if not it has been answered and closed."""
        client = conn.client[0] if conn.client else "-"
        if (
            self.per_client[client] >= self.limits.max_connections_per_client
            and client not in self.limits.unlimited_clients
        ):
            self.refused["per_client"] += 1
            conn.close()
            return False
        if len(self.connections) >= self.budget and not self._make_room():
            self.refused["fd_budget"] += 1
            conn.write(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n"
                b"retry-after: %s\r\ncontent-length: 22\r\nconnection: close\r\n\r\n"
                b"server at capacity\r\n\r\n" % RETRY_AFTER
            )
            conn.close()
            return False
        self.connections[conn] = None
        self.per_client[client] += 1
        return True

    def _make_room(self) -> bool:
        """Close the oldest connection that is answering nothing."""
        for conn in self.connections:
            if conn.idle:
                self.refused["evicted_idle"] += 1
                conn.close()
                self.forget(conn)
                return True
        return False

    def forget(self, conn: HTTPProtocol) -> None:
        self.timed.pop(conn, None)
        if self.connections.pop(conn, 0) is None:
            client = conn.client[0] if conn.client else "-"
            self.per_client[client] -= 1
            if self.per_client[client] <= 0:
                del self.per_client[client]

    def answered(self) -> None:
        """A response is over (from the protocol): during shutdown, is all quiet?"""
        if self.shutting_down and not any(
            c.active is not None and c.websocket is None for c in self.connections
        ):
            self._quiet.set()

    def note_refused(self, conn: HTTPProtocol, status: int, detail: str) -> None:
        """A request the protocol refused itself (malformed, too large, too slow)."""
        self.refused[str(status)] += 1
        client = conn.client[0] if conn.client else "-"
        log.info("refused a request from %s with %d: %s", client, status, detail)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (IPv6 when the host says so)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """``asyncio.run(main())`` on uvloop when it is installed (faster sockets)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
        return
    uvloop.run(main())
