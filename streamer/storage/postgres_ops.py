"""The write transactions of the PostgreSQL backend.

Each builder returns an ``Op``: an async function of a connection, run inside one
transaction, returning ``(result, published)`` like the SQLite ops. The storage
commits, then hands ``published`` to ``on_commit``.

Index assignment is a counter row, not a sequence: the job's row is locked with
``SELECT ... FOR UPDATE``, ``jobs.event_count`` is the next index, and the events,
the new count and the NOTIFY go out in one statement. Appends to one job therefore
commit one after another, in index order, on every node of the cluster; appends to
different jobs never wait for each other. (A global sequence would hand out numbers
in one order and commit them in another, so a reader could see ``n + 1`` before
``n``: the exact gap the API promises never to show.)
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

from ..errors import Conflict, job_not_found
from ..limits import check_job_bytes
from ..models import (
    APIKey,
    Event,
    Job,
    NewEvent,
    User,
    apply_changes,
    encode_events,
    utcnow,
)
from .postgres_watch import CHANNEL, payload
from .sqlite_ops import JOB_COLUMNS, USER_COLUMNS, job_from_row, new_job_id, user_from_row

Published = list[tuple[str, list[Event]]]
Op = Callable[[Any], Awaitable[tuple[Any, Published]]]

INSERT_EVENTS = f"""
WITH inserted AS (
    INSERT INTO events (job_id, idx, type, line)
    SELECT $1::text, u.idx, u.type, u.line
    FROM unnest($2::bigint[], $3::text[], $4::bytea[]) AS u(idx, type, line)
), counted AS (
    UPDATE jobs SET event_count = $5, status = $6, started_at = $7::text,
        finished_at = $8::text, updated_at = $9, last_timestamp = $10,
        byte_count = byte_count + $12
    WHERE id = $1::text
)
SELECT pg_notify('{CHANNEL}', $11)
"""


async def lock_job(conn: Any, user_id: int, job_id: str) -> tuple[Job, str | None, int]:
    """The job's row, locked until commit, its last event timestamp and stored bytes;
    or a 404."""
    row = await conn.fetchrow(
        f"SELECT {JOB_COLUMNS}, last_timestamp, byte_count FROM jobs "
        "WHERE id = $1 AND user_id = $2 FOR UPDATE",
        job_id,
        user_id,
    )
    if row is None:
        raise job_not_found()
    return job_from_row(row), row[12], row[13]


async def insert_events(
    conn: Any,
    node: str,
    job: Job,
    last_timestamp: str | None,
    events: Sequence[NewEvent],
    byte_count: int = 0,
    byte_limit: int | None = None,
) -> list[Event]:
    """Store ``events`` at the job's next indexes, count their bytes, move its status
    along, NOTIFY.

    One round trip. The timestamp never goes back, even when this node's clock is
    behind the node that appended the previous event. ``byte_count`` is the job's
    (locked, so current) stored bytes, checked against ``byte_limit``.
    """
    now = utcnow()
    timestamp = max(now, last_timestamp) if last_timestamp else now
    first = job.event_count
    stored = encode_events(events, first, timestamp)
    size = sum(len(e.line) for e in stored)
    check_job_bytes(byte_count, size, events, byte_limit)
    job.record_append(events[-1], len(stored), now)
    await conn.execute(
        INSERT_EVENTS,
        job.id,
        [e.index for e in stored],
        [e.type for e in stored],
        [e.line for e in stored],
        job.event_count,
        job.status,
        job.started_at,
        job.finished_at,
        now,
        timestamp,
        payload(node, job.id, first, job.event_count - 1),
        size,
    )
    return stored


def append(
    node: str,
    user_id: int,
    job_id: str,
    events: Sequence[NewEvent],
    expected_index: int | None,
    byte_limit: int | None = None,
) -> Op:
    async def op(conn: Any) -> tuple[list[Event], Published]:
        job, last_timestamp, byte_count = await lock_job(conn, user_id, job_id)
        if job.is_final:
            raise Conflict(f"job is {job.status}: its log is closed", next_index=job.event_count)
        if expected_index is not None and expected_index != job.event_count:
            raise Conflict(
                f"expected_index is {expected_index} but the next index is {job.event_count}",
                next_index=job.event_count,
            )
        stored = await insert_events(
            conn, node, job, last_timestamp, events, byte_count, byte_limit
        )
        return stored, [(job_id, stored)]

    return op


async def _update(
    conn: Any, node: str, user_id: int, job_id: str, changes: dict[str, Any]
) -> tuple[Job, Published]:
    job, last_timestamp, _ = await lock_job(conn, user_id, job_id)
    now = utcnow()
    published: Published = []
    closing = apply_changes(job, changes, now)
    if closing is not None:
        stored = await insert_events(conn, node, job, last_timestamp, [closing])
        published.append((job_id, stored))
        job.status = changes["status"]
    await conn.execute(
        "UPDATE jobs SET status = $1, started_at = $2, container_id = $3, runner = $4, "
        "updated_at = $5 WHERE id = $6",
        job.status,
        job.started_at,
        job.container_id,
        job.runner,
        now,
        job_id,
    )
    return job, published


def update_job(node: str, user_id: int, job_id: str, changes: dict[str, Any]) -> Op:
    async def op(conn: Any) -> tuple[Job, Published]:
        return await _update(conn, node, user_id, job_id, changes)

    return op


def claim_job(node: str, user_id: int) -> Op:
    """The oldest queued job nobody else is claiming right now: ``SKIP LOCKED``.

    Concurrent claims (on any node) each lock a different row instead of queueing
    behind the first, and a job locked by a concurrent PATCH is simply not offered.
    """

    async def op(conn: Any) -> tuple[Job | None, Published]:
        job_id = await conn.fetchval(
            "SELECT id FROM jobs WHERE user_id = $1 AND status = 'queued' "
            "ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED",
            user_id,
        )
        if job_id is None:
            return None, []
        return await _update(conn, node, user_id, job_id, {"status": "running"})

    return op


def create_job(user_id: int, name: str | None, metadata: dict[str, Any]) -> Op:
    async def op(conn: Any) -> tuple[Job, Published]:
        now = utcnow()
        job = Job(new_job_id(), user_id, name, "queued", metadata, now, now)
        await conn.execute(
            "INSERT INTO jobs (id, user_id, name, status, metadata, created_at, updated_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7)",
            job.id,
            user_id,
            name,
            job.status,
            orjson.dumps(metadata).decode(),
            now,
            now,
        )
        return job, []

    return op


def create_user(name: str, email: str) -> Op:
    async def op(conn: Any) -> tuple[User, Published]:
        now = utcnow()
        user_id = await conn.fetchval(
            "INSERT INTO users (name, email, active, created_at) VALUES ($1, $2, TRUE, $3) "
            "RETURNING id",
            name,
            email,
            now,
        )
        return User(user_id, name, email, True, now), []

    return op


def create_key(user_id: int, name: str, prefix: str, key_hash: str) -> Op:
    async def op(conn: Any) -> tuple[APIKey, Published]:
        now = utcnow()
        key_id = await conn.fetchval(
            "INSERT INTO api_keys (user_id, name, prefix, key_hash, created_at) "
            "VALUES ($1, $2, $3, $4, $5) RETURNING id",
            user_id,
            name,
            prefix,
            key_hash,
            now,
        )
        return APIKey(key_id, user_id, name, prefix, now, None, True), []

    return op


def revoke_key(key_id: int) -> Op:
    async def op(conn: Any) -> tuple[bool, Published]:
        revoked = await conn.fetchval(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL RETURNING id",
            utcnow(),
            key_id,
        )
        return revoked is not None, []

    return op


def deactivate_user(email: str) -> Op:
    async def op(conn: Any) -> tuple[User | None, Published]:
        row = await conn.fetchrow(
            f"UPDATE users SET active = FALSE WHERE email = $1 RETURNING {USER_COLUMNS}", email
        )
        return (user_from_row(row) if row is not None else None), []

    return op


def touch_key(key_id: int, when: str) -> Op:
    async def op(conn: Any) -> tuple[None, Published]:
        await conn.execute("UPDATE api_keys SET last_used_at = $1 WHERE id = $2", when, key_id)
        return None, []

    return op


def create_secret(name: str) -> Op:
    """Insert a fresh secret unless a node got there first, then read the winner."""

    async def op(conn: Any) -> tuple[bytes, Published]:
        await conn.execute(
            "INSERT INTO secrets (name, value, created_at) VALUES ($1, $2, $3) "
            "ON CONFLICT (name) DO NOTHING",
            name,
            secrets.token_bytes(32),
            utcnow(),
        )
        value = await conn.fetchval("SELECT value FROM secrets WHERE name = $1", name)
        return bytes(value), []

    return op


def delete_job(user_id: int, job_id: str) -> Op:
    async def op(conn: Any) -> tuple[None, Published]:
        deleted = await conn.fetchval(
            "DELETE FROM jobs WHERE id = $1 AND user_id = $2 RETURNING id", job_id, user_id
        )
        if deleted is None:
            raise job_not_found()
        return None, []

    return op


def delete_finished_jobs(before: str, limit: int) -> Op:
    async def op(conn: Any) -> tuple[int, Published]:
        deleted = await conn.fetch(
            "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE status IN "
            "('completed', 'failed', 'cancelled') AND coalesce(finished_at, updated_at) < $1 "
            "LIMIT $2) RETURNING id",
            before,
            limit,
        )
        return len(deleted), []

    return op
