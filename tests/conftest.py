"""Fixtures: a real uvicorn server on a free loopback port, real clients, real SQLite.

In-process ASGI test clients buffer whole response bodies, so an endless SSE
stream would hang them; every streaming test here talks to a real server over TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamer import auth
from streamer.config import Settings
from streamer.context import Context
from streamer.follow import FollowHooks
from streamer.server import StreamerServer, build_server

from .clients import SSEClient, ws_events

pytest_plugins: list[str] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run soak and long crash loops")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def free_socket(port: int = 0) -> socket.socket:
    """A loopback socket on ``port`` (0: any free one), reusable right after a restart."""
    # IPPROTO_TCP explicitly: asyncio only disables Nagle when sock.proto says TCP, and
    # Nagle plus delayed ACKs would add ~40 ms to every keep-alive request.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


@dataclass
class LiveServer:
    """A running ``streamer`` app and a first user's API key."""

    settings: Settings
    hooks: FollowHooks
    port: int = 0
    key: str = ""
    server: StreamerServer | None = None
    task: asyncio.Task[None] | None = None
    clients: list[httpx.AsyncClient] = field(default_factory=list)
    direct_writes: bool = True  # False: every delivery through the ASGI send path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def ctx(self) -> Context:
        assert self.server is not None
        ctx: Context = self.server.app.state.ctx
        return ctx

    async def start(self) -> None:
        """Start on a free port, or on the same port again after ``stop()``."""
        sock = free_socket(self.port)
        self.port = sock.getsockname()[1]
        self.settings = self.settings.replace(port=self.port)
        self.server = build_server(
            self.settings, hooks=self.hooks, log_level="warning", direct_writes=self.direct_writes
        )
        self.server.config.timeout_graceful_shutdown = 5
        self.task = asyncio.create_task(self.server.serve(sockets=[sock]))
        while not self.server.started:
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self.server is not None and self.task is not None:
            self.server.should_exit = True
            await self.task
            self.server = self.task = None

    async def restart(self) -> None:
        """Stop and start on the same port and database: clients reconnect to one URL."""
        await self.stop()
        await self.start()

    async def new_user(self, name: str = "user") -> str:
        """A new user with its own API key."""
        _, key = await auth.create_user_with_key(
            self.ctx.storage, name, f"{name}-{len(self.clients)}-{id(self)}@example.com"
        )
        return key

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
        """An HTTP client for this server, with ``key`` (default: the first user's)."""
        headers = {"Authorization": f"Bearer {key or self.key}"} if key != "" else {}
        kwargs.setdefault("verify", False)  # plain HTTP: skip loading the CA bundle (~190 ms)
        client = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=httpx.Timeout(30.0), **kwargs
        )
        self.clients.append(client)
        return client

    async def create_job(self, client: httpx.AsyncClient | None = None, **body: Any) -> str:
        response = await (client or self.client()).post("/api/v1/jobs", json=body)
        assert response.status_code == 201, response.text
        job_id: str = response.json()["id"]
        return job_id

    def sse(self, job_id: str, key: str | None = None, **params: Any) -> SSEClient:
        return SSEClient(self.url, job_id, key or self.key, params)

    def ws(self, job_id: str, key: str | None = None, **params: Any) -> Any:
        return ws_events(self.ws_url, job_id, key or self.key, params)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(db=str(tmp_path / "streamer.db"), keepalive_seconds=15.0)


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll a cheap in-process condition until it holds (bounded by ``timeout``)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def serving(settings: Settings, **options: Any) -> AsyncIterator[LiveServer]:
    """A started ``LiveServer`` with a first user (``options`` go to ``LiveServer``),
    stopped with its clients closed afterwards."""
    server = LiveServer(settings, options.pop("hooks", FollowHooks()), **options)
    await server.start()
    server.key = await server.new_user("owner")
    try:
        yield server
    finally:
        for client in server.clients:
            await client.aclose()
        await server.stop()


@pytest.fixture
async def live_server(settings: Settings) -> AsyncIterator[LiveServer]:
    async with serving(settings) as server:
        yield server
