"""Every write the service makes, each one transaction, written once for both backends.

Each function returns a generator that yields ``commands`` and returns ``(result,
published)``; ``Database.transact`` runs it. What a write decides about a job is
``journal``'s, and which change of the feed it records is ``changes``'; what is here
is the order of reads and writes around them. A change is recorded in the same
transaction as the write it describes, before the job's row is saved (the row keeps
the feed's bookkeeping). Lock order, on PostgreSQL: a job's row, then its user's
change counter, never the other way round.
"""

from __future__ import annotations

import secrets
from collections.abc import Generator, Sequence
from typing import Any

import orjson

from ..core import changes, journal
from ..core.changes import ChangePolicy
from ..core.errors import job_not_found
from ..core.journal import JobState
from ..core.models import APIKey, Event, Job, NewEvent, User, utcnow
from .commands import (
    Command,
    Execute,
    LoadJob,
    OldestQueued,
    Published,
    Query,
    SaveChange,
    SaveJob,
    Transaction,
)
from .rows import JOB_STATE_COLUMNS, USER_COLUMNS, job_state_from_row, user_from_row

# The user's next sequence number; the counter's row is locked until commit, so the
# user's changes commit in sequence order on every backend.
NEXT_SEQ = (
    "INSERT INTO change_heads (user_id, seq, floor) VALUES (?, 1, 0) "
    "ON CONFLICT (user_id) DO UPDATE SET seq = change_heads.seq + 1 RETURNING seq"
)


def create_user(name: str, email: str) -> Transaction[User]:
    now = utcnow()
    rows = yield Query(
        "INSERT INTO users (name, email, active, created_at) VALUES (?, ?, TRUE, ?) RETURNING id",
        (name, email, now),
    )
    return User(rows[0][0], name, email, True, now), []


def deactivate_user(email: str) -> Transaction[User | None]:
    rows = yield Query(
        f"UPDATE users SET active = FALSE WHERE email = ? RETURNING {USER_COLUMNS}", (email,)
    )
    return (user_from_row(rows[0]) if rows else None), []


def create_key(user_id: int, name: str, prefix: str, key_hash: str) -> Transaction[APIKey]:
    now = utcnow()
    rows = yield Query(
        "INSERT INTO api_keys (user_id, name, prefix, key_hash, created_at) "
        "VALUES (?, ?, ?, ?, ?) RETURNING id",
        (user_id, name, prefix, key_hash, now),
    )
    return APIKey(rows[0][0], user_id, name, prefix, now, None, True), []


def revoke_key(key_id: int) -> Transaction[bool]:
    changed = yield Execute(
        "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
        (utcnow(), key_id),
    )
    return changed == 1, []


def touch_key(key_id: int, when: str) -> Transaction[None]:
    yield Execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (when, key_id))
    return None, []


def create_secret(name: str) -> Transaction[bytes]:
    """Insert a fresh secret unless another process got there first; read the winner."""
    yield Execute(
        "INSERT INTO secrets (name, value, created_at) VALUES (?, ?, ?) "
        "ON CONFLICT (name) DO NOTHING",
        (name, secrets.token_bytes(32), utcnow()),
    )
    rows = yield Query("SELECT value FROM secrets WHERE name = ?", (name,))
    return bytes(rows[0][0]), []


def record_change(
    state: JobState, kind: str, policy: ChangePolicy
) -> Generator[Command, Any, Published]:
    """Record change ``kind`` of the job in ``state`` (whose row the caller then saves
    or has deleted): the user's next sequence number, the change, and every
    ``trim_every``-th time the user's retention. Returns what it publishes."""
    user_id = state.job.user_id
    rows = yield Query(NEXT_SEQ, (user_id,))
    change = changes.note(state, kind, int(rows[0][0]), changes.now_ms())
    yield SaveChange(change)
    if changes.trim_due(change.seq, policy):
        rows = yield Query(
            "SELECT seq FROM job_changes WHERE user_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?",
            (user_id, policy.keep),
        )
        if rows:
            cut = int(rows[0][0])
            yield Execute("DELETE FROM job_changes WHERE user_id = ? AND seq <= ?", (user_id, cut))
            yield Execute(
                "UPDATE change_heads SET floor = ? WHERE user_id = ? AND floor < ?",
                (cut, user_id, cut),
            )
    return [(changes.feed_key(user_id), [change.event()])]


def create_job(
    user_id: int, name: str | None, metadata: dict[str, Any], policy: ChangePolicy
) -> Transaction[Job]:
    state = JobState(journal.new_job(user_id, name, metadata, utcnow()))
    published = yield from record_change(state, changes.CREATED, policy)
    job = state.job
    yield Execute(
        "INSERT INTO jobs (id, user_id, name, status, metadata, created_at, updated_at, "
        "change_ms, change_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            job.id,
            user_id,
            name,
            job.status,
            orjson.dumps(metadata).decode(),
            job.created_at,
            job.updated_at,
            state.change_ms,
            state.change_count,
        ),
    )
    return job, published


def append(
    user_id: int,
    job_id: str,
    events: Sequence[NewEvent],
    expected_index: int | None,
    byte_limit: int | None,
    policy: ChangePolicy,
) -> Transaction[list[Event]]:
    state = yield LoadJob(user_id, job_id)
    status = state.job.status
    appended = journal.append(
        state, events, utcnow(), expected_index=expected_index, byte_limit=byte_limit
    )
    published: Published = [(job_id, appended.events)]
    kind = changes.after_append(state, status, changes.now_ms(), policy)
    if kind is not None:  # else the growth is pending, for the sweep
        published += yield from record_change(state, kind, policy)
    yield SaveJob(state, appended)
    return appended.events, published


def update_job(
    user_id: int, job_id: str, patch: dict[str, Any], policy: ChangePolicy
) -> Transaction[Job]:
    state = yield LoadJob(user_id, job_id)
    appended = journal.change(state, patch, utcnow())
    published: Published = [(job_id, appended.events)] if appended else []
    published += yield from record_change(state, changes.UPDATED, policy)
    yield SaveJob(state, appended)
    return state.job, published


def claim_job(user_id: int, policy: ChangePolicy) -> Transaction[Job | None]:
    job_id = yield OldestQueued(user_id)
    if job_id is None:
        return None, []
    return (yield from update_job(user_id, job_id, journal.CLAIM, policy))


def record_growth(user_id: int, job_id: str, policy: ChangePolicy) -> Transaction[bool]:
    """The trailing growth of a job, if it is still due under the job's row lock."""
    state = yield LoadJob(user_id, job_id)
    if not changes.growth_due(state, changes.now_ms(), policy):
        return False, []
    published = yield from record_change(state, changes.GREW, policy)
    yield SaveJob(state, None)
    return True, published


def delete_job(user_id: int, job_id: str, policy: ChangePolicy) -> Transaction[None]:
    rows = yield Query(
        f"DELETE FROM jobs WHERE id = ? AND user_id = ? RETURNING {JOB_STATE_COLUMNS}",
        (job_id, user_id),
    )
    if not rows:
        raise job_not_found()
    published = yield from record_change(job_state_from_row(rows[0]), changes.DELETED, policy)
    return None, published


def delete_finished_jobs(before: str, limit: int, policy: ChangePolicy) -> Transaction[int]:
    rows = yield Query(
        "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE status IN "
        "('completed', 'failed', 'cancelled') AND coalesce(finished_at, updated_at) < ? "
        f"LIMIT ?) RETURNING {JOB_STATE_COLUMNS}",
        (before, limit),
    )
    published: Published = []
    # Users' counters in one order, so two sweeps cannot wait on each other's.
    for state in sorted(map(job_state_from_row, rows), key=lambda s: (s.job.user_id, s.job.id)):
        published += yield from record_change(state, changes.DELETED, policy)
    return len(rows), published
