"""What every route does with a request: read its JSON, answer JSON or a problem, and
the shared prelude of every stream."""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson
from starlette.requests import ClientDisconnect, HTTPConnection, Request
from starlette.responses import Response

from ..core.cursor import start_index
from ..core.errors import BadRequest, ClientGone, PayloadTooLarge, StreamerError
from ..core.keys import Credential
from ..core.models import Job
from .parsing import parse_json
from .resources import resources


def json_response(
    content: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(content), status, headers=headers, media_type="application/json")


def problem(error: StreamerError) -> Response:
    """The RFC 9457 problem+json response of ``error``."""
    return Response(
        orjson.dumps(error.problem()),
        error.status,
        headers=error.headers,
        media_type="application/problem+json",
    )


async def read_body(request: Request) -> bytes:
    """The whole request body, refusing more than ``max_body_bytes`` without reading it."""
    limit = resources(request).settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes", limit=limit)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise PayloadTooLarge(f"request body is larger than {limit} bytes", limit=limit)
    except ClientDisconnect as exc:
        raise ClientGone("the client left before sending its whole request body") from exc
    return bytes(body)


async def read_json(request: Request) -> Any:
    """The request body as JSON (``read_body``'s limit)."""
    body = await read_body(request)
    if not body:
        raise BadRequest("request body is empty; send a JSON object", field="body")
    return parse_json(body)


class StreamStart(NamedTuple):
    job: Job
    from_index: int | None  # None: the reader is already past the complete event
    credential: Credential


async def stream_start(conn: HTTPConnection, last_event_id: str | None = None) -> StreamStart:
    """Authenticate, resolve the job (404 if not the caller's) and the reader's start.

    The shared prelude of every streaming transport. The node's stream-start rate
    (``Overloaded``: 503 / close 1013) is checked first, before any database read, so a
    refused start costs next to nothing.
    """
    res = resources(conn)
    res.streams.start_rate.take()
    job_id = conn.path_params["job_id"]
    credential = await res.auth.reader(conn, job_id)
    job = await res.storage.jobs.get_job(credential.user_id, job_id)
    params = conn.query_params
    from_index = start_index(job, params.get("from_index"), params.get("tail"), last_event_id)
    return StreamStart(job, from_index, credential)
