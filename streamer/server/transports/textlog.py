"""The plain-text log: the ``data`` of each event, raw, for ``curl -N`` and scripts.

Without ``follow=true`` it sends what is stored and ends; with it, it streams
through ``follow()`` like the other transports until the job completes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from ...core.errors import BadRequest
from ...core.follow import Follow
from ..openapi import Operation
from ..requests import stream_start
from ..resources import Resources, resources

DOC = Operation(
    "the log as plain text (the data of each event); follow=true streams until complete",
    (200, 400, 404, 416, 429, 503),
    ("job_id", "follow", "from_index", "tail", "token"),
    media="text/plain",
    streaming=True,
)

TRUE = {"1", "true", "yes", "on"}
FALSE = {"", "0", "false", "no", "off"}


async def _text(follow: Follow) -> AsyncIterator[bytes]:
    async for batch in follow.batches():
        chunk = b"".join(
            data.encode() for e in batch if (data := orjson.loads(e.line)["data"]) is not None
        )
        if chunk:
            yield chunk


class TextLogResponse(StreamingResponse):
    """The text of a ``Follow``, registered for as long as the response runs (so its
    stream slot is released even when the client leaves before the first byte)."""

    def __init__(self, res: Resources, follow: Follow, headers: dict[str, str]) -> None:
        super().__init__(_text(follow), media_type="text/plain; charset=utf-8", headers=headers)
        self.res = res
        self.follow = follow

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with self.res.streams.registered(self.follow):
            await super().__call__(scope, receive, send)


async def job_log(request: Request) -> Response:
    job, from_index, credential = await stream_start(request)  # 401 before 400
    raw = request.query_params.get("follow", "").lower()
    if raw not in TRUE | FALSE:
        raise BadRequest("follow must be true or false", field="follow")
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    if from_index is None:
        return Response(b"", media_type="text/plain; charset=utf-8", headers=headers)
    res = resources(request)
    follow = res.streams.open(job, from_index, "text", credential, live=raw in TRUE)
    return TextLogResponse(res, follow, headers)
