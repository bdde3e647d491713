"""``create_app(settings)``: lifespan, routes, error handlers, static files.

The lifespan runs the background tasks: the cross-node watch, retention, and the
credential re-check that ends streams of revoked keys and deactivated users.
The outermost middleware, ``logs.RequestLog``, writes one line per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from ..core import changes as feed
from ..core import retention
from ..core.errors import StreamerError, Unavailable
from ..core.hub import Hub
from ..core.models import Event
from ..core.ports import Storage
from ..storage import open_storage
from . import access_log, api, memory, metrics, openapi
from .durable import routes as durable
from .requests import json_response, problem
from .resources import Resources, resources
from .security import ApiCORS, SecurityMiddleware, install_log_filter, redact_path
from .settings import Settings
from .transports import changes, multi, multi_ws, sse, textlog, ws

log = logging.getLogger("streamer")
STATIC = Path(__file__).parent.parent / "static"


async def on_streamer_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StreamerError)
    return problem(exc)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error = StreamerError(exc.detail)
    error.status, error.title = exc.status_code, exc.detail
    error.headers.update(exc.headers or {})
    return problem(error)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, redact_path(request.url.path))
    return problem(StreamerError("internal error; the request may not have been applied"))


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    try:
        await resources(request).storage.ping()
    except Unavailable as exc:
        return problem(exc)
    return json_response({"status": "ready"})


async def recheck_credentials(res: Resources) -> None:
    """Every ``auth_recheck_seconds``, end the open streams whose key is no longer valid.

    It reads the database, so a ``keys revoke`` or ``users deactivate`` run anywhere
    (another node, the CLI) reaches the streams of every node within one period.
    """
    while True:
        await asyncio.sleep(res.settings.auth_recheck_seconds)
        try:
            closed = await res.streams.close_revoked()
        except StreamerError as exc:  # storage down: try again next period
            log.warning("credential re-check failed: %s", exc.detail)
            continue
        if closed:
            log.info("closed %d streams of revoked keys or deactivated users", closed)


HEALTH_DOCS = {
    "/healthz": openapi.Operation("the process is up", (200,), result="Status", auth=False),
    "/readyz": openapi.Operation("storage is reachable", (200, 503), result="Status", auth=False),
    "/metrics": openapi.Operation(
        "Prometheus metrics (text format)", (200,), media="text/plain", auth=False
    ),
}
OPENAPI_DOC = openapi.Operation(
    "this document (OpenAPI 3.1)", (200,), media="application/json", auth=False
)
STREAM_DOCS = {
    "/jobs/changes": {"GET": changes.DOC},
    "/jobs/changes/ws": {"GET": changes.WS_DOC},
    "/streams/events": {"GET": multi.DOC},
    "/streams/events/ws": {"GET": multi_ws.DOC},
    "/jobs/{job_id}/events/stream": {"GET": sse.DOC},
    "/jobs/{job_id}/events/ws": {"GET": ws.DOC},
    "/jobs/{job_id}/log": {"GET": textlog.DOC},
    "/openapi.json": {"GET": OPENAPI_DOC},
}


def openapi_document() -> dict[str, object]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("streamer")
    except PackageNotFoundError:
        release = "0"
    operations = [
        *openapi.prefixed("", {path: {"GET": op} for path, op in HEALTH_DOCS.items()}),
        *openapi.prefixed("/api/v1", api.DOCS),
        *openapi.prefixed("/api/v1", STREAM_DOCS),
        *openapi.prefixed("", durable.DOCS),
    ]
    return openapi.document(operations, release)


def create_app(settings: Settings, storage: Storage | None = None) -> Starlette:
    """A fresh app with its own storage, hub and background tasks (in the lifespan).

    ``storage``: an unopened storage to use instead of the one ``settings.db`` names
    (tests wrap one to pause reads at chosen moments).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Now: uvicorn has configured its loggers by this point.
        access_log.configure(settings.log_format)
        install_log_filter()
        store = storage or open_storage(
            settings.db_url,
            sync=settings.sync,
            pg_pool_size=settings.pg_pool_size,
            policy=settings.change_policy,
        )
        hub = Hub(
            settings.subscriber_buffer,
            settings.keepalive_seconds,
            max_bytes=settings.live_buffer_bytes,
            tick_every=min(settings.keepalive_seconds, settings.send_timeout_seconds) / 3,
        )
        await store.open()
        res = Resources.build(settings, store, hub)
        app.state.resources = res
        app.state.metrics = metrics.registry_for(res)

        def publish(key: str, entries: Sequence[Event]) -> None:
            """Jobs' events and feeds' changes alike; the changes counted apart."""
            if feed.feed_user(key) is not None:
                res.changes_published += len(entries)
            hub.publish(key, entries)

        store.on_commit = publish  # before the first request, so before any commit

        async def feed_hub() -> None:
            async for job_id, events in store.watch():
                publish(job_id, events)

        tasks = [
            asyncio.create_task(feed_hub(), name="streamer-watch"),
            asyncio.create_task(recheck_credentials(res), name="streamer-auth-recheck"),
            asyncio.create_task(hub.run_ticker(), name="streamer-ticker"),
            asyncio.create_task(
                feed.run_growth_sweep(store.changes, settings.change_policy),
                name="streamer-growth-sweep",
            ),
            asyncio.create_task(
                memory.trim_periodically(settings.memory_trim_seconds), name="streamer-trim"
            ),
        ]
        if settings.retention:
            age = retention.parse_duration(settings.retention)
            tasks.append(asyncio.create_task(retention.run_periodically(store.jobs, age)))
        try:
            yield
        finally:
            res.streams.close_streams("shutdown")
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await store.close()

    document = json_response(openapi_document()).body

    async def openapi_json(request: Request) -> Response:
        return Response(document, media_type="application/json")

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics.metrics),
        Mount(
            "/api/v1",
            routes=[
                Route("/jobs/changes", changes.changes_stream),  # before /jobs/{job_id}
                WebSocketRoute("/jobs/changes/ws", changes.changes_ws),
                Route("/streams/events", multi.streams_events),
                WebSocketRoute("/streams/events/ws", multi_ws.streams_ws),
                *api.routes,
                Route("/jobs/{job_id}/events/stream", sse.events_stream),
                WebSocketRoute("/jobs/{job_id}/events/ws", ws.events_ws),
                Route("/jobs/{job_id}/log", textlog.job_log),
                Route("/openapi.json", openapi_json),
            ],
        ),
        Route("/v1/stream/{path:path}", durable.stream, methods=list(durable.HANDLERS)),
    ]
    if STATIC.is_dir():
        routes.append(Mount("/", StaticFiles(directory=STATIC, html=True), name="static"))
    middleware = [
        Middleware(access_log.RequestLog),
        Middleware(SecurityMiddleware),
    ]
    if settings.cors_allowlist:
        middleware.append(Middleware(ApiCORS, origins=settings.cors_allowlist))
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            StreamerError: on_streamer_error,
            HTTPException: on_http_error,
            Exception: on_unexpected,
        },
    )
