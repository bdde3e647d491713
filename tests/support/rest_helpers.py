"""Shared by the REST test modules: one live server per module, a fresh user per test.

Starting and stopping uvicorn costs about 0.3 s, and the REST modules hold a few
hundred tests; so each module runs one real server (real uvicorn, real SQLite
file), and each test gets a user of its own, which keeps tests independent: a
user sees only its own jobs.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from streamer.server.settings import Settings

from .live import LiveServer

JOBS = "/api/v1/jobs"
_users = itertools.count()


@contextlib.asynccontextmanager
async def module_server(
    tmp_path_factory: pytest.TempPathFactory, **changes: Any
) -> AsyncIterator[LiveServer]:
    """A running server on a fresh database, with ``Settings`` ``changes`` applied."""
    db = tmp_path_factory.mktemp("db") / "streamer.db"
    server = LiveServer(Settings(db=str(db)).replace(**changes))
    await server.start()
    try:
        yield server
    finally:
        for client in server.clients:
            await client.aclose()
        await server.stop()


async def with_fresh_user(server: LiveServer) -> LiveServer:
    """The module's server, its default key now a new user's: this test's own."""
    server.key = await server.new_user(f"user{next(_users)}")
    return server


def assert_problem(r: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    """An RFC 9457 body with the expected status (and ``field``, when given)."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/problem+json", r.headers
    body: dict[str, Any] = r.json()
    assert {"type", "title", "status", "detail"} <= body.keys(), body
    assert body["status"] == status and isinstance(body["detail"], str) and body["detail"]
    if field is not None:
        assert body.get("field") == field, body
    return body
