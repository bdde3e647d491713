"""A real streamer server on a free loopback port, for tests: ``LiveServer``, ``serving``.

In-process ASGI test clients buffer whole response bodies, so an endless SSE
stream would hang them; every streaming test talks to a real server over TCP.
The server's storage is wrapped in ``PausingStorage``: a test can pause a reader at
the two moments where replay→live races would live (``ReadHooks``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from streamer.core import keys
from streamer.core.models import Event
from streamer.core.ports import Identity, Jobs, OnCommit, Storage
from streamer.server.resources import Resources
from streamer.server.run import BuiltinServer, StreamerServer, build_server
from streamer.server.settings import Settings
from streamer.storage import open_storage

from .clients import SSEClient, ws_events

Hook = Callable[[str], Awaitable[None]]


@dataclass
class ReadHooks:
    """Awaited around a server's reads of event logs (every reader's, shared pages'):
    ``after_subscribe`` before a read starts (the reader has subscribed to the hub and
    is about to replay), ``after_replay`` when a read came back short (the reader has
    replayed everything stored and is about to go live). Either is awaited with the
    job id; events appended while it waits fall exactly in the window it names."""

    after_subscribe: Hook | None = None
    after_replay: Hook | None = None


class PausingJobs:
    """``Jobs`` whose ``read_events`` awaits the ``ReadHooks``."""

    def __init__(self, inner: Jobs, hooks: ReadHooks) -> None:
        self.inner = inner
        self.hooks = hooks

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def read_events(self, job_id: str, from_index: int, limit: int) -> list[Event]:
        if self.hooks.after_subscribe is not None:
            await self.hooks.after_subscribe(job_id)
        events = await self.inner.read_events(job_id, from_index, limit)
        if len(events) < limit and self.hooks.after_replay is not None:
            await self.hooks.after_replay(job_id)
        return events


class PausingStorage:
    """A storage whose ``jobs`` is ``PausingJobs``; everything else is the inner one."""

    def __init__(self, inner: Storage, hooks: ReadHooks) -> None:
        self.inner = inner
        self.identity: Identity = inner.identity
        self.jobs: Jobs = PausingJobs(inner.jobs, hooks)  # type: ignore[assignment]

    def __getattr__(self, name: str) -> Any:  # the backend's own extras (writer_stats, db)
        return getattr(self.inner, name)

    @property
    def on_commit(self) -> OnCommit | None:
        return self.inner.on_commit

    @on_commit.setter
    def on_commit(self, callback: OnCommit | None) -> None:
        self.inner.on_commit = callback

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def ping(self) -> None:
        await self.inner.ping()

    def watch(self) -> AsyncIterator[tuple[str, Sequence[Event]]]:
        return self.inner.watch()


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
    hooks: ReadHooks = field(default_factory=ReadHooks)
    port: int = 0
    key: str = ""
    server: BuiltinServer | StreamerServer | None = None
    task: asyncio.Task[None] | None = None
    clients: list[httpx.AsyncClient] = field(default_factory=list)
    lean: bool = True  # False: uvicorn, every route through the framework (the ASGI path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def resources(self) -> Resources:
        assert self.server is not None
        found: Resources = self.server.app.state.resources
        return found

    async def start(self) -> None:
        """Start on a free port, or on the same port again after ``stop()``."""
        sock = free_socket(self.port)
        self.port = sock.getsockname()[1]
        self.settings = self.settings.replace(port=self.port)
        settings = self.settings.replace(shutdown_seconds=min(5.0, self.settings.shutdown_seconds))
        storage = open_storage(settings.db_url, sync=settings.sync, policy=settings.change_policy)
        self.server = build_server(
            settings,
            storage=PausingStorage(storage, self.hooks),
            log_level="warning",
            lean=self.lean,
        )
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
        _, key = await keys.create_user_with_key(
            self.resources.storage.identity,
            name,
            f"{name}-{len(self.clients)}-{id(self)}@example.com",
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


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll a cheap in-process condition until it holds (bounded by ``timeout``)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def serving(settings: Settings, **options: Any) -> AsyncIterator[LiveServer]:
    """A started ``LiveServer`` with a first user (``options`` go to ``LiveServer``),
    stopped with its clients closed afterwards."""
    server = LiveServer(settings, **options)
    await server.start()
    server.key = await server.new_user("owner")
    try:
        yield server
    finally:
        for client in server.clients:
            await client.aclose()
        await server.stop()
