"""Several jobs on one WebSocket, subscribed and unsubscribed at any time.

``WS /api/v1/streams/events/ws`` (optionally ``?jobs=ID1,ID2:120`` to start with).
The client sends, whenever it likes:

- ``{"subscribe": "ID"}``, with ``"from_index": N`` or ``"tail": N`` (default: from
  the start of the log), answered ``{"type": "_subscribed", "job_id", "from_index"}``
  and then that job's events, each tagged with its ``job_id``;
- ``{"unsubscribe": "ID"}``, answered ``{"type": "_end", ..., "reason":
  "unsubscribed", "next_index"}``: where to resume it later.

A job that cannot be followed (missing or foreign: 404; ``from_index`` past its end:
416; already subscribed: 409; more than ``max_jobs_per_stream`` at once: 400) gets
``{"type": "_error", "job_id", "problem"}`` and the connection goes on. Messages
are handled one after another, in order; at most ``max_jobs_per_stream`` may wait,
past that the socket is closed (1008). The client tracks each job's position from
the events themselves (``job_id``, ``index``), so a new connection resubscribes
each job exactly where it stopped. Close codes are the single-job WebSocket's.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import MutableMapping
from typing import Any

import orjson
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from ...core.errors import BadRequest, Conflict, StreamerError
from ...core.models import JOB_ID
from ..http.protocol import HTTPProtocol
from ..openapi import Operation
from ..resources import resources
from .multi import Session, Wanted, control, parse_jobs
from .wire import LeanFrames, Pipe, check_origin, refuse_asgi, refuse_lean, serve_websocket

DOC = Operation(
    "WebSocket (upgrade): several jobs' events, each tagged with its job id; the client "
    "sends {subscribe, from_index | tail} and {unsubscribe} at any time",
    (101, 400, 403, 429),
    ("jobs",),
    streaming=True,
)
Op = tuple[str, Wanted]  # ("subscribe" | "unsubscribe", what)


def parse_message(data: str | bytes) -> Op:
    """One client message, or a 400 naming what is wrong with it."""
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("a message must be a JSON object", field="message") from exc
    if not isinstance(message, dict):
        raise BadRequest("a message must be a JSON object", field="message")
    verbs = [verb for verb in ("subscribe", "unsubscribe") if verb in message]
    allowed = {"subscribe": {"subscribe", "from_index", "tail"}, "unsubscribe": {"unsubscribe"}}
    if len(verbs) != 1 or set(message) - allowed[verbs[0]]:
        raise BadRequest(
            'send {"subscribe": ID, "from_index"?: N, "tail"?: N} or {"unsubscribe": ID}',
            field="message",
        )
    verb = verbs[0]
    job_id = message[verb]
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise BadRequest(f"{verb} must be a job id", field=verb)
    positions: dict[str, str | None] = {}
    for name in ("from_index", "tail"):
        value = message.get(name)
        if value is not None and not (type(value) is int and 0 <= value < 10**15):
            raise BadRequest(f"{name} must be a non-negative integer below 10^15", field=name)
        positions[name] = None if value is None else str(value)
    if positions["from_index"] is not None and positions["tail"] is not None:
        raise BadRequest("give from_index or tail, not both", field="tail")
    return verb, Wanted(job_id, positions["from_index"], positions["tail"])


class Subscriptions:
    """A WebSocket session's client messages, handled one at a time, in order, by a
    task that exists only while some wait (an idle socket holds no coroutine)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.pending: deque[Op] = deque()
        self.task: asyncio.Task[None] | None = None
        self.limit = session.res.settings.max_jobs_per_stream

    def message(self, data: str | bytes) -> None:
        try:
            op = parse_message(data)
        except BadRequest as exc:
            self.session.signal(control("_error", None, problem=exc.problem()))
            return
        self.add(op)

    def add(self, op: Op) -> None:
        if self.session.closing is not None:
            return
        if len(self.pending) >= self.limit:
            self.session.close("too_many_messages")
            return
        self.pending.append(op)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while self.pending and self.session.closing is None:
                verb, wanted = self.pending.popleft()
                if verb == "unsubscribe":
                    self._unsubscribe(wanted.job_id)
                else:
                    await self._subscribe(wanted)
        finally:
            self.task = None

    async def _subscribe(self, wanted: Wanted) -> None:
        session = self.session
        try:
            if wanted.job_id in session.members:
                raise Conflict("already subscribed to this job", field="subscribe")
            session.res.streams.start_rate.take()
            job, start = await session.resolve(wanted)
            if session.closing is not None:
                return
            if start is None:
                session.past_end(job)
                return
            session.follow(job, start)  # its first events are written after this turn
            session.signal(control("_subscribed", job.id, from_index=start))
        except StreamerError as exc:  # 404, 416, 409, ... or storage failing: this job only
            session.refused(wanted.job_id, exc)

    def _unsubscribe(self, job_id: str) -> None:
        member = self.session.members.get(job_id)
        if member is None or member.follow is None:
            error = Conflict("not subscribed to this job", field="unsubscribe")
            self.session.refused(job_id, error)
            return
        member.follow.close("unsubscribed")


async def _handshake(conn: HTTPConnection) -> tuple[Session, list[Op]]:
    """Everything refused before the upgrade: origin, credentials, the stream limit,
    a malformed ``jobs``; then the session and its first subscriptions."""
    check_origin(conn)
    res = resources(conn)
    res.streams.start_rate.take()
    credential = await res.auth.caller(conn)
    raw = conn.query_params.get("jobs")
    limit = res.settings.max_jobs_per_stream
    first = parse_jobs(raw, limit) if raw is not None else {}
    ops = [("subscribe", Wanted(k, None if v is None else str(v))) for k, v in first.items()]
    return Session(res, credential, "ws"), ops


async def streams_ws_lean(scope: MutableMapping[str, Any], conn: HTTPProtocol) -> None:
    request = HTTPConnection(scope)
    try:
        session, ops = await _handshake(request)
    except StreamerError as exc:
        refuse_lean(scope, conn, exc)
        return
    conn.accept_websocket([])
    wire = LeanFrames(conn)
    subscriptions = Subscriptions(session)
    wire.on_message = subscriptions.message
    session.attach(wire)
    for op in ops:
        subscriptions.add(op)


async def streams_ws(websocket: WebSocket) -> None:
    try:
        session, ops = await _handshake(websocket)
    except StreamerError as exc:
        await refuse_asgi(websocket, exc)
        return
    settings = session.res.settings
    pipe = Pipe(settings.stream_buffer_bytes)
    session.attach(pipe)
    subscriptions = Subscriptions(session)
    try:
        await websocket.accept()
    except BaseException:
        session.close("disconnect")
        raise
    for op in ops:
        subscriptions.add(op)
    try:
        await serve_websocket(
            websocket,
            pipe,
            subscriptions.message,
            settings.ws_max_message_bytes,
            settings.send_timeout_seconds,
        )
    finally:
        session.close("disconnect")  # a no-op when it has ended
