"""HTTP hardening around the app: no secret in a log line, security headers, CORS.

**Redaction, twice.** uvicorn logs every request's path and query string (the
access log, and WebSocket handshakes on its error logger, at INFO), from the very
``scope`` dict it hands the app. ``SecurityMiddleware`` gives the app a copy with the
real values and leaves uvicorn's dict redacted: every query parameter whose name
looks like a credential (``token``, ``api_key``, ...) or whose value looks like one
(``stk_``, ``sst_``), and any ``stk_``/``sst_`` string in the path. Below that, at
``--log-level debug`` the websockets library logs each handshake's raw request line
and headers (``Authorization`` included) through uvicorn's logger, which no scope
can reach; ``SecretFilter``, installed on the server's loggers and their handlers
at startup, rewrites any record holding a key, a token, a bearer credential or a
credential header before it is emitted. So no key or stream token reaches a log
line, whatever the client put in its request and whatever the log level.

**Headers.** The dashboard gets a strict Content-Security-Policy (its own scripts,
styles and connections only; no framing, no inline code), and every response
``nosniff`` and ``Referrer-Policy: no-referrer`` (a URL carrying a stream token must
not leak through ``Referer``).

**CORS** is off unless ``cors_origins`` lists exact origins, and then only for
``/api/``; credentials mode is never allowed (the API uses bearer keys, not cookies),
so ``Access-Control-Allow-Origin: *`` with credentials cannot happen.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import unquote_plus

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REDACTED = "[redacted]"
SECRET_NAME = re.compile(r"token|key|secret|auth|passw|sig", re.IGNORECASE)
SECRET_VALUE = re.compile(r"(stk|sst)_", re.IGNORECASE)
SECRET_IN_PATH = re.compile(r"(?i)(stk|sst)_[^/]*")
SECRET_IN_RAW_PATH = re.compile(rb"(?i)(stk|sst)_[^/]*")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
COMMON_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
PAGE_HEADERS = [*COMMON_HEADERS, (b"content-security-policy", CSP.encode())]
API_PATHS = ("/api/", "/v1/stream/", "/healthz", "/readyz", "/metrics")


def redact_query(raw: bytes) -> bytes:
    """The query string with every credential-like parameter's value replaced."""
    if not raw:
        return raw
    parts = []
    for part in raw.split(b"&"):
        name, eq, value = part.partition(b"=")
        plain_name = unquote_plus(name.decode("latin-1"))
        plain_value = unquote_plus(value.decode("latin-1"))
        if SECRET_VALUE.search(plain_name):
            part = REDACTED.encode()
        elif SECRET_NAME.search(plain_name) or SECRET_VALUE.search(plain_value):
            part = name + b"=" + REDACTED.encode()
        parts.append(part)
    return b"&".join(parts)


SECRET_IN_TEXT = re.compile(r"(?i)\b(stk|sst)_[A-Za-z0-9_.~%-]*")
BEARER = re.compile(r"(?i)\b(bearer\s+)\S+")
SECRET_HEADERS = frozenset(
    {"authorization", "cookie", "x-api-key", "api-key", "proxy-authorization"}
)
LOGGERS = (
    "",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "uvicorn.asgi",
    "websockets",
    "streamer",
)


def redact_text(text: str) -> str:
    """Any key or stream token, and any bearer credential, in free text."""
    return BEARER.sub(rf"\1{REDACTED}", SECRET_IN_TEXT.sub(rf"\1_{REDACTED}", text))


class SecretFilter(logging.Filter):
    """Redacts keys, tokens and credential headers from a log record's message and
    arguments, keeping its shape (uvicorn's access formatter unpacks the arguments)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_text(record.msg)
        if isinstance(record.args, tuple) and record.args:
            args: list[Any] = list(record.args)
            for i, arg in enumerate(args):
                if not isinstance(arg, str):
                    continue
                if i > 0 and isinstance(args[i - 1], str) and args[i - 1].lower() in SECRET_HEADERS:
                    args[i] = REDACTED  # websockets' "< %s: %s" header lines
                else:
                    args[i] = redact_text(arg)
            record.args = tuple(args)
        return True


def install_log_filter() -> None:
    """Put ``SecretFilter`` on the server's loggers and on their handlers (a handler's
    filter also sees records propagated from child loggers). Idempotent; called at
    startup, after uvicorn has configured logging."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for target in (logger, *logger.handlers):
            if not any(isinstance(f, SecretFilter) for f in target.filters):
                target.addFilter(SecretFilter())


def redact_path(path: str) -> str:
    return SECRET_IN_PATH.sub(rf"\1_{REDACTED}", path)


def _redact_scope(scope: Scope) -> None:
    scope["path"] = redact_path(scope["path"])
    if isinstance(scope.get("raw_path"), bytes):
        scope["raw_path"] = SECRET_IN_RAW_PATH.sub(rb"\1_" + REDACTED.encode(), scope["raw_path"])
    scope["query_string"] = redact_query(scope.get("query_string", b""))


class SecurityMiddleware:
    """Redacts what the server logs, and adds the security headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        original = dict(scope)  # the app's view: real path and query
        _redact_scope(scope)  # the server's view, which is what it logs
        if scope["type"] == "websocket":
            await self.app(original, receive, send)
            return
        extra = COMMON_HEADERS if original["path"].startswith(API_PATHS) else PAGE_HEADERS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in extra if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(original, receive, send_with_headers)


def api_headers(origin: bytes | None, cors_allowlist: list[str]) -> list[tuple[bytes, bytes]]:
    """The headers every ``/api/`` response of a request carries, for the lean path:
    the security headers the middleware adds, and what ``ApiCORS`` adds to a simple
    (non-preflight) response whose ``Origin`` is allowed."""
    headers = list(COMMON_HEADERS)
    if origin is not None and cors_allowlist and origin.decode("latin-1") in cors_allowlist:
        headers += [
            (b"access-control-allow-origin", origin),
            (b"access-control-expose-headers", b"Location, Retry-After"),
            (b"vary", b"Origin"),
        ]
    return headers


class ApiCORS:
    """Starlette's CORS for ``/api/`` only, for an exact list of origins, no credentials."""

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
            expose_headers=["Location", "Retry-After"],
            allow_credentials=False,
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
