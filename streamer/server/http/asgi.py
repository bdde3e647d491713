"""Running a request through an ASGI application, on an ``HTTPProtocol`` connection.

Everything that is not one of the lean routes (the JSON API, the dashboard's files,
health, metrics, OpenAPI) is answered by the Starlette app with its middleware, as
any ASGI server would run it: the body is already whole (the protocol bounds it),
``receive`` then waits for the client to leave, and ``send`` writes the response,
chunked when the app streams without a length, waiting for the socket to drain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .messages import Headers, Request
from .protocol import HTTPProtocol

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


def http_scope(conn: HTTPProtocol, request: Request, scope_type: str = "http") -> Scope:
    """The ASGI scope of ``request`` (``state`` is where handlers leave notes, such as
    the user id for the access log)."""
    return {
        "type": scope_type,
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": request.version,
        "method": request.method,
        "scheme": "ws" if scope_type == "websocket" else "http",
        "path": request.path,
        "raw_path": request.target.split(b"?", 1)[0],
        "query_string": request.query,
        "root_path": "",
        "headers": request.headers,
        "client": conn.client,
        "server": conn.local,
        "state": {},
        "extensions": {},
    }


async def run_asgi(app: ASGIApp, conn: HTTPProtocol, request: Request, scope: Scope) -> int:
    """Answer ``request`` with ``app``; the status sent (0 if none), for the log."""
    body_sent = False
    status = 0
    expected: int | None = None  # a content length the app declared
    lost = asyncio.Event()
    conn.on_lost.append(lost.set)

    async def receive() -> Message:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": bytes(request.body), "more_body": False}
        await lost.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status, expected
        kind = message["type"]
        if conn.closed:  # the client left: what the app still sends goes nowhere
            return
        if kind == "http.response.start":
            status = int(message["status"])
            headers: Headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", [])]
            length = next((v for k, v in headers if k == b"content-length"), None)
            expected = int(length) if length is not None and length.isdigit() else None
            conn.start(status, headers, chunked=expected is None and _has_body(request, status))
        elif kind == "http.response.body":
            data = message.get("body", b"")
            more = message.get("more_body", False)
            if request.method != "HEAD":
                if conn.chunked:
                    conn.write_chunk(data)
                elif data:
                    conn.write(data)
            if more:
                if not conn.writable:
                    await conn.drain()
            else:
                conn.finish()

    try:
        await app(scope, receive, send)
    finally:
        if lost.set in conn.on_lost:
            conn.on_lost.remove(lost.set)
    if conn.active is request and not conn.closed:
        if not conn.head_done:
            conn.respond(500, [(b"content-type", b"text/plain")], b"no response\n")
            status = 500
        else:
            conn.close()  # the app stopped mid-body: the client must not wait for more
    return status


def _has_body(request: Request, status: int) -> bool:
    return request.method != "HEAD" and status >= 200 and status not in (204, 304)
