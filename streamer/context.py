"""The resources of one running app, and the request helpers every route shares.

``create_app`` builds one ``Context`` in its lifespan and stores it on
``app.state``; routes reach it through ``context(request)``. There are no module
globals, so every test can build a fresh app next to another one.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from . import auth, tokens
from .config import Settings
from .errors import BadRequest, PayloadTooLarge
from .follow import Follow, FollowHooks, start_index
from .hub import Hub
from .models import Job, User, parse_json
from .storage.base import Storage


@dataclass
class Context:
    settings: Settings
    storage: Storage
    hub: Hub
    hooks: FollowHooks = field(default_factory=FollowHooks)
    open_streams: set[Follow] = field(default_factory=set)
    finished: Counter[str] = field(default_factory=Counter)  # "<transport>:streams|events"

    def follow(self, job: Job, start: int, transport: str, *, live: bool = True) -> Follow:
        """A ``Follow`` configured by the settings, registered so shutdown can end it."""
        return Follow(
            self.storage,
            self.hub,
            job.id,
            start,
            live=live and not job.is_final,
            page_size=self.settings.max_page_events,
            keepalive=self.settings.keepalive_seconds,
            hooks=self.hooks,
            transport=transport,
        )

    @contextlib.contextmanager
    def registered(self, stream: Follow) -> Iterator[Follow]:
        """Track an open stream so shutdown (and revocation) can end it."""
        self.open_streams.add(stream)
        try:
            yield stream
        finally:
            self.open_streams.discard(stream)
            stream.close("done")
            self.finished[f"{stream.transport}:streams"] += 1
            self.finished[f"{stream.transport}:events"] += stream.sent
            self.finished["replayed"] += stream.replayed

    def close_streams(self, reason: str) -> None:
        for stream in list(self.open_streams):
            stream.close(reason)


def context(conn: HTTPConnection) -> Context:
    ctx: Context = conn.app.state.ctx
    return ctx


async def current_user(conn: HTTPConnection) -> User:
    return await auth.authenticate(context(conn).storage, conn)


async def stream_start(
    conn: HTTPConnection, last_event_id: str | None = None
) -> tuple[Job, int | None]:
    """Authenticate, resolve the job (404 if not the caller's) and the reader's start.

    The shared prelude of every streaming transport; ``None`` as the start means the
    reader is already past the ``complete`` event.
    """
    storage, params = context(conn).storage, conn.query_params
    token = params.get("token")
    if token is not None and not token.startswith(auth.KEY_PREFIX):
        user = await tokens.user_for_token(storage, token, conn.path_params["job_id"])
    else:
        user = await current_user(conn)
    job = await storage.get_job(user.id, conn.path_params["job_id"])
    return job, start_index(job, params.get("from_index"), params.get("tail"), last_event_id)


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
