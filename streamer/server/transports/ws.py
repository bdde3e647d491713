"""WebSocket over ``follow()``: text frames of newline-separated event JSON.

Errors after the handshake are close codes (4401, 4404, 1008 ...) from the error
classes, so a client sees the same verdicts as over HTTP. The handshake is refused
outright (HTTP 403) when a browser's ``Origin`` is not allowed: a page on another
site must not read logs with the victim's credentials (cross-site WebSocket
hijacking), and neither Starlette nor uvicorn checks this for us.

Clients have nothing to say, so a message larger than ``ws_max_message_bytes`` is
closed with 1009 (uvicorn's ``ws_max_size`` stops larger frames before they are
read into memory). A revoked key or deactivated user closes with 4401; one stream
too many for the user with 1013 (try again later).
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

from starlette.websockets import WebSocket, WebSocketDisconnect

from ...core.errors import StreamerError
from ..fastpath.frames import ws_text
from ..fastpath.sinks import direct_for
from ..openapi import Operation
from ..requests import stream_start
from ..resources import resources

DOC = Operation(
    "WebSocket (upgrade): text frames of newline-separated event JSON, from from_index, live",
    (101, 400, 403, 404),
    ("job_id", "from_index", "tail", "token"),
    streaming=True,
)
log = logging.getLogger("streamer")
CLOSE_REASONS = {"shutdown": 1012, "deleted": 4404, "revoked": 4401, "too_big": 1009}
CLOSE_TEXT = {
    "shutdown": "server restarting: resume from the next index",
    "deleted": "job deleted",
    "revoked": "API key revoked or user deactivated",
    "too_big": "message too big",
}


def origin_allowed(websocket: WebSocket) -> bool:
    """No ``Origin`` (not a browser), an origin on the allowlist, or exactly the
    service's own: same scheme (ws -> http, wss -> https) and same host and port.

    Exact comparisons only: ``http://host:port.evil.com``, ``null`` and an
    ``https`` page on an ``http`` service are all refused. Behind a TLS-terminating
    proxy, list the public origin in ``STREAMER_ALLOWED_ORIGINS``.
    """
    origin = websocket.headers.get("origin")
    if origin is None:
        return True  # not a browser: browsers always send Origin on WebSockets
    if origin in resources(websocket).settings.origin_allowlist:
        return True
    own_scheme = "https" if websocket.url.scheme == "wss" else "http"
    own_host = websocket.headers.get("host", "").lower()
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return (
        parts.scheme == own_scheme
        and bool(own_host)
        and parts.netloc.lower() == own_host
        and not (parts.path or parts.query or parts.fragment or "@" in parts.netloc)
    )


async def events_ws(websocket: WebSocket) -> None:
    if not origin_allowed(websocket):
        await websocket.close(1008)  # before accept: uvicorn answers 403
        return
    await websocket.accept()
    res = resources(websocket)
    try:
        job, from_index, credential = await stream_start(websocket)
        if from_index is None:
            await websocket.close(1000, reason="job complete")
            return
        follow = res.streams.open(job, from_index, "ws", credential)
    except StreamerError as exc:
        await websocket.close(exc.ws_code, reason=exc.detail[:120])
        return
    limit = res.settings.ws_max_message_bytes

    async def watch_disconnect() -> None:
        # Clients have nothing to say; reading keeps close frames and pings flowing.
        try:
            while (message := await websocket.receive())["type"] != "websocket.disconnect":
                size = len(message.get("bytes") or b"") + len(
                    (message.get("text") or "").encode("utf-8", "surrogatepass")
                )
                if size > limit:
                    follow.close("too_big")
                    return
        except RuntimeError:
            pass
        follow.close("disconnect")

    watcher = asyncio.create_task(watch_disconnect())
    timeout = res.settings.send_timeout_seconds
    direct = follow.direct = direct_for(websocket.scope, "ws")
    with res.streams.registered(follow):
        try:
            async for batch in follow.batches():
                if batch and (direct is None or not direct.send_events(batch)):
                    async with asyncio.timeout(timeout):
                        await websocket.send_text(ws_text(batch))
            reason = "" if follow.complete else follow.closed or ""
            code = 1000 if follow.complete else CLOSE_REASONS.get(reason, 0)
            if code:
                await websocket.close(code, CLOSE_TEXT.get(reason, ""))
        except TimeoutError:
            follow.close("send_timeout")
            await _close_quietly(websocket, 1008, "send timeout: resume from the last index")
        except StreamerError as exc:  # storage failed mid-stream (database down, pool dry)
            log.warning("ending a WebSocket stream of job %s: %s", follow.job_id, exc.detail)
            follow.close("storage_error")
            await _close_quietly(websocket, exc.ws_code, "storage unavailable: resume later")
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:
            watcher.cancel()


async def _close_quietly(websocket: WebSocket, code: int, reason: str) -> None:
    """Best effort, bounded: a peer that stopped reading cannot take the close frame
    either, and its stream's memory must be released now, not after the close
    handshake times out (the websockets library aborts the connection later)."""
    try:
        async with asyncio.timeout(1.0):
            await websocket.close(code, reason)
    except (RuntimeError, OSError, TimeoutError):
        pass
