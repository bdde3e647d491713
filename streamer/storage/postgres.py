"""PostgreSQL backend: an asyncpg pool for requests, one LISTEN connection per node.

Several processes (nodes) share one database, so everything the SQLite backend
gets from being the only writer is done by the database here: indexes come from a
locked counter row (``postgres_ops``), claims use ``SKIP LOCKED``, migrations take
an advisory lock, and the stream-token secret is created once for the cluster.

Publishing order. ``on_commit`` runs after COMMIT, in index order per job. The row
lock orders the commits, but two local appends to one job can see their COMMITs
answered and their tasks resumed in either order, so local writes to one job also
hold a per-job ``asyncio.Lock`` from BEGIN until ``on_commit`` has returned. That
costs nothing PostgreSQL was not already serialising (the row lock), and it keeps a
burst of appends to one hot job from parking every pool connection on that lock.
In a cluster the hub has a second source (``watch()``), and the two are merged into
one contiguous run per job (``Watcher.fill``): when this node commits index ``n``
before another node's ``n - 1`` has been published here, ``on_commit`` gets the
missing indexes read from storage first, and nothing is ever published twice.

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
import secrets
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from ..errors import Conflict, StreamerError, Unavailable, job_not_found
from ..models import APIKey, Event, Job, NewEvent, User
from . import postgres_ops as ops
from . import redact_url
from .base import OnCommit
from .postgres_schema import migrate
from .postgres_watch import Watcher
from .sqlite_ops import (
    JOB_COLUMNS,
    KEY_COLUMNS,
    USER_COLUMNS,
    USER_COLUMNS_U,
    job_from_row,
    key_from_row,
    user_from_row,
)

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


class PostgresStorage:
    def __init__(self, dsn: str, *, pool_size: int = 10, node: str | None = None) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        self.node = node or secrets.token_hex(4)
        self.on_commit: OnCommit | None = None
        self._pool: Any = None
        self._closing = False
        self._locks: dict[str, _JobLock] = {}
        self._writes: set[asyncio.Task[Any]] = set()
        self._secrets: dict[str, bytes] = {}
        self._watcher = Watcher(self.node, self._connect_listen, self._read_rows, self._counts)

    @property
    def listening(self) -> asyncio.Event:
        """Set while this node's LISTEN connection is up (``watch()`` is running)."""
        return self._watcher.listening

    @property
    def listen_application_name(self) -> str:
        """How the LISTEN connection shows in ``pg_stat_activity``."""
        return f"streamer-listen-{self.node}"

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

    async def ping(self) -> None:
        await self._fetch("SELECT 1")

    # plumbing ----------------------------------------------------------------------------

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

    async def _fetch_once(self, sql: str, *args: Any) -> list[Any]:
        async with self._connection() as conn:
            return list(await conn.fetch(sql, *args))

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        try:
            return await self._fetch_once(sql, *args)
        except Unavailable as exc:
            if not isinstance(exc.__cause__, STALE):
                raise
        return await self._fetch_once(sql, *args)

    async def _write(self, op: ops.Op, job_id: str | None = None) -> Any:
        """Run ``op`` in one transaction in its own task; publish after COMMIT."""
        if self._closing:
            raise Unavailable("server is shutting down")
        task = asyncio.create_task(self._run_write(op, job_id))
        self._writes.add(task)
        task.add_done_callback(self._write_done)
        return await asyncio.shield(task)

    def _write_done(self, task: asyncio.Task[Any]) -> None:
        self._writes.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here: the request that awaited it may be gone

    async def _run_write(self, op: ops.Op, job_id: str | None) -> Any:
        async with self._job_lock(job_id):
            try:
                async with self._connection() as conn, conn.transaction():
                    result, published = await op(conn)
            except Unavailable:
                if job_id is not None:  # COMMIT may have happened: look again
                    self._watcher.recheck(job_id)
                raise
            for published_job, events in published:
                fresh = await self._watcher.fill(published_job, events)
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

    # users and keys ------------------------------------------------------------------

    async def create_user(self, name: str, email: str) -> User:
        user: User = await self._write(ops.create_user(name, email))
        return user

    async def count_users(self) -> int:
        rows = await self._fetch("SELECT count(*) FROM users")
        return int(rows[0][0])

    async def get_user_by_email(self, email: str) -> User | None:
        rows = await self._fetch(f"SELECT {USER_COLUMNS} FROM users WHERE email = $1", email)
        return user_from_row(rows[0]) if rows else None

    async def get_user(self, user_id: int) -> User | None:
        rows = await self._fetch(f"SELECT {USER_COLUMNS} FROM users WHERE id = $1", user_id)
        return user_from_row(rows[0]) if rows else None

    async def list_users(self) -> list[User]:
        rows = await self._fetch(f"SELECT {USER_COLUMNS} FROM users ORDER BY id")
        return [user_from_row(row) for row in rows]

    async def deactivate_user(self, email: str) -> User | None:
        user: User | None = await self._write(ops.deactivate_user(email))
        return user

    async def server_secret(self, name: str) -> bytes:
        """Created once per cluster (INSERT ... ON CONFLICT DO NOTHING), then cached."""
        cached = self._secrets.get(name)
        if cached is not None:
            return cached
        rows = await self._fetch("SELECT value FROM secrets WHERE name = $1", name)
        secret: bytes = bytes(rows[0][0]) if rows else await self._write(ops.create_secret(name))
        self._secrets[name] = secret
        return secret

    async def create_key(self, user_id: int, name: str, prefix: str, key_hash: str) -> APIKey:
        key: APIKey = await self._write(ops.create_key(user_id, name, prefix, key_hash))
        return key

    async def list_keys(self, user_id: int) -> list[APIKey]:
        rows = await self._fetch(
            f"SELECT {KEY_COLUMNS} FROM api_keys WHERE user_id = $1 ORDER BY id", user_id
        )
        return [key_from_row(row) for row in rows]

    async def revoke_key(self, key_id: int) -> bool:
        revoked: bool = await self._write(ops.revoke_key(key_id))
        return revoked

    async def key_candidates(self, prefix: str) -> list[tuple[str, int, User]]:
        rows = await self._fetch(
            f"SELECT k.key_hash, k.id, {USER_COLUMNS_U} FROM api_keys k "
            "JOIN users u ON u.id = k.user_id "
            "WHERE k.prefix = $1 AND k.revoked_at IS NULL AND u.active",
            prefix,
        )
        return [(row[0], row[1], user_from_row(row[2:])) for row in rows]

    async def active_keys(self, key_ids: Collection[int]) -> set[int]:
        if not key_ids:
            return set()
        rows = await self._fetch(
            "SELECT k.id FROM api_keys k JOIN users u ON u.id = k.user_id "
            "WHERE k.id = ANY($1::bigint[]) AND k.revoked_at IS NULL AND u.active",
            sorted(key_ids),
        )
        return {row[0] for row in rows}

    async def touch_key(self, key_id: int, when: str) -> None:
        await self._write(ops.touch_key(key_id, when))

    # jobs ----------------------------------------------------------------------------

    async def create_job(self, user_id: int, name: str | None, metadata: dict[str, Any]) -> Job:
        job: Job = await self._write(ops.create_job(user_id, name, metadata))
        return job

    async def get_job(self, user_id: int, job_id: str) -> Job:
        rows = await self._fetch(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND user_id = $2", job_id, user_id
        )
        if not rows:
            raise job_not_found()
        return job_from_row(rows[0])

    async def list_jobs(
        self, user_id: int, status: str | None, limit: int, cursor: tuple[str, str] | None
    ) -> list[Job]:
        where, params = ["user_id = $1"], [user_id]
        if status is not None:
            params.append(status)  # type: ignore[arg-type]
            where.append(f"status = ${len(params)}")
        if cursor is not None:
            params.extend(cursor)  # type: ignore[arg-type]
            where.append(f"(created_at, id) < (${len(params) - 1}, ${len(params)})")
        params.append(limit)
        rows = await self._fetch(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE {' AND '.join(where)} "
            f"ORDER BY created_at DESC, id DESC LIMIT ${len(params)}",
            *params,
        )
        return [job_from_row(row) for row in rows]

    async def update_job(self, user_id: int, job_id: str, changes: dict[str, Any]) -> Job:
        job: Job = await self._write(ops.update_job(self.node, user_id, job_id, changes), job_id)
        return job

    async def claim_job(self, user_id: int) -> Job | None:
        job: Job | None = await self._write(ops.claim_job(self.node, user_id))
        return job

    async def delete_job(self, user_id: int, job_id: str) -> None:
        await self._write(ops.delete_job(user_id, job_id))
        self._watcher.forget(job_id)

    async def delete_finished_jobs(self, before: str, limit: int) -> int:
        """PostgreSQL's autovacuum reclaims the space; nothing more to do here."""
        deleted: int = await self._write(ops.delete_finished_jobs(before, limit))
        return deleted

    # events --------------------------------------------------------------------------

    async def append(
        self,
        user_id: int,
        job_id: str,
        events: Sequence[NewEvent],
        expected_index: int | None = None,
        *,
        byte_limit: int | None = None,
    ) -> list[Event]:
        stored: list[Event] = await self._write(
            ops.append(self.node, user_id, job_id, events, expected_index, byte_limit), job_id
        )
        return stored

    async def job_bytes(self, user_id: int, job_id: str) -> int:
        rows = await self._fetch(
            "SELECT byte_count FROM jobs WHERE id = $1 AND user_id = $2", job_id, user_id
        )
        if not rows:
            raise job_not_found()
        return int(rows[0][0])

    async def read_events(self, job_id: str, from_index: int, limit: int) -> list[Event]:
        events = await self._read_rows(job_id, from_index, limit)
        self._watcher.was_read(job_id, events)
        return events

    def watch(self) -> AsyncIterator[tuple[str, Sequence[Event]]]:
        """Other nodes' events, read back after each NOTIFY; see ``postgres_watch``."""
        return self._watcher.events()

    # for the watcher -----------------------------------------------------------------

    async def _read_rows(self, job_id: str, from_index: int, limit: int) -> list[Event]:
        rows = await self._fetch(
            "SELECT idx, type, line FROM events WHERE job_id = $1 AND idx >= $2 "
            "ORDER BY idx LIMIT $3",
            job_id,
            from_index,
            limit,
        )
        return [Event(idx, etype, bytes(line)) for idx, etype, line in rows]

    async def _counts(self, job_ids: list[str]) -> dict[str, int]:
        rows = await self._fetch(
            "SELECT id, event_count FROM jobs WHERE id = ANY($1::text[])", job_ids
        )
        return {row[0]: row[1] for row in rows}

    async def _connect_listen(self) -> Any:
        return await asyncpg.connect(
            self.dsn,
            timeout=CONNECT_TIMEOUT,
            server_settings={"application_name": self.listen_application_name},
        )
