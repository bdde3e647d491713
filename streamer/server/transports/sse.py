"""Server-Sent Events over ``follow()``.

``Last-Event-ID`` (which browsers send on reconnect) wins over ``from_index``; a
reader already past ``complete`` gets 204, which makes ``EventSource`` stop
reconnecting. The first bytes go out at once (proxies and clients see a live
stream), with a jittered ``retry`` so a reconnect storm spreads over a few seconds.
Each event's SSE message (and its HTTP chunk) is built once for every reader.
"""

from __future__ import annotations

import random

from starlette.requests import Request
from starlette.responses import Response

from ..openapi import Operation
from ..requests import stream_start
from ..resources import resources
from . import frames
from .streaming import Framing, open_stream

DOC = Operation(
    "Server-Sent Events: stored events from from_index, then live, until complete",
    (200, 204, 400, 404, 416, 429, 503),
    ("job_id", "from_index", "tail", "token", "Last-Event-ID"),
    media="text/event-stream",
    streaming=True,
)
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
FRAMING = Framing(frames.sse, frames.sse_chunk, frames.sse_keepalive)


async def events_stream(request: Request) -> Response:
    job, from_index, credential = await stream_start(request, request.headers.get("last-event-id"))
    if from_index is None:
        return Response(status_code=204)
    retry = random.randint(1000, 3000)  # noqa: S311 - jitter, not a secret
    return open_stream(
        request,
        resources(request),
        job,
        from_index,
        credential,
        "sse",
        FRAMING,
        HEADERS,
        preamble=frames.sse_preamble(from_index, retry),
    )
