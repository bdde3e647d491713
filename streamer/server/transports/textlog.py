"""The plain-text log: the ``data`` of each event, raw, for ``curl -N`` and scripts.

Without ``follow=true`` it sends what is stored and ends; with it, it streams
through ``follow()`` like the other transports until the job completes.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ...core.errors import BadRequest
from ..http.messages import Headers
from ..openapi import Operation
from ..requests import stream_start
from ..resources import resources
from . import frames
from .streaming import Framing, open_stream

DOC = Operation(
    "the log as plain text (the data of each event); follow=true streams until complete",
    (200, 400, 404, 416, 429, 503),
    ("job_id", "follow", "from_index", "tail", "token"),
    media="text/plain",
    streaming=True,
)

TRUE = {"1", "true", "yes", "on"}
FALSE = {"", "0", "false", "no", "off"}
HEADERS: Headers = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
FRAMING = Framing(frames.text, frames.text_chunk)


async def job_log(request: Request) -> Response:
    job, from_index, credential = await stream_start(request)  # 401 before 400
    raw = request.query_params.get("follow", "").lower()
    if raw not in TRUE | FALSE:
        raise BadRequest("follow must be true or false", field="follow")
    if from_index is None:
        return Response(b"", headers={k.decode(): v.decode() for k, v in HEADERS})
    return open_stream(
        request,
        resources(request),
        job,
        from_index,
        credential,
        "text",
        FRAMING,
        HEADERS,
        live=raw in TRUE,
    )
