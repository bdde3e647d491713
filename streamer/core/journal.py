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
  job's ``complete`` event in the same transaction, so every log ends with one;
- secrets are masked before anything is encoded (``redact``), and a job's own secrets
  are dropped when it ends;
- each event is indexed as it is stored: the raw line it starts on, its plain text
  for search, and the sections it opens or closes (``sections``), which its stored
  JSON then names in a ``section`` member, so every reader learns of them with it.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import orjson

from . import sections
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
from .redact import Redactor
from .search import JOIN, JOIN_TEXT
from .text import CONTROL, search_text

# A job at its cap must still be finishable: a lone ``complete`` event whose data is
# at most this long is always accepted (its line adds ~100 bytes past the cap).
COMPLETE_DATA_ALLOWANCE = 1024
CLAIM = {"status": "running"}  # what claiming a queued job changes
_control = CONTROL.search  # a character that makes an event's search text differ
_hint = sections.HINT.search  # what may be a section marker


@dataclass
class JobState:
    """A job as a write transaction sees it: the row, and what only writes need.

    The functions below change it in place; the backend then stores every column.
    """

    job: Job
    last_timestamp: str | None = None  # of the job's last event
    byte_count: int = 0  # bytes of its stored event lines
    line_count: int = 0  # newlines in its events' data: the raw log's finished lines
    carry: str = ""  # the raw log's unfinished last line, for markers split across events
    sections: str | None = None  # the section parser's state (open sections), as JSON
    secrets: bytes | None = None  # the job's own secrets, sealed (redact.seal)
    # The change feed's bookkeeping (``changes.py``): when the job's last change was
    # recorded (ms), its event count then, and its ``grew`` change still kept.
    change_ms: int = 0
    change_count: int = 0
    grew_seq: int | None = None


class Appended:
    """Events to insert, with their indexes and lines, and the bytes they add; per
    event the raw line it starts on; their search text; the sections they changed.

    A plain ``__slots__`` class: one is made per append, and a frozen dataclass's
    ``__init__`` costs more than the rest of a small append's bookkeeping.
    """

    __slots__ = ("events", "size", "lines", "text", "sections")

    def __init__(
        self,
        events: list[Event],
        size: int,
        lines: list[int],
        text: bytes,
        sections: list[sections.Section],
    ) -> None:
        self.events = events
        self.size = size
        self.lines = lines
        self.text = text  # the events' search texts, joined (search.JOIN): one row
        self.sections = sections


def new_job_id() -> str:
    """Random and non-enumerable: ids must not reveal how many jobs exist.

    Never starting with ``-``, which a command line would read as an option
    (``streamer follow -xyz``).
    """
    while True:
        job_id = secrets.token_urlsafe(12)
        if not job_id.startswith("-"):
            return job_id


def new_job(
    user_id: int,
    name: str | None,
    metadata: dict[str, Any],
    now: str,
    redactor: Redactor | None = None,
) -> Job:
    """A queued job; its name and metadata strings redacted like its events will be."""
    masked = 0
    if redactor is not None:
        if name is not None:
            name, masked = redactor.text(name)
        metadata, more = redactor.value(metadata)
        masked += more
    return Job(new_job_id(), user_id, name, "queued", metadata, now, now, redactions=masked)


def append(
    state: JobState,
    events: Sequence[NewEvent],
    now: str,
    *,
    expected_index: int | None = None,
    byte_limit: int | None = None,
    redactor: Redactor | None = None,
    section_limit: int | None = None,
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
    return _record(state, events, now, byte_limit, redactor, section_limit)


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
            appended = _record(state, [closing], now, None, None)
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
    state: JobState,
    events: Sequence[NewEvent],
    now: str,
    byte_limit: int | None,
    redactor: Redactor | None,
    section_limit: int | None = None,
) -> Appended:
    """Redact, encode ``events`` at the job's next indexes, index them, and move the
    job past them."""
    job = state.job
    if redactor is not None:
        events, masked = redactor.apply(events)
        job.redactions += masked
    last = state.last_timestamp
    timestamp = max(now, last) if last else now
    try:
        stored = encode_events(events, job.event_count, timestamp)
    except orjson.JSONEncodeError as exc:  # a lone surrogate: not text any store can hold
        raise Unprocessable("an event's data is not valid text", field="events") from exc
    lines, text, changed = _index(state, events, stored, timestamp, section_limit)
    size = sum([len(e.line) for e in stored])
    check_job_bytes(state.byte_count, size, events, byte_limit)
    final = events[-1]
    if final.type == "complete":
        job.status = "completed" if final.success else "failed"
        job.finished_at = now
        state.secrets = None  # a finished job takes no more events: nothing to redact
    elif job.status == "queued":
        job.status = "running"
    if job.status == "running" and job.started_at is None:
        job.started_at = now
    job.event_count += len(stored)
    job.updated_at = now
    state.last_timestamp = timestamp
    state.byte_count += size
    return Appended(stored, size, lines, text, changed)


def _index(
    state: JobState,
    events: Sequence[NewEvent],
    stored: list[Event],
    timestamp: str,
    section_limit: int | None,
) -> tuple[list[int], bytes, list[sections.Section]]:
    """Line numbers and the search text of ``stored``, and the sections they change.

    The section parser runs only when ``quick_check`` says the batch may hold a
    marker; otherwise this is the carried unfinished line, updated. Events that open
    or close sections are encoded again with their ``section`` member.
    """
    carry = state.carry
    if len(events) == 1:  # most appends: no list building
        only = events[0]
        data = only.data or ""
        lines = [state.line_count + 1]
        plain = only.type not in sections.MARKER_TYPES and _control(data) is None
        if plain and _hint(carry + data if carry else data) is None:  # its text is its data
            if carry or not data.endswith("\n"):
                state.carry = sections.carry_after(carry, data)
            state.line_count += data.count("\n")
            return lines, data.encode("utf-8", "surrogatepass"), []
        state.line_count += data.count("\n")
        text = search_text(data)
        raw = data
        typed = only.type in sections.MARKER_TYPES
    else:
        datas = [e.data or "" for e in events]
        starts = list(accumulate([d.count("\n") for d in datas], initial=state.line_count))
        state.line_count = starts[-1]
        lines = [n + 1 for n in starts[:-1]]
        raw = "".join(datas)
        if "\x1b" in raw or CONTROL.search(raw) is not None:
            text = JOIN.join([search_text(d) for d in datas])
        else:  # the usual batch: every text is its data, encoded once
            text = JOIN_TEXT.join(datas).encode("utf-8", "surrogatepass")
        typed = not sections.MARKER_TYPES.isdisjoint({e.type for e in events})
    if not typed and _hint(carry + raw if carry else raw) is None:
        if carry or not raw.endswith("\n"):
            state.carry = sections.carry_after(carry, raw)
        return lines, text, []
    parsed = sections.State.load(state.sections)
    incoming = [
        sections.Incoming(e.index, e.type, n.data, line, timestamp)
        for e, n, line in zip(stored, events, lines, strict=True)
    ]
    fed, state.carry = sections.feed(parsed, state.carry, incoming, section_limit)
    state.sections = parsed.dump()
    for position, change in fed.changes.items():
        event, source = stored[position], events[position]
        line = orjson.dumps(
            {
                "index": event.index,
                "type": event.type,
                "data": source.data,
                "success": source.success,
                "timestamp": timestamp,
                "section": change.public(),
            }
        )
        stored[position] = Event(event.index, event.type, line)
    return lines, text, fed.touched


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
