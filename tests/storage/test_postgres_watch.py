"""PostgreSQL only, storage level: cross-node catch-up, outages, schema parity, driver.

The contract suite covers what both backends promise; these cover what only a
cluster has: a LISTEN connection that drops while another node appends, a database
that refuses connections for a while, and several nodes migrating at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from streamer.core.errors import Unavailable
from streamer.core.follow import Follow, batches
from streamer.core.hub import Hub
from streamer.core.models import Event
from streamer.storage import open_storage
from streamer.storage.postgres import PostgresStorage
from streamer.storage.postgres.schema import MIGRATIONS

from ..support.live import PausingJobs, ReadHooks
from ..support.postgres import pg_admin, pg_database
from .test_storage_contract import COMPLETE_OK, logs, new_user


async def open_pg(url: str) -> PostgresStorage:
    storage = open_storage(url)
    assert isinstance(storage, PostgresStorage)
    await storage.open()
    return storage


class RecordingHub(Hub):
    """A hub that also remembers every index published to it, per job, in order."""

    def __init__(self) -> None:
        super().__init__(4096)
        self.indexes: dict[str, list[int]] = {}
        self.changed = asyncio.Event()

    def publish(self, job_id: str, events: Sequence[Event]) -> None:
        self.indexes.setdefault(job_id, []).extend(e.index for e in events)
        self.changed.set()
        super().publish(job_id, events)


@contextlib.asynccontextmanager
async def node(url: str) -> AsyncIterator[tuple[PostgresStorage, RecordingHub]]:
    """A storage, a hub and the watch task feeding it: the app's lifespan, minus HTTP."""
    storage = await open_pg(url)
    hub = RecordingHub()
    storage.on_commit = hub.publish

    async def feed() -> None:
        async for job_id, events in storage.watch():
            hub.publish(job_id, events)

    task = asyncio.create_task(feed())
    try:
        async with asyncio.timeout(10):
            await storage.listening.wait()
        yield storage, hub
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await storage.close()


async def until(condition: object, what: str, seconds: float = 10.0) -> None:
    """Wait for a state change that has no event to wait on, within a bound."""
    async with asyncio.timeout(seconds):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.01)


async def follow(storage: PostgresStorage, hub: Hub, job_id: str, live: asyncio.Event) -> list[int]:
    """The indexes one ``follow()`` reader gets; sets ``live`` once it tails the hub."""

    async def replayed(_job: str) -> None:
        live.set()

    reader = Follow(PausingJobs(storage.jobs, ReadHooks(after_replay=replayed)), hub, job_id, 0)
    got: list[int] = []
    async for batch in batches(reader):
        got += [e.index for e in batch]
    return got


async def test_listen_drop_is_caught_up_from_storage(tmp_path: Path) -> None:
    """Events committed while a node's LISTEN connection is down reach its readers.

    The database refuses new connections while the other node appends, so no
    notification can reach this node: only the catch-up after reconnecting can
    deliver them, both for a job this node had delivered events of and for a job it
    had only read (never notified about).
    """
    async with pg_database() as (url, name), node(url) as (a, hub), node(url) as (b, _):
        uid = await new_user(b)
        busy, quiet = await b.jobs.create_job(uid, None, {}), await b.jobs.create_job(uid, None, {})
        await b.jobs.append(uid, busy.id, logs(5))
        live = [asyncio.Event(), asyncio.Event()]
        readers = [
            asyncio.create_task(follow(a, hub, busy.id, live[0])),
            asyncio.create_task(follow(a, hub, quiet.id, live[1])),
        ]
        async with asyncio.timeout(30):
            await asyncio.gather(*(event.wait() for event in live))
            await b.jobs.append(uid, busy.id, logs(3))  # delivered live: node a has seen 0..7
            await until(lambda: busy.id in a.watcher._seen, "delivery")

            await pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            try:
                killed = await pg_admin(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = $1",
                    a.listen_application_name,
                )
                assert len(killed) == 1
                await until(lambda: not a.listening.is_set(), "LISTEN drop")
                await b.jobs.append(uid, busy.id, logs(10))  # b's pooled connections still work
                await b.jobs.append(uid, busy.id, [COMPLETE_OK])
                await b.jobs.append(uid, quiet.id, [*logs(4), COMPLETE_OK])
                assert not a.listening.is_set()
            finally:
                await pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            busy_got, quiet_got = await asyncio.gather(*readers)
    assert busy_got == list(range(19))
    assert quiet_got == list(range(5))


async def test_each_hub_gets_one_contiguous_run_when_nodes_interleave() -> None:
    """Two nodes append to one job at once. Each node's hub receives every index once,
    in order, with no gap: when a node's own commit lands before the other node's
    notification, the missing indexes are read from storage and published first."""
    async with pg_database() as (url, _), node(url) as (a, hub_a), node(url) as (b, hub_b):
        uid = await new_user(a)
        job = await a.jobs.create_job(uid, None, {})
        async with asyncio.timeout(30):
            for i in range(50):  # each pair races for the row lock
                await asyncio.gather(
                    a.jobs.append(uid, job.id, logs(i % 3 + 1)), b.jobs.append(uid, job.id, logs(2))
                )
            await a.jobs.append(uid, job.id, [COMPLETE_OK])
            total = (await a.jobs.get_job(uid, job.id)).event_count
            for hub in (hub_a, hub_b):
                while hub.indexes.get(job.id, [])[-1:] != [total - 1]:
                    hub.changed.clear()
                    await hub.changed.wait()
    for hub in (hub_a, hub_b):
        # The first publish may start past 0 (a reader then sees the gap at the head
        # of its buffer and replays storage); from there on: contiguous, each once.
        published = hub.indexes[job.id]
        assert published == list(range(published[0], total))


async def test_outage_raises_unavailable_then_recovers() -> None:
    """While the database refuses connections every call is a 503; then all works again."""
    async with pg_database() as (url, name):
        storage = await open_pg(url)
        try:
            uid = await new_user(storage)
            job = await storage.jobs.create_job(uid, None, {})
            await pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            try:
                await pg_admin(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                    name,
                )
                for attempt in (
                    lambda: storage.ping(),
                    lambda: storage.jobs.append(uid, job.id, logs(1)),
                    lambda: storage.jobs.get_job(uid, job.id),
                    lambda: storage.jobs.read_events(job.id, 0, 10),
                ):
                    with pytest.raises(Unavailable) as raised:
                        await attempt()
                    assert raised.value.status == 503
            finally:
                await pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await storage.ping()
            assert [e.index for e in await storage.jobs.append(uid, job.id, logs(2))] == [0, 1]
            assert (await storage.jobs.get_job(uid, job.id)).event_count == 2
        finally:
            await storage.close()


async def test_nodes_migrate_concurrently_on_a_fresh_database() -> None:
    async with pg_database() as (url, _):
        nodes = await asyncio.gather(*(open_pg(url) for _ in range(4)))
        try:
            assert [await n.identity.count_users() for n in nodes] == [0, 0, 0, 0]
            versions = await nodes[0].db.fetch("SELECT version FROM schema_version ORDER BY 1")
            assert [row[0] for row in versions] == list(range(1, len(MIGRATIONS) + 1))
        finally:
            for n in nodes:
                await n.close()


async def test_schema_matches_sqlite(tmp_path: Path) -> None:
    """Same tables, same columns, same migrations on both backends."""
    sqlite_path = tmp_path / "schema.db"
    lite = open_storage(str(sqlite_path))
    await lite.open()
    await lite.close()
    with contextlib.closing(sqlite3.connect(sqlite_path)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        expected = {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in tables}
    async with pg_database() as (url, _):
        storage = await open_pg(url)
        try:
            rows = await storage.db.fetch(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
            )
        finally:
            await storage.close()
    actual: dict[str, list[str]] = {}
    for table, column in rows:
        actual.setdefault(table, []).append(column)
    assert actual == expected


def test_missing_driver_names_the_package() -> None:
    """Without asyncpg (a default dependency: only `--no-deps` leaves it out), a
    postgresql:// URL is a clear message naming what to install."""
    code = (
        "import sys; sys.modules['asyncpg'] = None\n"
        "from streamer.storage import open_storage\n"
        "open_storage('postgresql://localhost/x')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    assert "pip install asyncpg" in result.stderr
