"""The resources of one running app, and the request helpers every route shares.

``create_app`` builds one ``Context`` in its lifespan and stores it on
``app.state``; routes reach it through ``context(request)``. There are no module
globals, so every test can build a fresh app next to another one.

Open streams are tracked with the ``Credential`` that opened them, which is what
lets one periodic query (``close_revoked``) end every stream of a revoked key or a
deactivated user, on every node, and what the per-user stream limit counts.
``registered()`` is also where every stream's start and end are logged and counted
(``streamer.stream`` lines, the counters behind ``/metrics``), however it ends.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from . import auth, logs, tokens
from .auth import Credential
from .config import Settings
from .errors import BadRequest, PayloadTooLarge, StreamerError
from .follow import Follow, FollowHooks, start_index
from .hub import Hub
from .limits import AppendRate, StreamSlots, StreamStartRate
from .metrics import LATENCY_BUCKETS, Histogram
from .models import Job, utcnow
from .parsing import parse_json
from .storage.base import Storage

log = logging.getLogger("streamer")
stream_log = logging.getLogger("streamer.stream")
KEY_TOUCH_SECONDS = 60.0  # last_used_at is written at most this often per key (per node)


@dataclass
class Context:
    settings: Settings
    storage: Storage
    hub: Hub
    hooks: FollowHooks = field(default_factory=FollowHooks)
    open_streams: set[Follow] = field(default_factory=set)
    # "<transport>:streams|events|send_timeout", "replayed": totals of ended streams
    finished: Counter[str] = field(default_factory=Counter)
    credentials: dict[Follow, Credential] = field(default_factory=dict)
    key_touched: dict[int, float] = field(default_factory=dict)  # key id -> monotonic time
    slots: StreamSlots = field(init=False)
    append_rate: AppendRate = field(init=False)
    start_rate: StreamStartRate = field(init=False)
    append_latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))

    def __post_init__(self) -> None:
        self.slots = StreamSlots(self.settings.max_streams_per_user)
        self.append_rate = AppendRate(self.settings.append_rate, self.settings.append_burst)
        self.start_rate = StreamStartRate(
            self.settings.max_stream_starts_per_second, self.settings.stream_start_burst
        )

    def follow(self, job: Job, start: int, transport: str, *, live: bool = True) -> Follow:
        """A ``Follow`` configured by the settings, registered so shutdown can end it."""
        return Follow(
            self.storage,
            self.hub,
            job.id,
            start,
            live=live and not job.is_final,
            page_size=self.settings.max_page_events,
            hooks=self.hooks,
            transport=transport,
        )

    def open_stream(self, stream: Follow, credential: Credential) -> Follow:
        """Count ``stream`` against its user's limit (``TooManyRequests`` past it) and
        track it, before the response starts: a refusal is still a 429, not a stream.

        The caller must then run the stream inside ``registered()``, which releases it.
        """
        self.slots.acquire(credential.user_id)
        self.open_streams.add(stream)
        self.credentials[stream] = credential
        return stream

    @contextlib.contextmanager
    def registered(self, stream: Follow) -> Iterator[Follow]:
        """Track an open stream so shutdown (and revocation) can end it; release its
        slot when it ends, however it ends; log its start and its end (with how long
        it ran, what it sent and why it ended) and count it for /metrics."""
        self.open_streams.add(stream)
        credential = self.credentials.get(stream)
        user_id = credential.user_id if credential is not None else None
        key_id = credential.key_id if credential is not None else None
        began = time.monotonic()
        if stream_log.isEnabledFor(logging.INFO):
            logs.emit(
                stream_log,
                "stream_start",
                f"stream start {stream.transport} job={stream.job_id} user={user_id} "
                f"from={stream.next_index}",
                job_id=stream.job_id,
                user_id=user_id,
                key_id=key_id,
                transport=stream.transport,
                from_index=stream.next_index,
            )
        try:
            yield stream
        finally:
            self.open_streams.discard(stream)
            credential = self.credentials.pop(stream, None)
            if credential is not None:
                self.slots.release(credential.user_id)
            # A live stream that ended neither complete nor closed for a reason was cut
            # off under it (the text log's response is cancelled when its client leaves).
            ended = stream.complete or not stream.live
            reason = stream.closed or ("done" if ended else "disconnect")
            stream.close(reason)
            self.finished[f"{stream.transport}:streams"] += 1
            self.finished[f"{stream.transport}:events"] += stream.sent
            self.finished["replayed"] += stream.replayed
            if reason == "send_timeout":
                self.finished[f"{stream.transport}:send_timeout"] += 1
            if stream_log.isEnabledFor(logging.INFO):
                took = round(time.monotonic() - began, 3)
                logs.emit(
                    stream_log,
                    "stream_end",
                    f"stream end {stream.transport} job={stream.job_id} user={user_id} "
                    f"duration={took}s sent={stream.sent} replayed={stream.replayed} "
                    f"next={stream.next_index} complete={stream.complete} reason={reason}",
                    job_id=stream.job_id,
                    user_id=user_id,
                    key_id=key_id,
                    transport=stream.transport,
                    duration_s=took,
                    events_sent=stream.sent,
                    events_replayed=stream.replayed,
                    next_index=stream.next_index,
                    complete=stream.complete,
                    reason=reason,
                )

    def close_streams(self, reason: str) -> None:
        for stream in list(self.open_streams):
            stream.close(reason)

    async def close_revoked(self) -> int:
        """End every open stream whose key was revoked or whose user was deactivated.

        One query for all open streams, whatever process made the change: this is
        what makes revocation reach streams on every node within a re-check period.
        """
        if not self.credentials:
            return 0
        alive = await self.storage.active_keys({c.key_id for c in self.credentials.values()})
        revoked = [s for s, c in list(self.credentials.items()) if c.key_id not in alive]
        for stream in revoked:
            stream.close("revoked")
        return len(revoked)

    async def touch(self, key_id: int) -> None:
        """Record the key's use, at most once a minute: not one write per request."""
        now = time.monotonic()
        last = self.key_touched.get(key_id)
        if last is not None and now - last < KEY_TOUCH_SECONDS:
            return
        self.key_touched[key_id] = now
        try:
            await self.storage.touch_key(key_id, utcnow())
        except StreamerError as exc:  # bookkeeping must not fail the request it rides on
            log.warning("could not record the use of key %d: %s", key_id, exc.detail)


def context(conn: HTTPConnection) -> Context:
    ctx: Context = conn.app.state.ctx
    return ctx


async def authenticate(conn: HTTPConnection) -> Credential:
    """The caller's credential from its ``Authorization`` header (401 otherwise)."""
    ctx = context(conn)
    credential = await auth.authenticate(ctx.storage, conn)
    logs.note_user(conn.scope, credential.user_id)
    await ctx.touch(credential.key_id)
    return credential


class StreamStart(NamedTuple):
    job: Job
    start: int | None  # None: the reader is already past the complete event
    credential: Credential


async def stream_start(conn: HTTPConnection, last_event_id: str | None = None) -> StreamStart:
    """Authenticate, resolve the job (404 if not the caller's) and the reader's start.

    The shared prelude of every streaming transport. A ``?token=`` stream token or
    the ``Authorization`` header; an API key in the URL is refused either way. The
    node's stream-start rate (``Overloaded``: 503 / close 1013) is checked first,
    before any database read, so a refused start costs next to nothing.
    """
    ctx = context(conn)
    ctx.start_rate.take()
    storage, params = ctx.storage, conn.query_params
    token = params.get("token")
    if token is not None and not token.startswith(auth.KEY_PREFIX):
        credential = await tokens.credential_for_token(storage, token, conn.path_params["job_id"])
        logs.note_user(conn.scope, credential.user_id)
    else:
        credential = await authenticate(conn)
    job = await storage.get_job(credential.user_id, conn.path_params["job_id"])
    start = start_index(job, params.get("from_index"), params.get("tail"), last_event_id)
    return StreamStart(job, start, credential)


async def read_json(request: Request) -> Any:
    """The request body as JSON, refusing more than ``max_body_bytes`` without reading it."""
    limit = context(request).settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes", limit=limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes", limit=limit)
    if not body:
        raise BadRequest("request body is empty; send a JSON object", field="body")
    return parse_json(bytes(body))


def json_response(
    content: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(content), status, headers=headers, media_type="application/json")
