"""The JSON routes of ``/api/v1``: jobs, appends and pages of events.

Each route is declared with its OpenAPI ``Operation`` (``DOCS``), and ``_route``
refuses a method without one, so ``/api/v1/openapi.json`` always lists exactly what
is mounted.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..core import tokens
from ..core.cursor import check_not_ahead, parse_cursor
from ..core.errors import BadRequest
from ..core.models import JOB_ID, STATUSES, TIMESTAMP
from .openapi import Operation
from .parsing import parse_events, parse_job_patch, parse_new_job
from .requests import json_response, read_json
from .resources import resources

MAX_JOBS_PAGE = 200


def _param(request: Request, name: str) -> str | None:
    """A query parameter; present but empty is malformed (leave it out for the default)."""
    if not request.scope.get("query_string"):  # most appends have none: nothing to parse
        return None
    raw = request.query_params.get(name)
    if raw == "":
        raise BadRequest(f"{name} is empty: give a value or leave it out", field=name)
    return raw


def _limit(request: Request, default: int, maximum: int) -> int:
    limit = parse_cursor("limit", _param(request, "limit"))
    if limit is None:
        return default
    if limit < 1:
        raise BadRequest("limit must be at least 1", field="limit")
    return min(limit, maximum)


def _encode_cursor(created_at: str, job_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at}|{job_id}".encode()).decode()


def _decode_cursor(raw: str | None) -> tuple[str, str] | None:
    if raw is None:
        return None
    try:
        created_at, sep, job_id = base64.urlsafe_b64decode(raw.encode()).decode().partition("|")
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise BadRequest("cursor is not one this server issued", field="cursor") from exc
    if not (sep and TIMESTAMP.fullmatch(created_at) and JOB_ID.fullmatch(job_id)):
        raise BadRequest("cursor is not one this server issued", field="cursor")
    return created_at, job_id


async def create_job(request: Request) -> Response:
    res = resources(request)
    caller = await res.auth.caller(request)
    name, metadata = parse_new_job(await read_json(request))
    job = await res.storage.jobs.create_job(caller.user_id, name, metadata)
    return json_response(job.public(), 201, {"Location": f"/api/v1/jobs/{job.id}"})


async def list_jobs(request: Request) -> Response:
    res = resources(request)
    caller = await res.auth.caller(request)
    status = _param(request, "status")
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}", field="status")
    limit = _limit(request, 50, MAX_JOBS_PAGE)
    cursor = _decode_cursor(_param(request, "cursor"))
    jobs = await res.storage.jobs.list_jobs(caller.user_id, status, limit + 1, cursor)
    more = len(jobs) > limit
    jobs = jobs[:limit]
    next_cursor = _encode_cursor(jobs[-1].created_at, jobs[-1].id) if more else None
    return json_response({"jobs": [job.public() for job in jobs], "next_cursor": next_cursor})


async def get_job(request: Request) -> Response:
    res = resources(request)
    caller = await res.auth.caller(request)
    job = await res.storage.jobs.get_job(caller.user_id, request.path_params["job_id"])
    return json_response(job.public())


async def patch_job(request: Request) -> Response:
    res = resources(request)
    caller = await res.auth.caller(request)
    changes = parse_job_patch(await read_json(request))
    job = await res.storage.jobs.update_job(caller.user_id, request.path_params["job_id"], changes)
    return json_response(job.public())


async def claim_job(request: Request) -> Response:
    res = resources(request)
    caller = await res.auth.caller(request)
    job = await res.storage.jobs.claim_job(caller.user_id)
    if job is None:
        return Response(status_code=204)
    return json_response(job.public())


async def delete_job(request: Request) -> Response:
    res = resources(request)
    caller = await res.auth.caller(request)
    job_id = request.path_params["job_id"]
    await res.storage.jobs.delete_job(caller.user_id, job_id)
    res.hub.close_job(job_id, "deleted")
    return Response(status_code=204)


async def append_events(request: Request) -> Response:
    began = time.perf_counter()
    res = resources(request)
    caller = await res.auth.caller(request)
    settings = res.settings
    expected = parse_cursor("expected_index", _param(request, "expected_index"))
    events = parse_events(
        await read_json(request), settings.max_event_bytes, settings.max_batch_events
    )
    res.append_rate.take(caller.key_id, len(events))
    stored = await res.storage.jobs.append(
        caller.user_id,
        request.path_params["job_id"],
        events,
        expected,
        byte_limit=settings.max_job_bytes,
    )
    res.append_latency.observe(time.perf_counter() - began)  # acknowledged: committed
    return json_response({"first_index": stored[0].index, "last_index": stored[-1].index}, 201)


async def list_events(request: Request) -> Response:
    """A page of stored events, assembled from their stored JSON lines without re-encoding."""
    res = resources(request)
    caller = await res.auth.caller(request)
    job = await res.storage.jobs.get_job(caller.user_id, request.path_params["job_id"])
    start = parse_cursor("from_index", _param(request, "from_index")) or 0
    limit = _limit(request, res.settings.max_page_events, res.settings.max_page_events)
    check_not_ahead(job, start)
    events = await res.streams.reader.read_events(job.id, start, limit)  # a fork's too
    next_index = events[-1].index + 1 if events else start
    complete = bool(events and events[-1].is_complete) or (
        job.is_final and next_index >= job.event_count
    )
    body = b'{"events":[%s],"next_index":%d,"complete":%s}' % (
        b",".join(e.line for e in events),
        next_index,
        b"true" if complete else b"false",
    )
    return Response(body, media_type="application/json")


async def mint_stream_token(request: Request) -> Response:
    """A short-lived, read-only token for one job's streams, for browsers' URLs."""
    res = resources(request)
    caller = await res.auth.caller(request)
    job = await res.storage.jobs.get_job(caller.user_id, request.path_params["job_id"])
    secret = await res.storage.identity.server_secret(tokens.SECRET_NAME)
    token, expires_at = tokens.mint(secret, job.id, caller, res.settings.stream_token_seconds)
    return json_response({"token": token, "expires_at": expires_at}, 201)


Endpoint = Callable[[Request], Awaitable[Response]]


JOB = ("job_id",)
DOCS: dict[str, dict[str, Operation]] = {
    "/jobs": {
        "GET": Operation(
            "the caller's jobs, newest first",
            (200, 400),
            ("status", "limit", "cursor"),
            result="JobList",
        ),
        "POST": Operation("create a job", (201, 400, 413, 422), body="NewJob", result="Job"),
    },
    "/jobs/claim": {
        "POST": Operation(
            "atomically take the caller's oldest queued job (204: none)",
            (200, 204),
            result="Job",
        ),
    },
    "/jobs/{job_id}": {
        "GET": Operation("one job", (200, 404), JOB, result="Job"),
        "PATCH": Operation(
            "status transition and runner fields",
            (200, 400, 404, 409, 413, 422),
            JOB,
            body="JobPatch",
            result="Job",
        ),
        "DELETE": Operation("delete a job and its events", (204, 404), JOB),
    },
    "/jobs/{job_id}/events": {
        "GET": Operation(
            "a page of stored events",
            (200, 400, 404, 416),
            (*JOB, "from_index", "limit"),
            result="EventPage",
        ),
        "POST": Operation(
            "append one event or a batch",
            (201, 400, 404, 409, 413, 422, 429),
            (*JOB, "expected_index"),
            body="Append",
            result="Appended",
        ),
    },
    "/jobs/{job_id}/stream-tokens": {
        "POST": Operation(
            "mint a short-lived, read-only stream token for one job (for browsers' URLs)",
            (201, 404),
            JOB,
            result="StreamToken",
        ),
    },
}


def _route(path: str, **handlers: Endpoint) -> Route:
    """One route per path with every method it serves, so a 405 names them all in
    ``Allow`` (one ``Route`` per method made the first one's methods the whole list).

    Every method must be declared in ``DOCS``: the OpenAPI document cannot miss one.
    """
    missing = set(handlers) - set(DOCS.get(path, {}))
    if missing:
        raise RuntimeError(f"{path}: {sorted(missing)} have no OpenAPI Operation in DOCS")
    if "GET" in handlers:
        handlers["HEAD"] = handlers["GET"]
    return Route(path, _Methods(handlers), methods=list(handlers), name=path)


class _Methods:
    """A route's ASGI app: the handler for the request's method, then its response.

    Starlette wraps a plain ``endpoint(request)`` in ``request_response``, which adds
    a second layer of exception handling (and a ``send`` wrapper every message goes
    through) around each call. The app-level ``ExceptionMiddleware`` already turns
    the same exceptions into the same responses, with the same handlers, so this
    does without it: one wrapper less on every API request (``Route`` treats an
    object that is not a function as an ASGI app and still answers 405 itself).
    """

    __slots__ = ("handlers",)

    def __init__(self, handlers: dict[str, Endpoint]) -> None:
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.handlers[scope["method"]](Request(scope, receive, send))
        await response(scope, receive, send)


routes = [
    _route("/jobs", GET=list_jobs, POST=create_job),
    _route("/jobs/claim", POST=claim_job),
    _route("/jobs/{job_id}", GET=get_job, PATCH=patch_job, DELETE=delete_job),
    _route("/jobs/{job_id}/events", GET=list_events, POST=append_events),
    _route("/jobs/{job_id}/stream-tokens", POST=mint_stream_token),
]
