"""Every write the service makes, each one transaction, written once for both backends.

Each function returns a generator that yields ``commands`` and returns ``(result,
published)``; ``Database.transact`` runs it. What a write decides about a job is
``journal``'s; what is here is the order of reads and writes around it.
"""

from __future__ import annotations

import secrets
from collections.abc import Generator, Sequence
from typing import Any

import orjson

from ..core import journal
from ..core.errors import job_not_found
from ..core.journal import Appended, JobState
from ..core.models import APIKey, Event, Job, NewEvent, User, utcnow
from ..core.redact import Rules
from .commands import Command, Execute, LoadJob, OldestQueued, Query, SaveJob, Transaction
from .rows import SECTION_COLUMNS, USER_COLUMNS, section_values, user_from_row


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


def create_job(
    user_id: int,
    name: str | None,
    metadata: dict[str, Any],
    secrets: Sequence[str] = (),
    rules: Rules | None = None,
) -> Transaction[Job]:
    """A queued job. With ``rules``, its name and metadata are redacted (with its own
    ``secrets`` too), and the secrets are stored sealed, for its appends."""
    redactor = None if rules is None else rules.for_secrets(secrets)
    job = journal.new_job(user_id, name, metadata, utcnow(), redactor)
    yield Execute(
        "INSERT INTO jobs (id, user_id, name, status, metadata, created_at, updated_at, "
        "redactions, secrets) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            job.id,
            user_id,
            job.name,
            job.status,
            orjson.dumps(job.metadata).decode(),
            job.created_at,
            job.updated_at,
            job.redactions,
            None if rules is None else rules.seal(secrets),
        ),
    )
    return job, []


def append(
    user_id: int,
    job_id: str,
    events: Sequence[NewEvent],
    expected_index: int | None,
    byte_limit: int | None,
    rules: Rules | None = None,
    section_limit: int | None = None,
) -> Transaction[list[Event]]:
    state = yield LoadJob(user_id, job_id)
    sealed = state.secrets
    appended = journal.append(
        state,
        events,
        utcnow(),
        expected_index=expected_index,
        byte_limit=byte_limit,
        redactor=None if rules is None else rules.for_job(sealed),
        section_limit=section_limit,
    )
    yield from _save(state, appended)
    if rules is not None and state.secrets is None:
        rules.forget(sealed)
    return appended.events, [(job_id, appended.events)]


def update_job(user_id: int, job_id: str, changes: dict[str, Any]) -> Transaction[Job]:
    state = yield LoadJob(user_id, job_id)
    appended = journal.change(state, changes, utcnow())
    yield from _save(state, appended)
    return state.job, ([(job_id, appended.events)] if appended else [])


SECTIONS_AT_ONCE = 500  # rows per statement: 13 parameters each, far below any limit
UPSERT_SECTIONS = (
    "INSERT INTO sections (job_id, {columns}) VALUES {rows} "
    "ON CONFLICT (job_id, id) DO UPDATE SET end_index = excluded.end_index, "
    "end_line = excluded.end_line, finished_at = excluded.finished_at, "
    "collapsed = excluded.collapsed"
)


def _save(state: JobState, appended: Appended | None) -> Generator[Command, Any, None]:
    """The job's row and events, then the sections the events opened or closed (one
    statement per ``SECTIONS_AT_ONCE``; none for the appends that change none)."""
    yield SaveJob(state, appended)
    touched = appended.sections if appended is not None else []
    for start in range(0, len(touched), SECTIONS_AT_ONCE):
        chunk = touched[start : start + SECTIONS_AT_ONCE]
        row = "(" + ", ".join(["?"] * 13) + ")"
        sql = UPSERT_SECTIONS.format(columns=SECTION_COLUMNS, rows=", ".join([row] * len(chunk)))
        params = [value for s in chunk for value in section_values(state.job.id, s)]
        yield Execute(sql, params)


def claim_job(user_id: int) -> Transaction[Job | None]:
    job_id = yield OldestQueued(user_id)
    if job_id is None:
        return None, []
    return (yield from update_job(user_id, job_id, journal.CLAIM))


def delete_job(user_id: int, job_id: str) -> Transaction[None]:
    deleted = yield Execute("DELETE FROM jobs WHERE id = ? AND user_id = ?", (job_id, user_id))
    if deleted != 1:
        raise job_not_found()
    return None, []


def delete_finished_jobs(before: str, limit: int) -> Transaction[int]:
    deleted = yield Execute(
        "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE status IN "
        "('completed', 'failed', 'cancelled') AND coalesce(finished_at, updated_at) < ? "
        "LIMIT ?)",
        (before, limit),
    )
    return deleted, []
