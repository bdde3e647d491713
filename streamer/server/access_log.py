"""Structured logs: one line per HTTP request and per stream start and end.

``emit`` writes one record carrying both a readable message and its fields; the
``log_format`` setting picks how it is printed: ``text`` (the message, after a
timestamp, level and logger name) or ``json`` (one object per line: ``ts``,
``level``, ``logger``, ``event`` and the fields; other records get ``msg``).
In JSON mode uvicorn's own records (startup, WebSocket handshakes, errors) are
printed as JSON too, so a collector sees only JSON lines on stderr.

``RequestLog`` replaces uvicorn's access log: it logs when the response has ended,
so a line also has the duration, the bytes sent and the user id (which uvicorn
cannot know), and a streaming response is logged once, with its whole duration.
uvicorn's access logger is emptied (``configure``), so there is one line per
request, not two, and uvicorn skips formatting its own.

No secrets: paths and queries are redacted before they are logged
(``security.redact_path`` / ``redact_query``), ``SecretFilter`` still runs on every
record, and the JSON formatter redacts every string field it prints, so a
credential that reached a field by mistake is still caught.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .security import redact_path, redact_query, redact_text

access_log = logging.getLogger("streamer.access")
USER_KEY = "streamer.user_id"  # where authentication leaves the user id in scope["state"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def emit(logger: logging.Logger, event: str, message: str, **fields: Any) -> None:
    """One INFO record: ``message`` for text logs, ``event`` and ``fields`` for JSON."""
    logger.info(message, extra={"event": event, "fields": fields})


class TextFormatter(logging.Formatter):
    """``2026-11-22T13:50:00.123Z INFO streamer.access: ...``: UTC, sortable."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return _timestamp(record.created)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, every string redacted once more."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line["event"] = getattr(record, "event", "")
            line.update(fields)
        else:
            line["msg"] = record.getMessage()
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(
            {k: redact_text(v) if isinstance(v, str) else v for k, v in line.items()},
            ensure_ascii=False,
            default=str,
        )


def _timestamp(created: float) -> str:
    when = datetime.datetime.fromtimestamp(created, datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of the record (test runners
    swap it), not the one that was current when the handler was made."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure(log_format: str, level: int | str | None = None) -> None:
    """Send ``streamer.*`` records to stderr in ``log_format``; turn uvicorn's access
    log off (``RequestLog`` replaces it); in JSON mode, format uvicorn's records as
    JSON too. Idempotent: called by ``serve`` before the server starts and again in
    the app's lifespan (for servers started another way); ``level`` defaults to
    the one set before (``serve --log-level``), or uvicorn's.
    """
    formatter: logging.Formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    streamer = logging.getLogger("streamer")
    for handler in [h for h in streamer.handlers if isinstance(h, StderrHandler)]:
        streamer.removeHandler(handler)
    handler = StderrHandler()
    handler.setFormatter(formatter)
    streamer.addHandler(handler)
    streamer.propagate = False  # like uvicorn's loggers: one line per record, not two
    # Without a level: keep one set before (serve's --log-level), else uvicorn's.
    streamer.setLevel(
        level or streamer.level or logging.getLogger("uvicorn.error").getEffectiveLevel()
    )
    access = logging.getLogger("uvicorn.access")
    access.handlers = []  # uvicorn checks hasHandlers() per connection: no access lines
    access.propagate = False
    if log_format == "json":
        for name in ("uvicorn", "uvicorn.error"):
            for target in logging.getLogger(name).handlers:
                target.setFormatter(formatter)


class RequestLog:
    """One line per HTTP request or WebSocket, when it ends.

    Fields: client, method, path (with its query, redacted), status, duration_ms,
    bytes (response body), user_id (when the request authenticated). A WebSocket's
    status is 101 once accepted, 403 when refused before it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        scope.setdefault("state", {})  # shared with the app's (copied) scope
        status = 0
        sent = 0

        async def watch(message: Message) -> None:
            nonlocal status, sent
            kind = message["type"]
            if kind == "http.response.body":
                sent += len(message.get("body", b""))
            elif kind in ("http.response.start", "websocket.http.response.start"):
                status = message["status"]
            elif kind == "websocket.accept":
                status = 101
            elif kind == "websocket.close" and not status:
                status = 403  # closed before accept: uvicorn answers 403
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except BaseException:
            status = status or 500
            raise
        finally:
            if access_log.isEnabledFor(logging.INFO):
                log_request(scope, status, sent, time.perf_counter() - began)


def log_request(scope: Scope, status: int, sent: int, took: float) -> None:
    """The request's one line (``RequestLog``, and the lean path's dispatcher)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    state = scope.get("state") or {}
    path = redact_path(scope["path"])
    query = redact_query(scope.get("query_string", b"")).decode("latin-1")
    if query:
        path = f"{path}?{query}"
    client = scope.get("client")
    peer = f"{client[0]}:{client[1]}" if client else "-"
    user = state.get(USER_KEY)
    if scope["type"] == "websocket":
        method, line = "WS", f'"WebSocket {path}"'
    else:
        method = scope["method"]
        line = f'"{method} {path} HTTP/{scope.get("http_version", "1.1")}"'
    duration_ms = round(took * 1000, 1)
    emit(
        access_log,
        "request",
        f"{peer} {line} {status or '-'} {duration_ms}ms {sent}B user={user or '-'}",
        client=peer,
        method=method,
        path=path,
        status=status or None,
        duration_ms=duration_ms,
        bytes=sent,
        user_id=user,
    )


def note_user(scope: Scope, user_id: int) -> None:
    """Remember who made this request, for its log line (authentication calls this)."""
    state = scope.get("state")
    if isinstance(state, dict):
        state[USER_KEY] = user_id
