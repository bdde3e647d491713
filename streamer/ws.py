"""WebSocket over ``follow()``: text frames of newline-separated event JSON.

Errors after the handshake are close codes (4401, 4404, 1008 ...) from the error
classes, so a client sees the same verdicts as over HTTP. The handshake is refused
outright (HTTP 403) when a browser's ``Origin`` is not allowed: a page on another
site must not read logs with the victim's credentials (cross-site WebSocket
hijacking), and neither Starlette nor uvicorn checks this for us.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from starlette.websockets import WebSocket, WebSocketDisconnect

from .context import context, stream_start
from .errors import StreamerError

CLOSE_REASONS = {"shutdown": 1012, "deleted": 4404}


def origin_allowed(websocket: WebSocket) -> bool:
    origin = websocket.headers.get("origin")
    if origin is None:
        return True  # not a browser: browsers always send Origin on WebSockets
    if origin in context(websocket).settings.origin_allowlist:
        return True
    parts = urlsplit(origin)
    own_host = websocket.headers.get("host", "")
    return parts.scheme in ("http", "https") and parts.netloc == own_host and not parts.path


async def events_ws(websocket: WebSocket) -> None:
    if not origin_allowed(websocket):
        await websocket.close(1008)  # before accept: uvicorn answers 403
        return
    await websocket.accept()
    ctx = context(websocket)
    try:
        job, start = await stream_start(websocket)
    except StreamerError as exc:
        await websocket.close(exc.ws_code, reason=exc.detail[:120])
        return
    if start is None:
        await websocket.close(1000, reason="job complete")
        return
    follow = ctx.follow(job, start, "ws")

    async def watch_disconnect() -> None:
        # Clients have nothing to say; reading keeps close frames and pings flowing.
        try:
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass
        except RuntimeError:
            pass
        follow.close("disconnect")

    watcher = asyncio.create_task(watch_disconnect())
    timeout = ctx.settings.send_timeout_seconds
    with ctx.registered(follow):
        try:
            async for batch in follow.batches():
                if batch:
                    text = batch[0].text if len(batch) == 1 else "\n".join([e.text for e in batch])
                    async with asyncio.timeout(timeout):
                        await websocket.send_text(text)
            code = 1000 if follow.complete else CLOSE_REASONS.get(follow.closed or "", 0)
            if code:
                await websocket.close(code)
        except TimeoutError:
            await _close_quietly(websocket, 1008, "send timeout: resume from the last index")
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
