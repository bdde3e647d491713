"""The change feed's part of every write transaction, written once for both backends.

A write that creates, changes, grows or deletes a job calls these inside its own
transaction (``transactions.py``), before the job's row is saved: the change gets the
user's next sequence number from the counter row, which stays locked until commit,
so a user's changes commit in sequence order on every backend. What is recorded, and
when, is ``core/changes.py``'s.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import orjson

from ..core import changes
from ..core.changes import ChangePolicy
from ..core.journal import JobState
from .commands import Command, Execute, LoadJob, Published, Query, SaveChange, SaveJob, Transaction

# The user's next sequence number; the counter's row is locked until commit, so the
# user's changes commit in sequence order on every backend.
NEXT_SEQ = (
    "INSERT INTO change_heads (user_id, seq, floor) VALUES (?, 1, 0) "
    "ON CONFLICT (user_id) DO UPDATE SET seq = change_heads.seq + 1 RETURNING seq"
)


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


def insert_job(state: JobState, policy: ChangePolicy) -> Generator[Command, Any, Published]:
    """A new job's row (its secrets as ``state`` holds them: sealed), and its
    ``created`` change."""
    published = yield from record_change(state, changes.CREATED, policy)
    job = state.job
    yield Execute(
        "INSERT INTO jobs (id, user_id, name, status, metadata, created_at, updated_at, "
        "redactions, secrets, change_ms, change_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            job.id,
            job.user_id,
            job.name,
            job.status,
            orjson.dumps(job.metadata).decode(),
            job.created_at,
            job.updated_at,
            job.redactions,
            state.secrets,
            state.change_ms,
            state.change_count,
        ),
    )
    return published


def appended_change(
    state: JobState, status: str, policy: ChangePolicy
) -> Generator[Command, Any, Published]:
    """After an append moved the job in ``state`` (whose status was ``status``): its
    change, when one is due (else its growth is pending, for the sweep)."""
    kind = changes.after_append(state, status, changes.now_ms(), policy)
    if kind is None:
        return []
    return (yield from record_change(state, kind, policy))


def record_growth(user_id: int, job_id: str, policy: ChangePolicy) -> Transaction[bool]:
    """The trailing growth of a job, if it is still due under the job's row lock."""
    state = yield LoadJob(user_id, job_id)
    if not changes.growth_due(state, changes.now_ms(), policy):
        return False, []
    published = yield from record_change(state, changes.GREW, policy)
    yield SaveJob(state, None)
    return True, published
