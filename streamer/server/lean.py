"""The lean path: the hot routes answered straight from the connection.

Appending events, SSE, the text log and WebSocket streams are what clients do all
the time, so the service's own server (``http/``) answers them without the
framework's routing, middleware and request/response cycles: it matches the path
here, calls the route's own handler (the same function the framework calls, so
every rule, limit, error and metric is the one implementation), and writes the
answer itself. Streams then continue with no coroutine of their own.

What the middleware does for the other routes is done here the same way: the
security and CORS headers (``security.api_headers``), one access-log line when
the answer is done (``access_log.log_request``), problem+json for errors (a
``StreamerError`` is its status; anything else a 500, logged once). Every other
request goes to the Starlette app through ``http/asgi.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from ..core.errors import NotFound, StreamerError
from . import access_log, api
from .durable import routes as durable
from .http.asgi import http_scope, run_asgi
from .http.messages import Request as HTTPRequest
from .http.protocol import HTTPProtocol
from .requests import problem
from .security import api_headers, redact_path
from .settings import Settings
from .transports import changes, multi, multi_ws, sse, textlog, ws
from .transports.streaming import LEAN_KEY, Answered, Lean, answer

log = logging.getLogger("streamer")
Endpoint = Callable[[Request], Awaitable[Response]]
WSEndpoint = Callable[[MutableMapping[str, Any], HTTPProtocol], Awaitable[None]]
WS = "WS"  # the method of an upgrade request, in the route table

ROUTES: list[tuple[str, str, Endpoint | WSEndpoint]] = [
    ("POST", "/api/v1/jobs/{job_id}/events", api.append_events),
    ("GET", "/api/v1/jobs/{job_id}/events/stream", sse.events_stream),
    ("GET", "/api/v1/jobs/{job_id}/log", textlog.job_log),
    (WS, "/api/v1/jobs/{job_id}/events/ws", ws.events_ws_lean),
    ("GET", "/api/v1/jobs/changes", changes.changes_stream),
    (WS, "/api/v1/jobs/changes/ws", changes.changes_ws_lean),
    ("GET", "/api/v1/streams/events", multi.streams_events),
    (WS, "/api/v1/streams/events/ws", multi_ws.streams_ws_lean),
    *[(method, "/v1/stream/{path:path}", durable.stream) for method in durable.HANDLERS],
]


class Router:
    """Paths split on ``/``; a ``{name}`` part matches one non-empty segment, and a
    last ``{name:path}`` part the non-empty rest of the path (``/`` included)."""

    def __init__(self, routes: list[tuple[str, str, Any]]) -> None:
        self.routes = [(method, path.split("/"), endpoint) for method, path, endpoint in routes]

    def match(self, method: str, path: str) -> tuple[Any, dict[str, str]] | None:
        parts = path.split("/")
        for route_method, pattern, endpoint in self.routes:
            if route_method != method:
                continue
            rest = pattern[-1].endswith(":path}")
            if len(pattern) != len(parts) and not (rest and len(parts) > len(pattern)):
                continue
            params: dict[str, str] = {}
            for i, want in enumerate(pattern):
                got = "/".join(parts[i:]) if rest and i == len(pattern) - 1 else parts[i]
                if want.startswith("{"):
                    if not got:
                        break
                    params[want[1:-1].partition(":")[0]] = got
                elif want != got:
                    break
            else:
                return endpoint, params
        return None


class Dispatcher:
    """``http.Server``'s dispatch: the lean routes here, the rest to the app."""

    def __init__(self, app: Starlette, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.router = Router(ROUTES)
        self.cors = settings.cors_allowlist
        self.plain_headers = api_headers(None, [])  # the same list for every request

    async def __call__(self, conn: HTTPProtocol, request: HTTPRequest) -> None:
        method = WS if request.upgrade else request.method
        found = self.router.match(method, request.path)
        if found is None:
            if request.upgrade:  # answered like any missing route, then the connection ends
                request.keep_alive = False
                answer(conn, problem(NotFound("no WebSocket at this path")), self.plain_headers)
                return
            await run_asgi(self.app, conn, request, http_scope(conn, request))
            return
        endpoint, params = found
        began, sent = time.perf_counter(), conn.sent
        scope = http_scope(conn, request, "websocket" if request.upgrade else "http")
        headers = (
            api_headers(request.header(b"origin"), self.cors) if self.cors else self.plain_headers
        )
        scope["app"] = self.app
        scope["path_params"] = params
        scope["extensions"][LEAN_KEY] = Lean(conn, headers)

        def logged() -> None:
            access_log.log_request(
                scope, conn.status, conn.sent - sent, time.perf_counter() - began
            )

        conn.on_done = logged  # when the answer (or the stream, or the socket) is over
        if request.upgrade:
            await endpoint(scope, conn)
            return
        response = await self._answer(endpoint, scope, request)
        if not isinstance(response, Answered):
            answer(conn, response, headers)

    async def _answer(
        self, endpoint: Endpoint, scope: MutableMapping[str, Any], request: HTTPRequest
    ) -> Response:
        body = bytes(request.body)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        starlette_request = Request(scope, receive)
        starlette_request._body = body  # already whole: no receive() round trip
        try:
            return await endpoint(starlette_request)
        except StreamerError as exc:
            return problem(exc)
        except Exception:  # noqa: BLE001 - one request's bug is a 500 for it alone
            log.exception("unhandled error on %s %s", request.method, redact_path(request.path))
            return problem(StreamerError("internal error; the request may not have been applied"))
