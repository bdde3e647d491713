"""Several jobs' logs on one connection, each resumed exactly by its own index.

Every job on the connection is its own ``Follow`` (the one merge), opened through the
stream registry as a member of the connection's ``StreamGroup``: one stream against
the user's limit, at most ``max_jobs_per_stream`` jobs. A ``Member`` is the outlet
of one job's follow: it tags each event with the job's id and writes it to the
connection's ``Wire``, whose writability all members share (when the socket is
backed up, every job's events wait in its hub channel, or its replay waits).

What the client sees (``docs/api.md``), on SSE and WebSocket alike:

- each event's JSON line with ``"job_id"`` first (spliced into the stored line,
  once per event for every reader of that job, never re-encoded);
- ``{"type": "_end", "job_id", "reason", "next_index"}`` when one job's stream ends
  (``complete``, ``deleted``, ``unsubscribed``) without ending the connection;
- ``{"type": "_error", "job_id", "problem"}`` when a job cannot be followed (the
  same 404 a single-job stream gives for a missing or foreign id, a 416, ...): the
  other jobs go on. Event types never start with ``_``, so these cannot collide.

SSE (``GET /api/v1/streams/events?jobs=ID1,ID2:120``): every message's ``id`` is the
composite cursor ``ID1:N1,ID2:N2`` of every job on the connection, ``N`` being the
job's next index, so ``Last-Event-ID`` resumes each job exactly where it stopped.
The response ends when no job is left to follow; a reconnect whose jobs are all past
their end gets 204, which stops ``EventSource``. A connection-wide end (shutdown,
revocation, a client that stopped reading, storage failing) ends the response; the
client resumes with its cursor. The WebSocket is in ``multi_ws.py``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ...core.cursor import parse_cursor, start_index
from ...core.errors import BadRequest, CursorAhead, NotFound, Overloaded, StreamerError
from ...core.follow import Follow
from ...core.keys import Credential
from ...core.models import JOB_ID, Event, Job
from ..openapi import Operation
from ..resources import Resources, resources
from .sse import HEADERS
from .streaming import Answered, lean
from .wire import LeanChunks, Pipe, Wire, pipe_response
from .ws import CLOSES

DOC = Operation(
    "Server-Sent Events: several jobs' events on one stream, each tagged with its job id, "
    "resumed exactly by a composite cursor (ID:N,ID:N) in the id of every message",
    (200, 204, 400, 404, 429, 503),
    ("jobs", "Last-Event-ID (composite)"),
    media="text/event-stream",
    streaming=True,
)
# Why a follow ended that ends the whole connection (the rest end one job's stream).
CONNECTION_ENDS = frozenset({"shutdown", "revoked", "send_timeout", "too_big", "disconnect"})
CLOSE_CODES = {**CLOSES, "too_many_messages": (1008, "too many messages waiting")}


@dataclass
class Wanted:
    """One job a client asked for: where to start (strings, as a query gives them)."""

    job_id: str
    from_index: str | None = None
    tail: str | None = None


def parse_jobs(raw: str | None, limit: int, field: str = "jobs") -> dict[str, int | None]:
    """``ID1,ID2:120``: job ids in order, each with its next index if given."""
    if not raw:
        raise BadRequest(f"{field} is required: comma-separated job ids", field=field)
    found: dict[str, int | None] = {}
    for part in raw.split(","):
        job_id, sep, index = part.strip().partition(":")
        if not JOB_ID.fullmatch(job_id):
            raise BadRequest(f"{field}: {part[:80]!r} is not a job id", field=field)
        if job_id in found:
            raise BadRequest(f"{field}: job {job_id} is listed twice", field=field)
        found[job_id] = parse_cursor(field, index) if sep else None
        if len(found) > limit:
            raise BadRequest(
                f"{field}: a stream carries at most {limit} jobs (max_jobs_per_stream)",
                field=field,
                limit=limit,
            )
    return found


def control(kind: str, job_id: str | None, **fields: object) -> bytes:
    return orjson.dumps({"type": kind, "job_id": job_id, **fields})


def tagged(event: Event, tag: bytes) -> bytes:
    """The event's stored line with ``"job_id"`` first; kept on the event, so every
    multi-job reader of that job shares it."""
    wire = event.wire
    line = wire.get("tagged") if wire is not None else None
    if line is None:
        line = tag + event.line[1:]
        if wire is None:
            event.wire = {"tagged": line}
        else:
            wire["tagged"] = line
    return line


class Member:
    """The outlet of one job's follow on a shared connection."""

    __slots__ = ("session", "job_id", "tag", "follow", "on_ready")

    def __init__(self, session: Session, job_id: str) -> None:
        self.session = session
        self.job_id = job_id
        self.tag = b'{"job_id":"%s",' % job_id.encode()
        self.follow: Follow | None = None
        self.on_ready: Callable[[], None] | None = None

    def ready(self) -> bool:
        return self.session.ready()

    def send(self, events: Sequence[Event]) -> None:
        self.session.deliver(self, events)

    def keepalive(self, next_index: int) -> None:
        self.session.keepalive()

    def finish(self, follow: Follow) -> None:
        self.session.ended(self, follow)

    async def drain(self) -> None:
        await self.session.drain()


class Session:
    """One connection's jobs: its group (its slot), its members, and (SSE) its cursor."""

    def __init__(self, res: Resources, credential: Credential, transport: str) -> None:
        self.res = res
        self.credential = credential
        self.transport = transport
        self.sse = transport == "sse"
        self.wire: Wire | None = None
        self.members: dict[str, Member] = {}
        self.cursor: dict[str, bytes] = {}  # job id -> b"ID:N", every job the client follows
        self.closing: str | None = None
        self.last_write = time.monotonic()
        self.group = res.streams.open_group(
            credential, transport, res.settings.max_jobs_per_stream, self.close
        )

    # the connection ----------------------------------------------------------------------

    def attach(self, wire: Wire) -> None:
        self.wire = wire
        wire.on_ready = self._ready
        wire.on_lost = self.close

    def ready(self) -> bool:
        return self.wire is not None and self.wire.ready()

    async def drain(self) -> None:
        if self.wire is None:
            raise ConnectionError("not connected yet")
        await self.wire.drain()

    def write(self, message: bytes) -> None:
        if self.wire is not None and self.closing is None:
            self.wire.write(message)
            self.last_write = time.monotonic()

    def keepalive(self) -> None:
        """At most one comment per keepalive period for the connection, whichever job's
        follow asks (each asks when it has been idle that long)."""
        every = self.res.hub.keepalive or 0.0
        if self.sse and time.monotonic() - self.last_write >= every:
            self.write(b": keepalive\n\n")

    def close(self, reason: str) -> None:
        """The connection ends: every job's follow, then the response or socket."""
        if self.closing is not None:
            return
        self.closing = reason
        for member in list(self.members.values()):
            if member.follow is not None:
                member.follow.close(reason)
        self.members.clear()
        if self.wire is not None:
            self.wire.end(CLOSE_CODES.get(reason))
        self.group.release()

    def _ready(self) -> None:
        for member in list(self.members.values()):
            if member.on_ready is not None:
                member.on_ready()

    # jobs ----------------------------------------------------------------------------------

    async def resolve(self, asked: Wanted) -> tuple[Job, int | None]:
        """The caller's job and where its stream starts (None: already past its end);
        the refusal a single-job stream would give, otherwise."""
        job = await self.res.storage.jobs.get_job(self.credential.user_id, asked.job_id)
        return job, start_index(job, asked.from_index, asked.tail, None)

    def follow(self, job: Job, start: int) -> None:
        """Start following ``job`` from ``start`` on this connection (not once it has
        ended: shutdown or revocation may come while its jobs are being looked up)."""
        if self.closing is not None:
            return
        member = Member(self, job.id)
        self.members[job.id] = member
        if self.sse:  # the WebSocket has no cursor: its client tracks each job itself
            self.cursor[job.id] = b"%s:%d" % (job.id.encode(), start)
        try:
            member.follow = self.res.streams.open(
                job, start, self.transport, self.credential, member, group=self.group
            )
        except StreamerError:
            self.members.pop(job.id, None)
            raise

    def refused(self, job_id: str, error: StreamerError) -> None:
        self.cursor.pop(job_id, None)
        self.signal(control("_error", job_id, problem=error.problem()))

    def past_end(self, job: Job) -> None:
        if self.sse:
            self.cursor[job.id] = b"%s:%d" % (job.id.encode(), job.event_count)
        self.signal(control("_end", job.id, reason="complete", next_index=job.event_count))

    def signal(self, body: bytes) -> None:
        """A control message, framed for the transport."""
        if self.sse:
            kind = orjson.loads(body)["type"].encode()
            self.write(b"id: %s\nevent: %s\ndata: %s\n\n" % (self._id(), kind, body))
        else:
            self.write(body)

    def deliver(self, member: Member, events: Sequence[Event]) -> None:
        if not self.sse:
            self.write(b"\n".join([tagged(e, member.tag) for e in events]))
            return
        cursor, job = self.cursor, member.job_id.encode()
        parts = []
        for event in events:
            cursor[member.job_id] = b"%s:%d" % (job, event.index + 1)
            line = tagged(event, member.tag)
            parts.append(
                b"id: %s\nevent: %s\ndata: %s\n\n" % (self._id(), event.type.encode(), line)
            )
        self.write(b"".join(parts))

    def ended(self, member: Member, follow: Follow) -> None:
        """One job's follow ended: a job's end, or the connection's."""
        if self.members.get(member.job_id) is not member:
            return  # ended by ``close``, or replaced
        del self.members[member.job_id]
        if self.closing is not None:
            return
        reason = "complete" if follow.complete else (follow.closed or "complete")
        # On SSE a storage failure ends the connection: the client resumes every job at
        # once with its cursor. A WebSocket client resubscribes to that job.
        if reason in CONNECTION_ENDS or (self.sse and reason == "storage_error"):
            self.close(reason)
            return
        self.signal(control("_end", member.job_id, reason=reason, next_index=follow.next_index))
        if self.sse and not self.members:
            self.close("complete")

    def _id(self) -> bytes:
        return b",".join(self.cursor.values())


Outcome = tuple[Job, int] | Job | StreamerError  # follow from there, past its end, refused


async def open_jobs(session: Session, asked: list[Wanted]) -> list[tuple[str, Outcome]]:
    """Resolve each job: ``(id, (job, start))``, ``(id, job)`` past its end, or
    ``(id, error)``; a storage failure fails them all (503)."""
    outcomes: list[tuple[str, Outcome]] = []
    for one in asked:
        try:
            job, start = await session.resolve(one)
        except (NotFound, CursorAhead, BadRequest, Overloaded) as exc:
            outcomes.append((one.job_id, exc))
            continue
        outcomes.append((one.job_id, job if start is None else (job, start)))
    return outcomes


def start_jobs(session: Session, outcomes: list[tuple[str, Outcome]]) -> None:
    """In the client's order: each job's refusal or end, or its follow. The cursor
    holds every job first, so the first message's id already resumes them all."""
    for job_id, outcome in outcomes:
        if isinstance(outcome, Job):
            session.cursor[job_id] = b"%s:%d" % (job_id.encode(), outcome.event_count)
        elif isinstance(outcome, tuple):
            session.cursor[job_id] = b"%s:%d" % (job_id.encode(), outcome[1])
    for job_id, outcome in outcomes:
        if isinstance(outcome, StreamerError):
            session.refused(job_id, outcome)
        elif isinstance(outcome, Job):
            session.past_end(outcome)
        else:
            try:
                session.follow(*outcome)
            except StreamerError as exc:
                session.refused(job_id, exc)


async def streams_events(request: Request) -> Response:
    """``GET /api/v1/streams/events``: the jobs listed, on one SSE response."""
    res = resources(request)
    res.streams.start_rate.take()
    credential = await res.auth.caller(request)
    limit = res.settings.max_jobs_per_stream
    wanted = parse_jobs(request.query_params.get("jobs"), limit)
    resume = request.headers.get("last-event-id")
    if resume:
        wanted.update(
            {k: v for k, v in parse_jobs(resume, limit, "Last-Event-ID").items() if k in wanted}
        )
    asked = [Wanted(k, None if v is None else str(v)) for k, v in wanted.items()]
    session = Session(res, credential, "sse")  # the 429 comes before anything is sent
    try:
        outcomes = await open_jobs(session, asked)
    except BaseException:
        session.group.release()
        raise
    if not any(isinstance(o, tuple) for _, o in outcomes):
        session.group.release()
        errors = [o for _, o in outcomes if isinstance(o, StreamerError)]
        if len(errors) == len(outcomes):
            raise errors[0]  # none of the jobs can be followed: that job's refusal
        return Response(status_code=204)  # every job is past its end
    preamble = b"retry: %d\n: connected\n\n" % random.randint(1000, 3000)  # noqa: S311
    context = lean(request.scope)
    if context is None:
        pipe = Pipe(res.settings.stream_buffer_bytes)
        session.attach(pipe)
        start_jobs(session, outcomes)
        return pipe_response(pipe, HEADERS, preamble, res.settings.send_timeout_seconds)
    conn = context.conn
    session.attach(LeanChunks(conn))
    conn.start(200, [*HEADERS, *context.headers], chunked=True)
    conn.write_chunk(preamble)
    start_jobs(session, outcomes)
    return Answered()
