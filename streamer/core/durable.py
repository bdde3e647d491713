"""The Durable Streams door's write rules, once for every backend.

A stream is a job of the user who created it (``View``); what the protocol adds to
a job (content type, TTL or expiry, the last ``Stream-Seq``, fork origin, a
soft-delete mark) is its ``Stream`` row. Closing a stream is ending its job: the
closing append adds the job's ``complete`` event, so every reader of either door
sees the same end.

The rules here run inside the write transactions of ``storage/transactions.py``
(``create_stream``, ``append_stream``), between the reads that load a stream's rows
and the writes that store the result, so SQLite and PostgreSQL cannot disagree:

- creating is idempotent: the same configuration again is a 200, another one a 409
  (content type, TTL or expiry, closed or not, fork origin);
- an append checks, in this order: its producer (``producers.check``: duplicates
  are answered without storing), a closed stream (409, unless it only closes
  again), the content type (409), ``Stream-Seq`` regression (409, byte-wise, scoped
  to the stream);
- the producer's new position, the ``Stream-Seq``, the TTL's clock and the events
  are written in the same transaction.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from . import journal, producers
from .errors import BadRequest, Conflict
from .journal import Appended, JobState
from .messages import DEFAULT_CONTENT_TYPE, JSON, essence, kind_of, offset
from .models import Job, NewEvent
from .producers import Claim, Position

TTL = re.compile(r"0|[1-9][0-9]{0,9}")
CURSOR_EPOCH = 1728432000.0  # 2024-10-09T00:00:00Z, the protocol's default
CURSOR_INTERVAL = 20.0
CURSOR_JITTER = (1, 3600)  # seconds added to a client's cursor that is not behind


@dataclass
class Stream:
    """What the protocol adds to a job: one row per stream."""

    job_id: str
    user_id: int
    path: str
    content_type: str
    ttl: int | None = None  # seconds of a sliding window
    expires_at: str | None = None  # an absolute expiry (API timestamp)
    touched_at: str | None = None  # the last read or write, for the sliding window
    seq: str | None = None  # the last Stream-Seq accepted
    source_id: str | None = None  # a fork's source job
    fork_index: int = 0  # a fork's own events start here; below, its source's
    fork_spec: str | None = None  # how the fork was asked for, for idempotent PUTs
    deleted: bool = False  # soft-deleted: gone for clients, kept for its forks


@dataclass
class View:
    """A job as the Durable Streams door shows it: a stream, or (``stream`` None) a
    job created through ``/api/v1``, which reads as an ``application/json`` stream of
    its event objects and takes no appends through this door."""

    job: Job
    stream: Stream | None = None

    @property
    def content_type(self) -> str:
        return self.stream.content_type if self.stream is not None else "application/json"

    @property
    def kind(self) -> str:
        return kind_of(self.content_type) if self.stream is not None else JSON

    @property
    def closed(self) -> bool:
        return self.job.is_final

    @property
    def tail(self) -> int:
        """The index after the last message (the ``complete`` event is no message)."""
        return self.job.event_count - 1 if self.closed else self.job.event_count


@dataclass(frozen=True)
class ForkRequest:
    source: str  # the source stream's path
    offset: int | None  # where the fork diverges (None: the source's tail)
    offset_text: str
    sub: int  # bytes (or JSON messages) of the next message to take as well

    @property
    def spec(self) -> str:
        return f"{self.source}\n{self.offset_text}\n{self.sub}"


@dataclass(frozen=True)
class ForkPlan:
    """Where a fork's own events start, and the part of a message it takes as its
    own first event (a sub-offset inside one of the source's messages)."""

    base: int
    first: NewEvent | None = None


@dataclass(frozen=True)
class Config:
    """A stream's configuration, as a PUT asks for it and as it is compared."""

    content_type: str
    ttl: int | None = None
    expires_at: str | None = None
    closed: bool = False
    fork_spec: str | None = None


def config_of(view: View) -> Config:
    stream = view.stream
    if stream is None:
        return Config(view.content_type, closed=view.closed)
    return Config(stream.content_type, stream.ttl, stream.expires_at, view.closed, stream.fork_spec)


def same_config(have: Config, want: Config) -> bool:
    return (
        essence(have.content_type) == essence(want.content_type)
        and have.ttl == want.ttl
        and _instant(have.expires_at) == _instant(want.expires_at)
        and have.closed == want.closed
        and have.fork_spec == want.fork_spec
    )


def fork_config(
    source: View,
    content_type: str | None,
    ttl: int | None,
    expires: str | None,
    closed: bool,
    fork: ForkRequest,
) -> Config:
    """A fork's configuration: the source's content type (a different one is a 409),
    and its own TTL or expiry, or else the source's (the protocol's table)."""
    if content_type is not None and essence(content_type) != essence(source.content_type):
        raise Conflict(
            f"the source stream is {source.content_type}, not {content_type}",
            field="Content-Type",
        )
    if ttl is None and expires is None and source.stream is not None:
        ttl, expires = source.stream.ttl, source.stream.expires_at
    return Config(content_type or source.content_type, ttl, expires, closed, fork.spec)


def new_config(
    content_type: str | None, ttl: int | None, expires: str | None, closed: bool
) -> Config:
    return Config(content_type or DEFAULT_CONTENT_TYPE, ttl, expires, closed)


# headers --------------------------------------------------------------------------------


def parse_ttl(raw: str | None) -> int | None:
    """Seconds, in plain decimal: no sign, leading zero, fraction or exponent."""
    if raw is None:
        return None
    if not TTL.fullmatch(raw):
        raise BadRequest("Stream-TTL must be a whole number of seconds", field="Stream-TTL")
    return int(raw)


def parse_expires(raw: str | None) -> str | None:
    """An RFC 3339 timestamp with a time zone, as an API timestamp (UTC)."""
    if raw is None:
        return None
    try:
        when = datetime.fromisoformat(raw.strip())
    except ValueError as exc:
        raise BadRequest(
            "Stream-Expires-At must be an RFC 3339 timestamp", field="Stream-Expires-At"
        ) from exc
    if when.tzinfo is None or "T" not in raw.upper():
        raise BadRequest(
            "Stream-Expires-At must be an RFC 3339 timestamp with a time zone",
            field="Stream-Expires-At",
        )
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def expiry_headers(ttl: int | None, expires: str | None) -> None:
    if ttl is not None and expires is not None:
        raise BadRequest("give Stream-TTL or Stream-Expires-At, not both", field="Stream-TTL")


def is_true(raw: str | None) -> bool:
    """``Stream-Closed``: present only when its value is ``true`` (any case)."""
    return raw is not None and raw.strip().lower() == "true"


def _instant(stamp: str | None) -> float | None:
    return None if stamp is None else datetime.fromisoformat(stamp).timestamp()


# expiry ---------------------------------------------------------------------------------


def expired(stream: Stream, now: float | None = None) -> bool:
    """Whether the stream's TTL (idle since its last read or write) or its absolute
    expiry has passed."""
    now = time.time() if now is None else now
    if stream.expires_at is not None and now >= _instant(stream.expires_at):  # type: ignore[operator]
        return True
    if stream.ttl is not None and stream.touched_at is not None:
        return now >= _instant(stream.touched_at) + stream.ttl  # type: ignore[operator]
    return False


# cursors --------------------------------------------------------------------------------


def cursor(client: str | None, now: float | None = None) -> str:
    """The ``Stream-Cursor`` of a live answer: the current 20-second interval since
    the protocol's epoch; past a client's cursor that is not behind it (with jitter),
    so a cached answer can never be served back forever."""
    now = time.time() if now is None else now
    current = int((now - CURSOR_EPOCH) // CURSOR_INTERVAL)
    if client is None or not client.isdigit() or len(client) > 18 or int(client) < current:
        return str(current)
    jitter = random.randint(*CURSOR_JITTER)  # noqa: S311 - spreading, not a secret
    return str(int(client) + max(1, -(-jitter // int(CURSOR_INTERVAL))))


# appending ------------------------------------------------------------------------------


@dataclass
class AppendRequest:
    """One POST, parsed. ``events`` None: a body whose content type does not match the
    stream (refused with 409 once the checks before it have passed)."""

    events: list[NewEvent] | None
    close: bool = False
    seq: str | None = None
    claim: Claim | None = None
    content_type: str | None = None


@dataclass
class AppendOutcome:
    """What an append did: the status to answer, where the stream now ends, and what
    the transaction must store besides the events."""

    status: int
    next_index: int
    closed: bool
    appended: Appended | None = None
    position: Position | None = None  # the producer's, to store
    headers: dict[str, str] = field(default_factory=dict)


def closed_conflict(next_index: int) -> Conflict:
    error = Conflict("the stream is closed", field="Stream-Closed")
    error.headers.update({"Stream-Closed": "true", "Stream-Next-Offset": offset(next_index)})
    return error


def append(
    stream: Stream,
    state: JobState,
    stored: Position | None,
    request: AppendRequest,
    now: str,
    *,
    byte_limit: int | None = None,
) -> AppendOutcome:
    """The protocol's checks, in its order, then ``journal.append`` (with the
    ``complete`` event when it closes)."""
    job = state.job
    tail = View(job).tail
    claim = request.claim
    echo: dict[str, str] = {}
    if claim is not None:
        if not producers.check(claim, stored):
            assert stored is not None
            echo = {"Producer-Epoch": str(stored.epoch), "Producer-Seq": str(stored.seq)}
            if job.is_final:
                echo["Stream-Closed"] = "true"
            return AppendOutcome(204, tail, job.is_final, headers=echo)
        echo = {"Producer-Epoch": str(claim.epoch), "Producer-Seq": str(claim.seq)}
    if job.is_final:
        if request.close and not request.events:
            return AppendOutcome(204, tail, True, headers={"Stream-Closed": "true"})
        raise closed_conflict(tail)
    if request.events is None:
        raise Conflict(
            f"the stream is {stream.content_type}, not {request.content_type}",
            field="Content-Type",
        )
    if request.seq is not None and stream.seq is not None and request.seq <= stream.seq:
        raise Conflict(
            f"Stream-Seq {request.seq!r} is not after the last one, {stream.seq!r}",
            field="Stream-Seq",
        )
    events = list(request.events)
    if request.close:
        events.append(NewEvent("complete", None, True))
    appended = journal.append(state, events, now, byte_limit=byte_limit) if events else None
    if request.seq is not None:
        stream.seq = request.seq
    stream.touched_at = now
    outcome = AppendOutcome(
        200 if claim is not None and request.events else 204,
        View(job).tail,
        job.is_final,
        appended,
        Position(claim.epoch, claim.seq) if claim is not None else None,
        echo,
    )
    if job.is_final:
        outcome.headers["Stream-Closed"] = "true"
    return outcome
