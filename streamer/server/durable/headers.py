"""The protocol's headers: reading a request's, and the ones every answer carries.

Every answer of these routes has ``Cross-Origin-Resource-Policy: cross-origin``
(the protocol's browser guidance; ``nosniff`` comes with every API answer). CORS
follows ``cors_origins`` as on ``/api/``: a preflight is answered with the methods
and headers the protocol uses, and only an allowed origin gets
``Access-Control-Allow-Origin`` (with the protocol's headers exposed to its pages).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ...core import durable
from ...core.durable import ForkRequest
from ...core.errors import BadRequest
from ...core.messages import parse_content_type, parse_offset
from ..transports.streaming import lean
from .access import source_path

METHODS = "GET, HEAD, POST, PUT, DELETE, OPTIONS"
ALLOWED = (
    "Authorization, Content-Type, If-None-Match, Last-Event-ID, Stream-TTL, Stream-Expires-At, "
    "Stream-Seq, Stream-Closed, Stream-Forked-From, Stream-Fork-Offset, Stream-Fork-Sub-Offset, "
    "Producer-Id, Producer-Epoch, Producer-Seq"
)
EXPOSED = (
    "Stream-Next-Offset, Stream-Cursor, Stream-Up-To-Date, Stream-Closed, Stream-TTL, "
    "Stream-Expires-At, Stream-SSE-Data-Encoding, Producer-Epoch, Producer-Seq, "
    "Producer-Expected-Seq, Producer-Received-Seq, ETag, Location, Retry-After, Streamer-Job-Id"
)
SUB_OFFSET = durable.TTL  # the same plain decimal


def header(request: Request, name: str) -> str | None:
    return request.headers.get(name)


def content_type(request: Request) -> str | None:
    raw = request.headers.get("content-type")
    return None if raw is None else parse_content_type(raw)


def fork_request(request: Request) -> ForkRequest | None:
    """``Stream-Forked-From`` with its offset and sub-offset (which need it: 400)."""
    source = header(request, "stream-forked-from")
    offset_text = header(request, "stream-fork-offset")
    sub_text = header(request, "stream-fork-sub-offset")
    if source is None:
        if offset_text is not None or sub_text is not None:
            raise BadRequest(
                "Stream-Fork-Offset and Stream-Fork-Sub-Offset need Stream-Forked-From",
                field="Stream-Forked-From",
            )
        return None
    if sub_text is not None and not SUB_OFFSET.fullmatch(sub_text):
        raise BadRequest(
            "Stream-Fork-Sub-Offset must be a non-negative integer",
            field="Stream-Fork-Sub-Offset",
        )
    offset = None if offset_text is None else parse_offset(offset_text, "Stream-Fork-Offset")
    return ForkRequest(
        source_path(source), offset, offset_text or "", int(sub_text) if sub_text else 0
    )


def cors(request: Request, allowlist: list[str]) -> dict[str, str]:
    """What an answer adds for a page of another origin (nothing unless allowed).

    The lean path already adds ``Access-Control-Allow-Origin`` to every answer of an
    allowed origin (``security.api_headers``); the framework's path gets it here."""
    origin = request.headers.get("origin")
    if origin is None or origin not in allowlist:
        return {}
    found = {"Access-Control-Expose-Headers": EXPOSED}
    if lean(request.scope) is None:
        found.update({"Access-Control-Allow-Origin": origin, "Vary": "Origin"})
    return found


def base(request: Request, allowlist: list[str]) -> dict[str, str]:
    return {"Cross-Origin-Resource-Policy": "cross-origin", **cors(request, allowlist)}


def preflight(request: Request, allowlist: list[str]) -> Response:
    """``OPTIONS``: the methods and request headers the protocol uses."""
    headers = {
        "Access-Control-Allow-Methods": METHODS,
        "Access-Control-Allow-Headers": ALLOWED,
        "Access-Control-Max-Age": "600",
        **base(request, allowlist),
    }
    return Response(status_code=204, headers=headers)
