"""One root error; each class knows its HTTP status and WebSocket close code.

    StreamerError                  500 / 1011
    ├── BadRequest                 400 / 1008   malformed cursor or query
    ├── Unauthorized               401 / 4401
    ├── Forbidden                  403 / 1008   a browser origin that is not allowed
    ├── NotFound                   404 / 4404   missing, or someone else's
    ├── MethodNotAllowed           405 / 1008   a write the resource cannot take
    ├── Conflict                   409 / 1008   illegal transition, expected_index
    ├── Gone                       410 / 4404   a deleted stream kept for its forks
    │   └── Dropped                410 / 4410   a resume point retention has dropped
    ├── PayloadTooLarge            413 / 1009
    ├── CursorAhead                416 / 1008   from_index beyond the next index
    ├── Unprocessable              422 / 1008   well-formed JSON, wrong content
    ├── ClientGone                 499 / 1001   the client left before its request was read
    ├── TooManyRequests            429 / 1013   a rate or concurrency limit; Retry-After
    └── Unavailable                503 / 1011   storage unreachable or full
        └── Overloaded             503 / 1013   the node sheds load (stream-start rate); Retry-After

Handlers raise these; the app turns them into RFC 9457 problem+json bodies and the
WebSocket adapter into close codes, so no route decides its own error format.
"""

from __future__ import annotations

import math
from typing import Any


class StreamerError(Exception):
    status = 500
    ws_code = 1011
    title = "Internal Server Error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra
        self.headers: dict[str, str] = {}

    def problem(self) -> dict[str, Any]:
        """RFC 9457 members first; extensions never replace them (a ``status`` extra
        once turned the problem's HTTP status into a job status)."""
        return {
            **self.extra,
            "type": "about:blank",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }


class BadRequest(StreamerError):
    status, ws_code, title = 400, 1008, "Bad Request"


class Unauthorized(StreamerError):
    status, ws_code, title = 401, 4401, "Unauthorized"

    def __init__(self, detail: str = "missing or invalid API key", **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.headers["WWW-Authenticate"] = "Bearer"


class Forbidden(StreamerError):
    status, ws_code, title = 403, 1008, "Forbidden"


class NotFound(StreamerError):
    status, ws_code, title = 404, 4404, "Not Found"


class MethodNotAllowed(StreamerError):
    status, ws_code, title = 405, 1008, "Method Not Allowed"


class Conflict(StreamerError):
    status, ws_code, title = 409, 1008, "Conflict"


class Gone(StreamerError):
    status, ws_code, title = 410, 4404, "Gone"


class Dropped(Gone):
    """The change feed's resume point is older than what retention keeps."""

    ws_code = 4410


class PayloadTooLarge(StreamerError):
    status, ws_code, title = 413, 1009, "Content Too Large"


class CursorAhead(StreamerError):
    status, ws_code, title = 416, 1008, "Range Not Satisfiable"


class Unprocessable(StreamerError):
    status, ws_code, title = 422, 1008, "Unprocessable Content"


class ClientGone(StreamerError):
    """The client went away before its request was read (mid-upload): nothing to
    answer and nothing stored; logged once as such, never as a server error."""

    status, ws_code, title = 499, 1001, "Client Closed Request"


class TooManyRequests(StreamerError):
    """A limit that time lifts (append rate, open streams): 429 with ``Retry-After``.

    WebSockets get 1013 (try again later), which clients treat as transient.
    """

    status, ws_code, title = 429, 1013, "Too Many Requests"

    def __init__(self, detail: str, retry_after: float, **extra: Any) -> None:
        seconds = whole_seconds(retry_after)
        super().__init__(detail, retry_after=seconds, **extra)
        self.headers["Retry-After"] = str(seconds)


class Unavailable(StreamerError):
    status, ws_code, title = 503, 1011, "Service Unavailable"


class Overloaded(Unavailable):
    """This node refuses new work for a moment (the stream-start rate limit): 503 with
    ``Retry-After``, not 429, because it is about the server's load, not the caller's
    use; WebSockets get 1013 (try again later). Clients already retry both."""

    ws_code = 1013

    def __init__(self, detail: str, retry_after: float, **extra: Any) -> None:
        seconds = whole_seconds(retry_after)
        super().__init__(detail, retry_after=seconds, **extra)
        self.headers["Retry-After"] = str(seconds)


def whole_seconds(retry_after: float) -> int:
    """``Retry-After`` is whole seconds, at least 1 (0 would invite an instant retry)."""
    return max(1, math.ceil(retry_after))


def job_not_found() -> NotFound:
    """The one 404 for a job: a missing job and another user's job are identical."""
    return NotFound("job not found")
