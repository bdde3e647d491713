"""The write operations of the SQLite backend, run inside the writer's transaction.

Each builder returns an ``Op``: a function of the writer connection returning
``(result, published)``. They run in the writer thread, inside a savepoint of the
current commit group, so the reads they make (the job's status, its next index)
see every earlier operation of the same group: that is what keeps indexes
contiguous when a hundred appends to one job share a commit.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson

from ..errors import Conflict, job_not_found
from ..limits import check_job_bytes
from ..models import APIKey, Event, Job, NewEvent, User, apply_changes, encode_events, utcnow
from .sqlite_writer import Op, Published

USER_COLUMNS = "id, name, email, active, created_at"
USER_COLUMNS_U = "u.id, u.name, u.email, u.active, u.created_at"
KEY_COLUMNS = "id, user_id, name, prefix, created_at, last_used_at, revoked_at"
JOB_COLUMNS = (
    "id, user_id, name, status, metadata, created_at, updated_at, started_at, finished_at, "
    "container_id, runner, event_count"
)


def user_from_row(row: Sequence[Any]) -> User:
    return User(row[0], row[1], row[2], bool(row[3]), row[4])


def key_from_row(row: Sequence[Any]) -> APIKey:
    return APIKey(row[0], row[1], row[2], row[3], row[4], row[5], row[6] is None)


def job_from_row(row: Sequence[Any]) -> Job:
    return Job(
        id=row[0],
        user_id=row[1],
        name=row[2],
        status=row[3],
        metadata=orjson.loads(row[4]),
        created_at=row[5],
        updated_at=row[6],
        started_at=row[7],
        finished_at=row[8],
        container_id=row[9],
        runner=row[10],
        event_count=row[11],
    )


def new_job_id() -> str:
    """Random and non-enumerable: ids must not reveal how many jobs exist.

    Never starting with ``-``: one id in 64 did, and ``streamer follow -xyz`` reads
    that as an option (the CLI tests failed about once a run because of it).
    """
    while True:
        job_id = secrets.token_urlsafe(12)
        if not job_id.startswith("-"):
            return job_id


def create_user(name: str, email: str) -> Op:
    def op(conn: sqlite3.Connection) -> tuple[User, Published]:
        now = utcnow()
        cur = conn.execute(
            "INSERT INTO users (name, email, active, created_at) VALUES (?, ?, 1, ?)",
            (name, email, now),
        )
        assert cur.lastrowid is not None
        return User(cur.lastrowid, name, email, True, now), []

    return op


def create_key(user_id: int, name: str, prefix: str, key_hash: str) -> Op:
    def op(conn: sqlite3.Connection) -> tuple[APIKey, Published]:
        now = utcnow()
        cur = conn.execute(
            "INSERT INTO api_keys (user_id, name, prefix, key_hash, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (user_id, name, prefix, key_hash, now),
        )
        assert cur.lastrowid is not None
        return APIKey(cur.lastrowid, user_id, name, prefix, now, None, True), []

    return op


def create_secret(name: str) -> Op:
    """Insert a fresh secret unless one exists (another process may have raced us)."""

    def op(conn: sqlite3.Connection) -> tuple[bytes, Published]:
        conn.execute(
            "INSERT OR IGNORE INTO secrets (name, value, created_at) VALUES (?, ?, ?)",
            (name, secrets.token_bytes(32), utcnow()),
        )
        row = conn.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()
        return bytes(row[0]), []

    return op


def revoke_key(key_id: int) -> Op:
    def op(conn: sqlite3.Connection) -> tuple[bool, Published]:
        cur = conn.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (utcnow(), key_id),
        )
        return cur.rowcount == 1, []

    return op


def deactivate_user(email: str) -> Op:
    def op(conn: sqlite3.Connection) -> tuple[User | None, Published]:
        conn.execute("UPDATE users SET active = 0 WHERE email = ?", (email,))
        row = conn.execute(f"SELECT {USER_COLUMNS} FROM users WHERE email = ?", (email,)).fetchone()
        return (user_from_row(row) if row else None), []

    return op


def touch_key(key_id: int, when: str) -> Op:
    def op(conn: sqlite3.Connection) -> tuple[None, Published]:
        conn.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (when, key_id))
        return None, []

    return op


def create_job(user_id: int, name: str | None, metadata: dict[str, Any]) -> Op:
    def op(conn: sqlite3.Connection) -> tuple[Job, Published]:
        now = utcnow()
        job = Job(new_job_id(), user_id, name, "queued", metadata, now, now)
        conn.execute(
            "INSERT INTO jobs (id, user_id, name, status, metadata, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (job.id, user_id, name, job.status, orjson.dumps(metadata).decode(), now, now),
        )
        return job, []

    return op


def _load_job(conn: sqlite3.Connection, user_id: int, job_id: str) -> Job:
    row = conn.execute(
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ? AND user_id = ?", (job_id, user_id)
    ).fetchone()
    if row is None:
        raise job_not_found()
    return job_from_row(row)


def _insert_events(
    conn: sqlite3.Connection,
    job: Job,
    events: Sequence[NewEvent],
    now: str,
    byte_limit: int | None = None,
) -> list[Event]:
    """Store ``events`` at the job's next indexes, count their bytes, move the status on.

    The timestamp is now, but never before the job's previous event, even if the
    wall clock stepped back.
    """
    first = job.event_count
    last_timestamp, byte_count = conn.execute(
        "SELECT last_timestamp, byte_count FROM jobs WHERE id = ?", (job.id,)
    ).fetchone()
    timestamp = max(now, last_timestamp) if last_timestamp else now
    stored = encode_events(events, first, timestamp)
    job_id = job.id
    rows = [(job_id, e.index, e.type, e.line) for e in stored]
    size = sum(len(row[3]) for row in rows)
    check_job_bytes(byte_count, size, events, byte_limit)
    conn.executemany("INSERT INTO events (job_id, idx, type, line) VALUES (?, ?, ?, ?)", rows)
    job.record_append(events[-1], len(stored), now)
    conn.execute(
        "UPDATE jobs SET event_count = ?, status = ?, started_at = ?, finished_at = ?, "
        "updated_at = ?, last_timestamp = ?, byte_count = byte_count + ? WHERE id = ?",
        (
            job.event_count,
            job.status,
            job.started_at,
            job.finished_at,
            now,
            timestamp,
            size,
            job.id,
        ),
    )
    return stored


def append(
    user_id: int,
    job_id: str,
    events: Sequence[NewEvent],
    expected_index: int | None,
    byte_limit: int | None = None,
) -> Op:
    def op(conn: sqlite3.Connection) -> tuple[list[Event], Published]:
        job = _load_job(conn, user_id, job_id)
        if job.is_final:
            raise Conflict(f"job is {job.status}: its log is closed", next_index=job.event_count)
        if expected_index is not None and expected_index != job.event_count:
            raise Conflict(
                f"expected_index is {expected_index} but the next index is {job.event_count}",
                next_index=job.event_count,
            )
        stored = _insert_events(conn, job, events, utcnow(), byte_limit)
        return stored, [(job_id, stored)]

    return op


def update_job(user_id: int, job_id: str, changes: dict[str, Any]) -> Op:
    def op(conn: sqlite3.Connection) -> tuple[Job, Published]:
        job = _load_job(conn, user_id, job_id)
        now = utcnow()
        published: Published = []
        closing = apply_changes(job, changes, now)
        if closing is not None:
            published.append((job_id, _insert_events(conn, job, [closing], now)))
            job.status = changes["status"]
        conn.execute(
            "UPDATE jobs SET status = ?, started_at = ?, container_id = ?, runner = ?, "
            "updated_at = ? WHERE id = ?",
            (job.status, job.started_at, job.container_id, job.runner, now, job_id),
        )
        return job, published

    return op


def claim_job(user_id: int) -> Op:
    def op(conn: sqlite3.Connection) -> tuple[Job | None, Published]:
        row = conn.execute(
            "SELECT id FROM jobs WHERE user_id = ? AND status = 'queued' "
            "ORDER BY created_at, id LIMIT 1",
            (user_id,),
        ).fetchone()
        if row is None:
            return None, []
        job, published = update_job(user_id, row[0], {"status": "running"})(conn)
        return job, published

    return op


def delete_job(user_id: int, job_id: str) -> Op:
    def op(conn: sqlite3.Connection) -> tuple[None, Published]:
        cur = conn.execute("DELETE FROM jobs WHERE id = ? AND user_id = ?", (job_id, user_id))
        if cur.rowcount != 1:
            raise job_not_found()
        return None, []

    return op


def delete_finished_jobs(before: str, limit: int) -> Op:
    def op(conn: sqlite3.Connection) -> tuple[int, Published]:
        cur = conn.execute(
            "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE status IN "
            "('completed', 'failed', 'cancelled') AND coalesce(finished_at, updated_at) < ? "
            "LIMIT ?)",
            (before, limit),
        )
        return cur.rowcount, []

    return op


def incremental_vacuum(pages: int) -> Op:
    """Return up to ``pages`` free pages to the file system.

    Python's sqlite3 steps a row-less PRAGMA only once, and each step of
    ``incremental_vacuum`` frees one page, so it is repeated until the free list is
    empty (microseconds each, inside the writer thread).
    """

    def op(conn: sqlite3.Connection) -> tuple[None, Published]:
        for _ in range(pages):
            if conn.execute("PRAGMA freelist_count").fetchone()[0] == 0:
                break
            conn.execute("PRAGMA incremental_vacuum(1)")
        return None, []

    return op
