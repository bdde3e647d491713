"""The Durable Streams routes: ``/v1/stream/{path}`` on the service's own port.

One endpoint per method, the same functions on the lean path (``server/lean.py``)
and in the Starlette app. What they decide is ``core.durable``'s (writes, inside
one transaction) and ``core.messages``' (bodies and offsets); here are the
protocol's headers, auth (``access``) and the reads (``reads``, ``sse``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from ...core import durable, forks, producers
from ...core.durable import AppendRequest, View
from ...core.errors import BadRequest, Conflict, Gone, MethodNotAllowed
from ...core.messages import essence, offset, parse_offset, to_events
from ..openapi import Operation
from ..requests import read_body
from ..resources import Resources, resources
from . import headers as h
from .access import caller, close_readers, find, parse_path, touch
from .reads import ReadSpec, open_read, read_response
from .sse import open_sse

LIVE_MODES = ("long-poll", "sse")


def _events(res: Resources, body: bytes, content_type: str, *, create: bool) -> list[object]:
    settings = res.settings
    return to_events(  # type: ignore[return-value]
        body,
        content_type,
        max_message_bytes=settings.max_event_bytes,
        max_messages=settings.max_batch_events,
        empty_array=create,
    )


async def create_stream(request: Request) -> Response:
    res = resources(request)
    access = await caller(request, res, read=False)
    path = parse_path(request.path_params["path"])
    content_type = h.content_type(request)
    ttl = durable.parse_ttl(h.header(request, "stream-ttl"))
    expires = durable.parse_expires(h.header(request, "stream-expires-at"))
    durable.expiry_headers(ttl, expires)
    closed = durable.is_true(h.header(request, "stream-closed"))
    fork = h.fork_request(request)
    body = await read_body(request)
    plan = None
    if fork is not None:
        try:
            source = await find(res, access, fork.source)
        except Gone as exc:
            raise Conflict("the source stream was deleted", field="Stream-Forked-From") from exc
        if source.stream is None:
            raise Conflict(
                "only streams created through /v1/stream can be forked",
                field="Stream-Forked-From",
            )
        config = durable.fork_config(source, content_type, ttl, expires, closed, fork)
        plan = await forks.plan(source, fork, res.streams.reader)
    else:
        config = durable.new_config(content_type, ttl, expires, closed)
    events = _events(res, body, config.content_type, create=True) if body else []
    created, view = await res.storage.streams.create(
        access.credential.user_id,
        path,
        config,
        plan,
        fork.source if fork is not None else None,
        events,  # type: ignore[arg-type]
        res.settings.max_job_bytes,
    )
    headers = {
        **h.base(request, res.settings.cors_allowlist),
        "Content-Type": view.content_type,
        "Stream-Next-Offset": offset(view.tail),
        "Streamer-Job-Id": view.job.id,
    }
    if view.closed:
        headers["Stream-Closed"] = "true"
    if created:
        headers["Location"] = str(request.url.replace(query=""))
    return Response(status_code=201 if created else 200, headers=headers)


async def append(request: Request) -> Response:
    began = time.perf_counter()
    res = resources(request)
    access = await caller(request, res, read=False)
    view = await find(res, access, parse_path(request.path_params["path"]))
    if view.stream is None:
        raise MethodNotAllowed("a job created through /api/v1 takes its appends there")
    claim = producers.parse_claim(*(h.header(request, name) for name in producers.HEADERS))
    close = durable.is_true(h.header(request, "stream-closed"))
    body = await read_body(request)
    content_type = None
    events: list[object] | None = []
    if body:
        content_type = h.content_type(request)
        if content_type is None:
            raise BadRequest("an append with a body needs a Content-Type", field="Content-Type")
        events = None
        if essence(content_type) == essence(view.content_type):
            events = _events(res, body, view.content_type, create=False)
    elif not close:
        raise BadRequest("an empty body appends nothing (Stream-Closed: true closes)", field="body")
    res.append_rate.take(access.credential.key_id, max(1, len(events or ())))
    request_ = AppendRequest(
        events,  # type: ignore[arg-type]
        close,
        h.header(request, "stream-seq"),
        claim,
        content_type,
    )
    outcome = await res.storage.streams.append(
        access.credential.user_id, view.job.id, request_, res.settings.max_job_bytes
    )
    res.append_latency.observe(time.perf_counter() - began)
    headers = {
        **h.base(request, res.settings.cors_allowlist),
        **outcome.headers,
        "Stream-Next-Offset": offset(outcome.next_index),
    }
    return Response(status_code=outcome.status, headers=headers)


def metadata(request: Request, res: Resources, view: View) -> Response:
    """``HEAD``: where the stream ends, its configuration, whether it is closed."""
    headers = {
        **h.base(request, res.settings.cors_allowlist),
        "Content-Type": view.content_type,
        "Stream-Next-Offset": offset(view.tail),
        "Cache-Control": "no-store",
        "Streamer-Job-Id": view.job.id,
    }
    stream = view.stream
    if stream is not None and stream.ttl is not None:
        headers["Stream-TTL"] = str(stream.ttl)
    if stream is not None and stream.expires_at is not None:
        headers["Stream-Expires-At"] = stream.expires_at
    if view.closed:
        headers["Stream-Closed"] = "true"
    return Response(status_code=200, headers=headers)


async def read(request: Request) -> Response:
    res = resources(request)
    access = await caller(request, res, read=True)
    view = await find(res, access, parse_path(request.path_params["path"]))
    if request.method == "HEAD":
        return metadata(request, res, view)
    params = request.query_params
    given = params.getlist("offset")
    live = params.get("live")
    if len(given) > 1:
        raise BadRequest("give one offset", field="offset")
    if live is not None and live not in LIVE_MODES:
        raise BadRequest("live must be long-poll or sse", field="live")
    raw = given[0] if given else None
    if raw is None and live is not None:
        raise BadRequest(f"live={live} needs an offset (-1 for the start)", field="offset")
    if raw == "now":
        start = view.tail
    elif raw is None or raw == "-1":
        start = 0
    else:
        start = parse_offset(raw)
    if start > view.tail:
        raise BadRequest("offset is past the stream's tail", field="offset")
    await touch(res, view)
    extra = h.base(request, res.settings.cors_allowlist)
    client_cursor = params.get("cursor")
    if live == "sse":
        return open_sse(request, res, access.credential, view, start, client_cursor, extra)
    spec = ReadSpec(
        view,
        start,
        live == "long-poll",
        raw == "now",
        client_cursor,
        request.headers.get("if-none-match"),
        res.settings.ds_read_bytes,
        extra,
    )
    if start == view.tail and (view.closed or not spec.live):
        return read_response(spec, [], settled=True)  # at the end: nothing to read or wait for
    return await open_read(request, res, access.credential, spec)


async def delete(request: Request) -> Response:
    res = resources(request)
    access = await caller(request, res, read=False)
    view = await find(res, access, parse_path(request.path_params["path"]))
    user_id = access.credential.user_id
    if view.stream is None:
        await res.storage.jobs.delete_job(user_id, view.job.id)
        removed = [view.job.id]
    else:
        _, removed = await res.storage.streams.delete(user_id, view.job.id)
    close_readers(res, [view.job.id, *removed])
    return Response(status_code=204, headers=h.base(request, res.settings.cors_allowlist))


async def options(request: Request) -> Response:
    return h.preflight(request, resources(request).settings.cors_allowlist)


HANDLERS: dict[str, Callable[[Request], Awaitable[Response]]] = {
    "PUT": create_stream,
    "POST": append,
    "GET": read,
    "HEAD": read,
    "DELETE": delete,
    "OPTIONS": options,
}


async def stream(request: Request) -> Response:
    """Every method of ``/v1/stream/{path}``."""
    return await HANDLERS[request.method](request)


PATH = ("path",)
DOCS: dict[str, dict[str, Operation]] = {
    "/v1/stream/{path}": {
        "PUT": Operation(
            "Durable Streams: create a stream (idempotent), or fork one (Stream-Forked-From)",
            (200, 201, 400, 404, 409, 413, 422),
            PATH,
            media="application/octet-stream",
        ),
        "POST": Operation(
            "Durable Streams: append (JSON arrays flatten), close (Stream-Closed), "
            "idempotent producers (Producer-Id/-Epoch/-Seq)",
            (200, 204, 400, 403, 404, 405, 409, 410, 413, 429),
            PATH,
            media="application/octet-stream",
        ),
        "GET": Operation(
            "Durable Streams: catch-up read from offset; live=long-poll or live=sse; HEAD: "
            "the tail offset, configuration and closure",
            (200, 204, 304, 400, 404, 410, 429),
            (*PATH, "offset", "live", "cursor", "token"),
            media="application/octet-stream",
            streaming=True,
        ),
        "DELETE": Operation(
            "Durable Streams: delete a stream (kept, as 410, while forks read it)",
            (204, 404, 409, 410),
            PATH,
        ),
        "OPTIONS": Operation("Durable Streams: CORS preflight", (204,), PATH, auth=False),
    }
}
