"""Server-Sent Events over ``follow()``.

A plain ASGI response rather than sse-starlette: it writes the bytes each event
cached once for every reader (``frames.sse_message``), coalesces a batch into one write, and
needs one helper task per connection (to notice the client leaving) instead of
three. ``Last-Event-ID`` (which browsers send on reconnect) wins over
``from_index``; a reader already past ``complete`` gets 204, which makes
``EventSource`` stop reconnecting. The stream is counted against its user's limit
before the response starts (so the one too many is a 429), and released however
the response ends.
"""

from __future__ import annotations

import asyncio
import logging
import random

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ...core.errors import StreamerError
from ...core.follow import Follow
from ..fastpath.frames import sse_message
from ..fastpath.sinks import direct_for
from ..openapi import Operation
from ..requests import stream_start
from ..resources import Resources, resources

DOC = Operation(
    "Server-Sent Events: stored events from from_index, then live, until complete",
    (200, 204, 400, 404, 416, 429, 503),
    ("job_id", "from_index", "tail", "token", "Last-Event-ID"),
    media="text/event-stream",
    streaming=True,
)

log = logging.getLogger("streamer")
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class SSEResponse(Response):
    def __init__(self, res: Resources, follow: Follow) -> None:
        self.res = res
        self.follow = follow
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        follow, timeout = self.follow, self.res.settings.send_timeout_seconds
        direct = follow.direct = direct_for(scope, "sse")

        async def write(chunk: bytes) -> None:
            """Straight to the socket when it can take it now (no timer needed: it does
            not wait); otherwise the awaited ASGI send, bounded by the send timeout."""
            if direct is not None and direct.send_bytes(chunk):
                return
            async with asyncio.timeout(timeout):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            follow.close("disconnect")

        with self.res.streams.registered(follow):
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            # The sink hears of a lost connection from the protocol itself; without
            # one, a task waits on receive() for the disconnect.
            lost = direct is not None and direct.sink.on_lost(lambda: follow.close("disconnect"))
            watcher = None if lost else asyncio.create_task(watch_disconnect())
            try:
                # A first byte at once: proxies and clients see a live stream, and a
                # jittered retry spreads a reconnect storm over a few seconds.
                retry = random.randint(1000, 3000)  # noqa: S311 - jitter, not a secret
                await write(
                    b"retry: %d\n: connected next_index=%d\n\n" % (retry, follow.next_index)
                )
                async for batch in follow.batches():
                    if batch:
                        if direct is None or not direct.send_events(batch):
                            await write(b"".join([sse_message(e) for e in batch]))
                    else:
                        await write(b": keepalive next_index=%d\n\n" % follow.next_index)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except TimeoutError:
                follow.close("send_timeout")  # it stopped reading; resumes with Last-Event-ID
            except StreamerError as exc:  # storage failed mid-stream (database down, pool dry)
                log.warning("ending an SSE stream of job %s: %s", follow.job_id, exc.detail)
                follow.close("storage_error")  # the client's retry resumes with Last-Event-ID
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:
                follow.close("disconnect")
            finally:
                if watcher is not None:
                    watcher.cancel()


async def events_stream(request: Request) -> Response:
    job, from_index, credential = await stream_start(request, request.headers.get("last-event-id"))
    if from_index is None:
        return Response(status_code=204)
    res = resources(request)
    return SSEResponse(res, res.streams.open(job, from_index, "sse", credential))
