"""API keys and jobs are read on the event loop's own SQLite connection, not cached.

``SQLiteStorage.key_candidates`` and ``get_job`` run as point reads on a connection of
the loop thread instead of a hop to an aiosqlite thread. What must not change: every
read sees the latest commit of any process (a key revoked with ``streamer keys
revoke`` gets 401 at the very next request), a read never waits on the loop, and
anything unusual falls back to the reader threads.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from streamer.core import keys
from streamer.storage.sqlite import SQLiteStorage

from ..support.live import LiveServer
from ..support.rest_helpers import JOBS


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
    storage = SQLiteStorage(str(tmp_path / "point.db"))
    await storage.open()
    try:
        yield storage
    finally:
        await storage.close()


def no_reader_threads(storage: SQLiteStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any read through the aiosqlite threads fail the test."""

    async def refuse(sql: str, params: Any = ()) -> list[Any]:
        raise AssertionError(f"read went to a reader thread: {sql}")

    monkeypatch.setattr(storage.db, "fetch", refuse)


async def test_point_reads_see_every_commit_of_another_connection(
    storage: SQLiteStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await storage.identity.create_user("ann", "ann@example.com")
    keys = [
        await storage.identity.create_key(user.id, f"k{i}", "stk_aaaa", f"h{i}") for i in range(10)
    ]
    job = await storage.jobs.create_job(user.id, "j", {})
    no_reader_threads(storage, monkeypatch)
    other = sqlite3.connect(storage.path, isolation_level=None)  # another process, say the CLI
    try:
        for n, key in enumerate(keys):
            assert len(await storage.identity.key_candidates("stk_aaaa")) == len(keys) - n
            assert storage.db._point is not None and not storage.db._point.in_transaction
            other.execute("UPDATE api_keys SET revoked_at = 'now' WHERE id = ?", (key.id,))
        assert await storage.identity.key_candidates("stk_aaaa") == []
        other.execute("UPDATE jobs SET event_count = 7 WHERE id = ?", (job.id,))
        assert (await storage.jobs.get_job(user.id, job.id)).event_count == 7
    finally:
        other.close()


async def test_an_open_write_elsewhere_neither_blocks_nor_shows(
    storage: SQLiteStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WAL: a point read sees the last commit at once while another connection holds
    the write lock with an uncommitted deactivation, and the commit when it lands."""
    user = await storage.identity.create_user("bob", "bob@example.com")
    await storage.identity.create_key(user.id, "k", "stk_bbbb", "hb")
    no_reader_threads(storage, monkeypatch)
    other = sqlite3.connect(storage.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE users SET active = 0 WHERE id = ?", (user.id,))
        started = time.monotonic()
        assert len(await storage.identity.key_candidates("stk_bbbb")) == 1
        assert time.monotonic() - started < 0.5
        other.execute("COMMIT")
        assert await storage.identity.key_candidates("stk_bbbb") == []
    finally:
        other.close()


class Failing:
    """Stands in for the point connection: every statement fails like a busy database."""

    def execute(self, sql: str, params: Any = ()) -> Any:
        raise sqlite3.OperationalError("database is locked")

    def close(self) -> None:
        pass


@pytest.mark.parametrize("broken", ["busy", "closed"])
async def test_a_point_read_that_cannot_run_goes_to_a_reader_thread(
    storage: SQLiteStorage, broken: str
) -> None:
    user = await storage.identity.create_user("cy", "cy@example.com")
    key = await storage.identity.create_key(user.id, "k", "stk_cccc", "hc")
    job = await storage.jobs.create_job(user.id, "j", {"a": 1})
    if broken == "closed":
        assert storage.db._point is not None
        storage.db._point.close()
    else:
        storage.db._point = Failing()  # type: ignore[assignment]
    [(stored_hash, key_id, owner)] = await storage.identity.key_candidates("stk_cccc")
    assert (stored_hash, key_id, owner) == ("hc", key.id, user)
    assert (await storage.jobs.get_job(user.id, job.id)).metadata == {"a": 1}


async def test_a_key_revoked_by_the_cli_is_refused_at_the_very_next_append(
    live_server: LiveServer,
) -> None:
    server = live_server
    storage = server.resources.storage
    user = await keys.verify_key(storage.identity, server.key)
    doomed = await keys.issue_key(storage.identity, user.id, "doomed")
    [key_id] = [k.id for k in await storage.identity.list_keys(user.id) if k.name == "doomed"]
    job = await server.create_job()
    client = server.client(doomed)
    for i in range(3):
        r = await client.post(f"{JOBS}/{job}/events", json={"data": f"{i}\n"})
        assert r.status_code == 201, r.text
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "streamer", "keys", "revoke", str(key_id)),
        *("--db", server.settings.db_url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    r = await client.post(f"{JOBS}/{job}/events", json={"data": "too late\n"})
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    r = await server.client().post(f"{JOBS}/{job}/events", json={"data": "owner\n"})
    assert r.json() == {"first_index": 3, "last_index": 3}


async def test_routes_still_answer_405_head_and_problems(live_server: LiveServer) -> None:
    """The JSON routes' own ASGI app (no per-route exception wrapper): 405 names every
    method, HEAD answers like GET without a body, handler errors are problem+json."""
    client = live_server.client()
    job = await live_server.create_job()
    r = await client.put(f"{JOBS}/{job}/events", json={})
    assert r.status_code == 405
    assert set(r.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}
    head = await client.head(f"{JOBS}/{job}/events")
    assert head.status_code == 200 and head.content == b""
    r = await client.post(f"{JOBS}/{job}/events", content=b'{"data": 1}')
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.json()["field"] == "data"
    r = await client.post(f"{JOBS}/nope/events", json={"data": "x"})
    assert r.status_code == 404
