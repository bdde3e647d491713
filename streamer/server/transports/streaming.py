"""Starting a streamed response on either path, with one framing.

A streaming route (SSE, the text log, and the protocols built on them) does its
prelude (credentials, job, start position) once, then ``open_stream``:

- on the **lean path** (the service's own server, ``server/lean.py``) the response
  head goes out at once and the reader's events are written straight to the
  connection from the hub's flush (``ChunkedOutlet``): no coroutine while it
  waits, no framework in between;
- on the **ASGI path** (any ASGI server, e.g. uvicorn) the events queue in an
  ``Inbox`` that the response coroutine sends, each send bounded by the send
  timeout (``QueuedResponse``, which every queued stream shares).

Either way the stream is counted and tracked by the ``StreamRegistry`` before
anything is sent, so the one stream too many is still a 429.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from functools import partial

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ...core.follow import Follow, Inbox
from ...core.keys import Credential
from ...core.models import Event, Job
from ..http.messages import Headers
from ..http.protocol import HTTPProtocol
from ..resources import Resources

LEAN_KEY = "streamer.lean"  # scope["extensions"][LEAN_KEY]: the lean path's context


@dataclass(frozen=True)
class Lean:
    """What the lean dispatcher gives a route: its connection, and the headers every
    response of this request carries (security, CORS)."""

    conn: HTTPProtocol
    headers: Headers


def lean(scope: Scope) -> Lean | None:
    found: Lean | None = scope.get("extensions", {}).get(LEAN_KEY)
    return found


@dataclass(frozen=True)
class Framing:
    """How a transport writes events: as body bytes, as whole HTTP chunks (the lean
    path writes those straight to the socket), and its keepalive (or none)."""

    body: Callable[[Sequence[Event]], bytes]
    chunk: Callable[[Sequence[Event]], bytes]
    keepalive: Callable[[int], bytes] | None = None


def answer(conn: HTTPProtocol, response: Response, headers: Headers) -> None:
    """Write a framework ``Response`` (a whole body) on the lean path."""
    raw = [(k, v) for k, v in response.raw_headers if k != b"content-length"]
    conn.respond(response.status_code, [*raw, *headers], bytes(response.body))


class Answered(Response):
    """The lean path already answered (a stream started); nothing left to send."""

    def __init__(self) -> None:
        super().__init__(status_code=200)


class ChunkedOutlet:
    """A chunked response on the lean server, written from the hub's flush."""

    __slots__ = ("conn", "framing", "on_ready")

    def __init__(self, conn: HTTPProtocol, framing: Framing) -> None:
        self.conn = conn
        self.framing = framing
        self.on_ready: Callable[[], None] | None = None
        conn.on_drain.append(self._drained)

    def ready(self) -> bool:
        return self.conn.writable and not self.conn.closed

    def send(self, events: Sequence[Event]) -> None:
        self.conn.write(self.framing.chunk(events))

    def keepalive(self, next_index: int) -> None:
        if self.framing.keepalive is not None:
            self.conn.write_chunk(self.framing.keepalive(next_index))

    def finish(self, follow: Follow) -> None:
        self.conn.finish()

    async def drain(self) -> None:
        await self.conn.drain()

    def _drained(self) -> None:
        if self.on_ready is not None:
            self.on_ready()


class QueuedResponse(Response):
    """A streamed body on the ASGI path: ``chunks`` sent in order, each send bounded by
    the send timeout. A client that leaves, or stops reading, is reported once through
    ``gone`` (with ``disconnect`` or ``send_timeout``), which ends whatever was feeding
    the chunks. Every queued stream (a job's log, the protocol's SSE, the change feed,
    multi-job streams) is sent by this one class."""

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        gone: Callable[[str], None],
        headers: Headers,
        preamble: bytes,
        send_timeout: float,
    ) -> None:
        self.chunks = chunks
        self.gone = gone
        self.stream_headers = headers
        self.preamble = preamble
        self.send_timeout = send_timeout
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = self.gone

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone("disconnect")

        watcher = asyncio.create_task(watch_disconnect())
        try:
            await send(
                {"type": "http.response.start", "status": 200, "headers": self.stream_headers}
            )
            await self._send(send, self.preamble)
            async for chunk in self.chunks:
                await self._send(send, chunk)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:
            gone("send_timeout")  # it stopped reading; it resumes from its position
        except OSError:
            gone("disconnect")
        finally:
            watcher.cancel()
            gone("disconnect")  # a no-op once it has gone

    async def _send(self, send: Send, data: bytes) -> None:
        if data:
            async with asyncio.timeout(self.send_timeout):
                await send({"type": "http.response.body", "body": data, "more_body": True})


async def framed(inbox: Inbox, framing: Framing) -> AsyncIterator[bytes]:
    """An inbox's batches and keepalives as body bytes."""
    async for item in inbox.items():
        if isinstance(item, list):
            yield framing.body(item)
        elif framing.keepalive is not None:
            yield framing.keepalive(item)


def open_stream(
    request: Request,
    res: Resources,
    job: Job,
    from_index: int,
    credential: Credential,
    transport: str,
    framing: Framing,
    headers: Headers,
    *,
    preamble: bytes = b"",
    live: bool = True,
) -> Response:
    """Start streaming ``job`` from ``from_index`` to this request's client."""
    context = lean(request.scope)
    if context is not None:
        conn = context.conn
        follow = res.streams.open(
            job, from_index, transport, credential, ChunkedOutlet(conn, framing), live=live
        )
        conn.on_lost.append(partial(follow.close, "disconnect"))
        conn.start(200, [*headers, *context.headers], chunked=True)
        if preamble:
            conn.write_chunk(preamble)
        return Answered()
    inbox = Inbox(res.settings.stream_buffer_bytes)
    follow = res.streams.open(job, from_index, transport, credential, inbox, live=live)
    return QueuedResponse(
        framed(inbox, framing), follow.close, headers, preamble, res.settings.send_timeout_seconds
    )
