"""``create_app(settings)``: lifespan, routes, error handlers, static files."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from . import api, metrics, retention, sse, textlog, ws
from .config import Settings
from .context import Context, context, json_response
from .errors import StreamerError, Unavailable
from .follow import FollowHooks
from .hub import Hub
from .storage import open_storage

log = logging.getLogger("streamer")
STATIC = Path(__file__).parent / "static"


def problem(error: StreamerError) -> Response:
    return Response(
        json_response(error.problem()).body,
        error.status,
        headers=error.headers,
        media_type="application/problem+json",
    )


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
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(StreamerError("internal error; the request may not have been applied"))


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    try:
        await context(request).storage.ping()
    except Unavailable as exc:
        return problem(exc)
    return json_response({"status": "ready"})


def create_app(settings: Settings, hooks: FollowHooks | None = None) -> Starlette:
    """A fresh app with its own storage, hub and watch task (opened in the lifespan)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        storage = open_storage(settings.db_url, settings)
        hub = Hub(settings.subscriber_buffer)
        storage.on_commit = hub.publish
        await storage.open()
        ctx = Context(settings, storage, hub, hooks or FollowHooks())
        app.state.ctx = ctx
        app.state.metrics = metrics.registry_for(ctx)

        async def feed_hub() -> None:
            async for job_id, events in storage.watch():
                hub.publish(job_id, events)

        tasks = [asyncio.create_task(feed_hub(), name="streamer-watch")]
        if settings.retention:
            age = retention.parse_duration(settings.retention)
            tasks.append(asyncio.create_task(retention.run_periodically(storage, age)))
        try:
            yield
        finally:
            ctx.close_streams("shutdown")
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await storage.close()

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics.metrics),
        Mount(
            "/api/v1",
            routes=[
                *api.routes,
                Route("/jobs/{job_id}/events/stream", sse.events_stream),
                WebSocketRoute("/jobs/{job_id}/events/ws", ws.events_ws),
                Route("/jobs/{job_id}/log", textlog.job_log),
            ],
        ),
    ]
    if STATIC.is_dir():
        routes.append(Mount("/", StaticFiles(directory=STATIC, html=True), name="static"))
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            StreamerError: on_streamer_error,
            HTTPException: on_http_error,
            Exception: on_unexpected,
        },
    )
