"""The plain-text log: the ``data`` of each event, raw, for ``curl -N`` and scripts.

Without ``follow=true`` it sends what is stored and ends; with it, it streams
through ``follow()`` like the other transports until the job completes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from .context import context, stream_start
from .errors import BadRequest
from .follow import Follow

TRUE = {"1", "true", "yes", "on"}
FALSE = {"", "0", "false", "no", "off"}


async def _text(follow: Follow) -> AsyncIterator[bytes]:
    async for batch in follow.batches():
        chunk = b"".join(
            data.encode() for e in batch if (data := orjson.loads(e.line)["data"]) is not None
        )
        if chunk:
            yield chunk


async def job_log(request: Request) -> Response:
    job, start = await stream_start(request)  # credentials first: 401 before any 400
    raw = request.query_params.get("follow", "").lower()
    if raw not in TRUE | FALSE:
        raise BadRequest("follow must be true or false", field="follow")
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    if start is None:
        return Response(b"", media_type="text/plain; charset=utf-8", headers=headers)
    ctx = context(request)
    follow = ctx.follow(job, start, "text", live=raw in TRUE)

    async def body() -> AsyncIterator[bytes]:
        with ctx.registered(follow):
            async for chunk in _text(follow):
                yield chunk

    return StreamingResponse(body(), media_type="text/plain; charset=utf-8", headers=headers)
