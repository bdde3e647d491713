"""Columns and rows: the one mapping between the tables and the core's values.

Both backends keep the same tables (``sqlite/schema.py``, ``postgres/schema.py``)
and read them with these column lists, so a row means the same on either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from ..core.durable import Stream, View
from ..core.journal import JobState
from ..core.models import APIKey, Event, Job, User
from ..core.sections import Section

USER_COLUMNS = "id, name, email, active, created_at"
USER_COLUMNS_U = "u.id, u.name, u.email, u.active, u.created_at"
KEY_COLUMNS = "id, user_id, name, prefix, created_at, last_used_at, revoked_at"
JOB_COLUMNS = (
    "id, user_id, name, status, metadata, created_at, updated_at, started_at, finished_at, "
    "container_id, runner, event_count, redactions"
)
JOB_STATE_COLUMNS = (
    f"{JOB_COLUMNS}, last_timestamp, byte_count, line_count, carry, section_state, secrets, "
    "change_ms, change_count, grew_seq"
)
STREAM_COLUMNS = (
    "s.job_id, s.user_id, s.path, s.content_type, s.ttl_seconds, s.expires_at, s.touched_at, "
    "s.stream_seq, s.source_id, s.fork_index, s.fork_spec, s.deleted"
)
# A stream's job and its row (NULLs for a job that is no stream), jobs as ``j``.
VIEW_COLUMNS = ", ".join(f"j.{c.strip()}" for c in JOB_COLUMNS.split(",")) + ", " + STREAM_COLUMNS
JOB_WIDTH = len(JOB_COLUMNS.split(","))  # where a view's stream columns start
# Every column a write may change, in the order of ``job_state_values``.
JOB_UPDATE = (
    "UPDATE jobs SET status = ?, started_at = ?, finished_at = ?, container_id = ?, "
    "runner = ?, event_count = ?, updated_at = ?, last_timestamp = ?, byte_count = ?, "
    "redactions = ?, line_count = ?, carry = ?, section_state = ?, secrets = ?, "
    "change_ms = ?, change_count = ?, grew_seq = ? WHERE id = ?"
)
SECTION_COLUMNS = (
    "id, kind, name, title, start_index, start_line, end_index, end_line, depth, "
    "started_at, finished_at, collapsed"
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
        redactions=row[12],
    )


def job_state_from_row(row: Sequence[Any]) -> JobState:
    """A row of ``JOB_STATE_COLUMNS``."""
    sealed = row[18]
    return JobState(
        job_from_row(row),
        row[13],
        row[14],
        row[15],
        row[16],
        row[17],
        None if sealed is None else bytes(sealed),
        row[19],
        row[20],
        row[21],
    )


def job_state_values(state: JobState) -> tuple[Any, ...]:
    """The parameters of ``JOB_UPDATE``."""
    job = state.job
    return (
        job.status,
        job.started_at,
        job.finished_at,
        job.container_id,
        job.runner,
        job.event_count,
        job.updated_at,
        state.last_timestamp,
        state.byte_count,
        job.redactions,
        state.line_count,
        state.carry,
        state.sections,
        state.secrets,
        state.change_ms,
        state.change_count,
        state.grew_seq,
        job.id,
    )


def section_from_row(row: Sequence[Any]) -> Section:
    """A row of ``SECTION_COLUMNS``."""
    return Section(
        row[0], row[1], row[2], row[3], row[4], row[5], row[8], row[9], bool(row[11]),
        row[6], row[7], row[10],
    )  # fmt: skip


def section_values(job_id: str, section: Section) -> tuple[Any, ...]:
    """``job_id`` and ``SECTION_COLUMNS`` of ``section``, for an insert."""
    s = section
    return (
        job_id, s.id, s.kind, s.name, s.title, s.start_index, s.start_line, s.end_index,
        s.end_line, s.depth, s.started_at, s.finished_at, s.collapsed,
    )  # fmt: skip


def event_from_row(row: Sequence[Any]) -> Event:
    """A row of ``idx, type, line``."""
    return Event(row[0], row[1], bytes(row[2]))


def stream_from_row(row: Sequence[Any]) -> Stream:
    """A row of ``STREAM_COLUMNS``."""
    return Stream(
        job_id=row[0],
        user_id=row[1],
        path=row[2],
        content_type=row[3],
        ttl=row[4],
        expires_at=row[5],
        touched_at=row[6],
        seq=row[7],
        source_id=row[8],
        fork_index=row[9],
        fork_spec=row[10],
        deleted=bool(row[11]),
    )


def view_from_row(row: Sequence[Any]) -> View:
    """A row of ``VIEW_COLUMNS``."""
    stream = stream_from_row(row[JOB_WIDTH:]) if row[JOB_WIDTH] is not None else None
    return View(job_from_row(row), stream)
