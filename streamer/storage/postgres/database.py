"""The PostgreSQL engine: an asyncpg pool, and the SQL dialect of the shared transactions.

Several processes (nodes) share one database, so everything the SQLite backend gets
from being the only writer is done by the database here: ``LoadJob`` locks the job's
row (``FOR UPDATE``) and ``jobs.event_count`` is the next index, so appends to one
job commit one after another, in index order, on every node; claims use ``SKIP
LOCKED``. (A global sequence would hand out numbers in one order and commit them in
another, so a reader could see ``n + 1`` before ``n``: the exact gap the API promises
never to show.)

Publishing order. ``on_commit`` runs after COMMIT, in index order per job. The row
lock orders the commits, but two local appends to one job can see their COMMITs
answered and their tasks resumed in either order, so local writes to one job also
hold a per-job ``asyncio.Lock`` from BEGIN until ``on_commit`` has returned. That
costs nothing PostgreSQL was not already serialising (the row lock), and it keeps a
burst of appends to one hot job from parking every pool connection on that lock.
In a cluster the hub has a second source (``watch()``), and the two are merged into
one contiguous run per job (``Watcher.fill``).

A write runs in its own task, shielded from the request's cancellation: once a
client has sent an append, a disconnect cannot land between COMMIT and
``on_commit`` and leave the local hub without events that are stored (the node
skips its own notifications, so nothing else would publish them).

When the database is unreachable every call raises ``Unavailable`` (503); the pool
replaces dead connections by itself once the server is back. A read that hits a
connection which died while idle (a restart) is retried once on a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from ...core.changes import feed_key
from ...core.errors import Conflict, StreamerError, Unavailable, job_not_found
from ...core.ports import OnCommit
from .. import redact_url
from ..commands import (
    Command,
    Execute,
    LoadJob,
    OldestQueued,
    Query,
    SaveChange,
    SaveJob,
    T,
    Transaction,
    drive_async,
)
from ..rows import JOB_STATE_COLUMNS, JOB_UPDATE, job_state_from_row, job_state_values
from .schema import migrate
from .watch import CHANNEL, Watcher, payload

POOL_MIN = 2
CONNECT_TIMEOUT = 5.0  # a new connection, including while the server is down
ACQUIRE_TIMEOUT = 10.0  # waiting for a free pooled connection
COMMAND_TIMEOUT = 30.0  # one statement, including waiting for a job's row lock
CLOSE_TIMEOUT = 10.0
# InternalClientError: a query sent on a connection the server is closing right then.
DB_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
# A pooled connection killed while idle (server restart, failover): retry a read once.
STALE = (
    ConnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.exceptions.AdminShutdownError,
)
PLACEHOLDER = re.compile(r"\?")

# The events, the job's columns and the NOTIFY for other nodes, in one round trip.
SAVE_APPEND = f"""
WITH inserted AS (
    INSERT INTO events (job_id, idx, type, line, lineno)
    SELECT $18::text, u.idx, u.type, u.line, u.lineno
    FROM unnest($19::bigint[], $20::text[], $21::bytea[], $22::bigint[])
        AS u(idx, type, line, lineno)
), texted AS (
    INSERT INTO search_text (job_id, first_idx, last_idx, text)
    VALUES ($18::text, $23::bigint, $24::bigint, $25::bytea)
), saved AS (
    UPDATE jobs SET status = $1, started_at = $2::text, finished_at = $3::text,
        container_id = $4::text, runner = $5::text, event_count = $6, updated_at = $7,
        last_timestamp = $8::text, byte_count = $9, redactions = $10, line_count = $11,
        carry = $12, section_state = $13::text, secrets = $14::bytea, change_ms = $15,
        change_count = $16, grew_seq = $17::bigint
    WHERE id = $18::text
)
SELECT pg_notify('{CHANNEL}', $26)
"""
# A change of the feed, the removal of the grew change it supersedes (-1: none) and
# the NOTIFY for other nodes, in one round trip.
SAVE_CHANGE = f"""
WITH superseded AS (
    DELETE FROM job_changes WHERE user_id = $1 AND seq = $6::bigint
), inserted AS (
    INSERT INTO job_changes (user_id, seq, job_id, kind, line) VALUES ($1, $2, $3, $4, $5)
)
SELECT pg_notify('{CHANNEL}', $7)
"""
# The search texts of the appends holding events ``? <= idx < ?`` (from the one that
# holds the first), as one value in index order, and the events it spans.
TEXT_CHUNK = (
    "SELECT string_agg(text, '\\x0a1e0a'::bytea ORDER BY first_idx), min(first_idx), "
    "max(last_idx) FROM search_text WHERE job_id = ? AND first_idx >= coalesce(("
    "SELECT max(first_idx) FROM search_text WHERE job_id = ? AND first_idx <= ?), 0) "
    "AND first_idx < ?"
)


def numbered(sql: str, cache: dict[str, str] = {}) -> str:  # noqa: B006 - a deliberate cache
    """The shared SQL's ``?`` placeholders as PostgreSQL's ``$1, $2, ...``."""
    text = cache.get(sql)
    if text is None:
        count = iter(range(1, 1 << 16))
        text = cache[sql] = PLACEHOLDER.sub(lambda _: f"${next(count)}", sql)
    return text


def storage_error(exc: BaseException) -> StreamerError:
    """Integrity violations are the client's conflict; anything else means try again."""
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return Conflict(f"conflicts with stored data: {exc}")
    if isinstance(exc, asyncpg.exceptions.DiskFullError):
        error = Unavailable("storage is full; the write was not stored", reason="disk_full")
        error.status, error.title = 507, "Insufficient Storage"
        return error
    error = Unavailable(
        f"database unavailable ({type(exc).__name__}); retry later", reason="storage"
    )
    error.headers["Retry-After"] = "1"
    return error


@dataclass
class _JobLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class PostgresDatabase:
    text_chunk = TEXT_CHUNK

    def __init__(self, dsn: str, node: str, pool_size: int, watcher: Watcher) -> None:
        self.dsn = dsn
        self.node = node
        self.pool_size = pool_size
        self.watcher = watcher
        self.on_commit: OnCommit | None = None
        self._pool: Any = None
        self._closing = False
        self._locks: dict[str, _JobLock] = {}
        self._writes: set[asyncio.Task[Any]] = set()

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=min(POOL_MIN, self.pool_size),
                max_size=self.pool_size,
                max_inactive_connection_lifetime=60.0,
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
                server_settings={"application_name": f"streamer-{self.node}"},
            )
            async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                await migrate(conn)
        except (*DB_ERRORS, ValueError) as exc:
            if self._pool is not None:
                self._pool.terminate()
                self._pool = None
            where = redact_url(self.dsn)
            raise Unavailable(f"cannot open PostgreSQL database {where}: {exc}") from exc

    async def close(self) -> None:
        self._closing = True
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await pool.close()
            except TimeoutError:
                pool.terminate()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        pool = self._pool
        if pool is None:
            raise Unavailable("storage is closed")
        try:
            async with pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                yield conn
        except StreamerError:
            raise
        except DB_ERRORS as exc:
            raise storage_error(exc) from exc

    # reads ---------------------------------------------------------------------------

    async def _fetch_once(self, sql: str, params: Sequence[Any]) -> list[Any]:
        async with self._connection() as conn:
            return list(await conn.fetch(numbered(sql), *params))

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return await self._fetch_once(sql, params)
        except Unavailable as exc:
            if not isinstance(exc.__cause__, STALE):
                raise
        return await self._fetch_once(sql, params)

    async def point(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return await self.fetch(sql, params)

    def id_list(self, column: str, ids: Collection[int]) -> tuple[str, Any]:
        return f"{column} = ANY(?::bigint[])", sorted(ids)

    async def reclaim(self) -> None:
        """Nothing: autovacuum reclaims the space."""

    # writes --------------------------------------------------------------------------

    async def transact(self, transaction: Transaction[T], job_id: str | None = None) -> T:
        """Run ``transaction`` in its own task; publish after COMMIT."""
        if self._closing:
            raise Unavailable("server is shutting down")
        task = asyncio.create_task(self._run(transaction, job_id))
        self._writes.add(task)
        task.add_done_callback(self._write_done)
        result: T = await asyncio.shield(task)
        return result

    def _write_done(self, task: asyncio.Task[Any]) -> None:
        self._writes.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here: the request that awaited it may be gone

    async def _run(self, transaction: Transaction[T], job_id: str | None) -> T:
        async with self._job_lock(job_id):
            try:
                async with self._connection() as conn, conn.transaction():
                    result, published = await drive_async(
                        transaction, lambda command: self._execute(conn, command)
                    )
            except Unavailable:
                if job_id is not None:  # COMMIT may have happened: look again
                    self.watcher.recheck(job_id)
                raise
            for published_job, events in published:
                fresh = await self.watcher.fill(published_job, events)
                if fresh and self.on_commit is not None:
                    self.on_commit(published_job, fresh)
            return result

    @contextlib.asynccontextmanager
    async def _job_lock(self, job_id: str | None) -> AsyncIterator[None]:
        if job_id is None:
            yield
            return
        entry = self._locks.setdefault(job_id, _JobLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[job_id]

    async def _execute(self, conn: Any, command: Command) -> Any:
        """One command of a transaction, inside its PostgreSQL transaction."""
        if isinstance(command, SaveJob):
            state, appended = command.state, command.appended
            if appended is None:
                values = job_state_values(state)
                await conn.execute(numbered(JOB_UPDATE), *values)
                return None
            events = appended.events
            await conn.execute(
                SAVE_APPEND,
                *job_state_values(state),
                [e.index for e in events],
                [e.type for e in events],
                [e.line for e in events],
                appended.lines,
                events[0].index,
                events[-1].index,
                appended.text,
                payload(self.node, state.job.id, events[0].index, events[-1].index),
            )
            return None
        if isinstance(command, SaveChange):
            change = command.change
            superseded = -1 if change.superseded is None else change.superseded
            key = feed_key(change.user_id)
            await conn.execute(
                SAVE_CHANGE,
                change.user_id,
                change.seq,
                change.job_id,
                change.kind,
                change.line,
                superseded,
                payload(self.node, key, change.seq, change.seq),
            )
            return None
        if isinstance(command, LoadJob):
            row = await conn.fetchrow(
                f"SELECT {JOB_STATE_COLUMNS} FROM jobs WHERE id = $1 AND user_id = $2 FOR UPDATE",
                command.job_id,
                command.user_id,
            )
            if row is None:
                raise job_not_found()
            return job_state_from_row(row)
        if isinstance(command, Query):
            return list(await conn.fetch(numbered(command.sql), *command.params))
        if isinstance(command, Execute):
            status = await conn.execute(numbered(command.sql), *command.params)
            return int(status.rsplit(" ", 1)[-1]) if status[-1:].isdigit() else 0
        if isinstance(command, OldestQueued):
            return await conn.fetchval(
                "SELECT id FROM jobs WHERE user_id = $1 AND status = 'queued' "
                "ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED",
                command.user_id,
            )
        raise TypeError(f"unknown command {command!r}")
