"""What a write does to a job, decided once for every backend.

A backend opens its transaction, loads the job's ``JobState`` (locking the row where
the database has several writers), calls one function here, and writes back what it
returns: ``Appended`` events as rows, and the job's columns from the state. The
rules themselves never touch SQL, so SQLite and PostgreSQL cannot disagree on them,
and ``tests/core/test_journal.py`` checks them without a database:

- a job whose status is final takes no more events (409);
- ``expected_index`` must be the job's next index, or nothing is stored (409);
- timestamps never go back, even when the wall clock does (or another node's is ahead);
- the job's log may not grow past ``byte_limit`` (413), except by a short ``complete``
  event, so a job at its cap can always be finished;
- a ``complete`` event makes the job final; any event starts a queued job;
- a status change follows ``TRANSITIONS``, and a change to a final status appends the
  job's ``complete`` event in the same transaction, so every log ends with one.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import Conflict, PayloadTooLarge, Unprocessable
from .models import (
    FINAL_STATUSES,
    RUNNER_FIELDS,
    TRANSITIONS,
    Event,
    Job,
    NewEvent,
    encode_events,
)

# A job at its cap must still be finishable: a lone ``complete`` event whose data is
# at most this long is always accepted (its line adds ~100 bytes past the cap).
COMPLETE_DATA_ALLOWANCE = 1024
CLAIM = {"status": "running"}  # what claiming a queued job changes


@dataclass
class JobState:
    """A job as a write transaction sees it: the row, and what only writes need.

    The functions below change it in place; the backend then stores every column.
    """

    job: Job
    last_timestamp: str | None = None  # of the job's last event
    byte_count: int = 0  # bytes of its stored event lines
    # The change feed's bookkeeping (``changes.py``): when the job's last change was
    # recorded (ms), its event count then, and its ``grew`` change still kept.
    change_ms: int = 0
    change_count: int = 0
    grew_seq: int | None = None


@dataclass(frozen=True)
class Appended:
    """Events to insert, with their indexes and lines, and the bytes they add."""

    events: list[Event]
    size: int


def new_job_id() -> str:
    """Random and non-enumerable: ids must not reveal how many jobs exist.

    Never starting with ``-``, which a command line would read as an option
    (``streamer follow -xyz``).
    """
    while True:
        job_id = secrets.token_urlsafe(12)
        if not job_id.startswith("-"):
            return job_id


def new_job(user_id: int, name: str | None, metadata: dict[str, Any], now: str) -> Job:
    return Job(new_job_id(), user_id, name, "queued", metadata, now, now)


def append(
    state: JobState,
    events: Sequence[NewEvent],
    now: str,
    *,
    expected_index: int | None = None,
    byte_limit: int | None = None,
) -> Appended:
    """Store ``events`` at the job's next indexes: the checks, then ``_record``."""
    job = state.job
    if job.is_final:
        raise Conflict(f"job is {job.status}: its log is closed", next_index=job.event_count)
    if expected_index is not None and expected_index != job.event_count:
        raise Conflict(
            f"expected_index is {expected_index} but the next index is {job.event_count}",
            next_index=job.event_count,
        )
    return _record(state, events, now, byte_limit)


def change(state: JobState, changes: dict[str, Any], now: str) -> Appended | None:
    """Apply a status transition and runner fields; returns the ``complete`` event the
    transition appends when it makes the job final (the job then keeps the status it
    was moved to: a cancelled job stays ``cancelled``, not the ``failed`` that its
    ``success: false`` would imply)."""
    job = state.job
    status = changes.get("status")
    appended = None
    if status is not None and status != job.status:
        if status not in TRANSITIONS.get(job.status, frozenset()):
            raise Conflict(f"cannot move a {job.status} job to {status}", job_status=job.status)
        if status in FINAL_STATUSES:
            closing = NewEvent("complete", None, status == "completed")
            appended = _record(state, [closing], now, None)
            job.status = status
        else:
            job.status = status
            job.started_at = job.started_at or now
    elif status is not None and job.is_final:
        raise Conflict(f"job is already {job.status}", job_status=job.status)
    for key in RUNNER_FIELDS:
        if key in changes:
            setattr(job, key, changes[key])
    job.updated_at = now
    return appended


def _record(
    state: JobState, events: Sequence[NewEvent], now: str, byte_limit: int | None
) -> Appended:
    """Encode ``events`` at the job's next indexes and move the job past them."""
    job = state.job
    last = state.last_timestamp
    timestamp = max(now, last) if last else now
    try:
        stored = encode_events(events, job.event_count, timestamp)
    except orjson.JSONEncodeError as exc:  # a lone surrogate: not text any store can hold
        raise Unprocessable("an event's data is not valid text", field="events") from exc
    size = sum([len(e.line) for e in stored])
    check_job_bytes(state.byte_count, size, events, byte_limit)
    final = events[-1]
    if final.type == "complete":
        job.status = "completed" if final.success else "failed"
        job.finished_at = now
    elif job.status == "queued":
        job.status = "running"
    if job.status == "running" and job.started_at is None:
        job.started_at = now
    job.event_count += len(stored)
    job.updated_at = now
    state.last_timestamp = timestamp
    state.byte_count += size
    return Appended(stored, size)


def closes_job(events: Sequence[NewEvent]) -> bool:
    """A lone ``complete`` event with no or short data: what a full job may still take."""
    if len(events) != 1 or events[0].type != "complete":
        return False
    data = events[0].data
    return data is None or len(data.encode("utf-8", "surrogatepass")) <= COMPLETE_DATA_ALLOWANCE


def check_job_bytes(
    stored: int, adding: int, events: Sequence[NewEvent], limit: int | None
) -> None:
    """Refuse (413 naming the cap) an append that would take a job past ``limit`` bytes.

    Called inside the append's transaction with the job's row current, so the cap
    holds exactly under concurrent appends on every backend.
    """
    if limit is None or stored + adding <= limit or closes_job(events):
        return
    raise PayloadTooLarge(
        f"this append would take the job's log to {stored + adding} bytes, past its cap "
        f"of {limit} bytes (max_job_bytes); it can still be finished with a complete event",
        field="events",
        limit=limit,
        stored_bytes=stored,
    )
