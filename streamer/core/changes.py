"""The change feed of a user's jobs: what a change is, and when a write records one.

Each of a user's jobs that is created, changes status or fields, grows, or is deleted
records a **change**: the job's whole JSON at that moment, under a per-user sequence
number that storage assigns in the same transaction as the write it records. So a
change exists exactly when its write committed, and the sequence is strictly
increasing in commit order on every node (the user's counter row serialises them).
A feed is then just another log, keyed ``user:<id>`` instead of a job id: it is read
and followed by the one merge (``follow.py``) with ``seq`` as its index.

What records a change, decided here once for every backend:

- creating a job: ``created``; a PATCH or a claim: ``updated``; deleting a job (by
  the API or by retention): ``deleted``, carrying the job as it was;
- an append that changes the job's status (its first event starts a queued job, a
  ``complete`` event finishes it): ``updated``;
- any other append: ``grew``, **at most once per ``growth_interval_ms`` per job**.
  The throttle's clock is the job's own column (``change_ms``), so every node and
  every restart agrees on it, and an append inside the interval writes nothing
  more than it did before the feed existed. What it skipped stays visible in the
  job's row (``event_count`` past ``change_count``): the growth sweep
  (``run_growth_sweep``) records it once the interval has passed, so the last
  growth of a job is never lost, even when the node that took the append dies.

Retention, in the same transactions: a job's ``grew`` change is superseded by its
next change (every change carries the whole job, so nothing is lost: a reader gets
the newer one), and its row is deleted when that one is recorded. Every
``trim_every``-th change of a user keeps only the user's ``keep`` most recent
changes and raises the user's floor: a resume point below the floor is answered
``Dropped`` (410), never with a silently partial feed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

import orjson

from .cursor import parse_cursor
from .errors import CursorAhead, Dropped, StreamerError
from .journal import JobState
from .models import Event, Job

log = logging.getLogger("streamer.changes")

CREATED, UPDATED, GREW, DELETED = "created", "updated", "grew", "deleted"
KINDS = (CREATED, UPDATED, GREW, DELETED)
FEED_PREFIX = "user:"  # a job id never holds a colon: the two key spaces cannot meet
SWEEP_BATCH = 500  # jobs with a pending growth looked at per sweep query


@dataclass(frozen=True)
class ChangePolicy:
    """The feed's bounds (settings ``feed_growth_interval_seconds``, ``feed_keep_changes``)."""

    growth_interval_ms: int = 500
    keep: int = 10_000
    trim_every: int = 256


@dataclass(frozen=True)
class Change:
    """One change to store: its sequence number, kind, job and JSON line; and the
    sequence number of the job's ``grew`` change it supersedes, if any."""

    user_id: int
    seq: int
    kind: str
    job_id: str
    line: bytes
    superseded: int | None

    def event(self) -> Event:
        """As a log entry: ``seq`` is its index, the kind its type (the SSE ``event``)."""
        return Event(self.seq, self.kind, self.line)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def feed_key(user_id: int) -> str:
    """The hub channel and log key of a user's feed."""
    return f"{FEED_PREFIX}{user_id}"


def feed_user(key: str) -> int | None:
    """The user of a feed key; None for a job id."""
    if not key.startswith(FEED_PREFIX):
        return None
    return int(key[len(FEED_PREFIX) :])


def after_append(state: JobState, status_before: str, now: int, policy: ChangePolicy) -> str | None:
    """The change an append records: ``updated`` when it moved the job's status,
    ``grew`` when the job's last change is at least an interval old, else none (the
    growth is then pending, for the sweep)."""
    if state.job.status != status_before:
        return UPDATED
    if now - state.change_ms >= policy.growth_interval_ms:
        return GREW
    return None


def growth_due(state: JobState, now: int, policy: ChangePolicy) -> bool:
    """A growth the throttle held back whose interval has passed (the trailing one)."""
    return (
        state.job.event_count > state.change_count
        and not state.job.is_final
        and now - state.change_ms >= policy.growth_interval_ms
    )


def note(state: JobState, kind: str, seq: int, now: int) -> Change:
    """Record on the job's state that change ``seq`` describes it now, and build it."""
    job = state.job
    superseded = state.grew_seq
    state.grew_seq = seq if kind == GREW else None
    state.change_ms = now
    state.change_count = job.event_count
    return Change(job.user_id, seq, kind, job.id, encode(seq, kind, job), superseded)


def encode(seq: int, kind: str, job: Job) -> bytes:
    """The change's JSON line, made once when it is recorded."""
    return orjson.dumps({"seq": seq, "type": kind, "job": job.public()})


def trim_due(seq: int, policy: ChangePolicy) -> bool:
    return seq % policy.trim_every == 0


def start_seq(head: int, floor: int, after: str | None, last_event_id: str | None) -> int:
    """The first sequence number a feed reader gets.

    ``Last-Event-ID`` wins over ``after``; both mean "the changes after this one".
    Without either, the feed starts after ``head``: changes from now on. A point
    past the head is ahead of the server (416, naming the head); one below the
    floor was dropped by retention (410, naming the oldest point that resumes).
    """
    resume = parse_cursor("Last-Event-ID", last_event_id)
    field = "Last-Event-ID" if resume is not None else "after"
    point = resume if resume is not None else parse_cursor("after", after)
    if point is None:
        return head + 1
    if point > head:
        raise CursorAhead(
            f"{field} {point} is beyond the feed's last change {head}", field=field, head=head
        )
    if point < floor:
        raise Dropped(
            f"changes up to {floor} are no longer kept ({field} {point}); "
            "reconnect with snapshot=true",
            field=field,
            oldest=floor,
        )
    return point + 1


class GrowthStore(Protocol):
    """What the growth sweep needs from storage."""

    async def pending_growth(self, cutoff_ms: int, limit: int) -> list[tuple[int, str]]:
        """(user id, job id) of running jobs whose growth is pending since ``cutoff_ms``."""

    async def record_growth(self, user_id: int, job_id: str) -> bool:
        """Record the job's pending growth if it is still due; whether it did."""


async def sweep_growth(store: GrowthStore, policy: ChangePolicy) -> int:
    """Record every trailing growth that is due now; how many."""
    recorded = 0
    pending = await store.pending_growth(now_ms() - policy.growth_interval_ms, SWEEP_BATCH)
    for user_id, job_id in pending:
        try:
            recorded += await store.record_growth(user_id, job_id)
        except StreamerError as exc:  # deleted meanwhile, or storage failing: next sweep
            log.debug("growth of job %s not recorded: %s", job_id, exc.detail)
    return recorded


async def run_growth_sweep(store: GrowthStore, policy: ChangePolicy) -> None:
    """The server's task: sweep once per growth interval, for as long as it runs.

    Each node sweeps; the record is conditional under the job's row lock, so a growth
    two nodes find is recorded once.
    """
    every = policy.growth_interval_ms / 1000
    while True:
        await asyncio.sleep(every)
        try:
            await sweep_growth(store, policy)
        except StreamerError as exc:
            log.warning("growth sweep failed: %s", exc.detail)
