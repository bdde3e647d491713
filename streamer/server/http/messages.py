"""The messages of HTTP/1.1 as the server reads and writes them."""

from __future__ import annotations

REASONS = {
    100: b"Continue",
    101: b"Switching Protocols",
    200: b"OK",
    201: b"Created",
    204: b"No Content",
    304: b"Not Modified",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    409: b"Conflict",
    410: b"Gone",
    413: b"Content Too Large",
    416: b"Range Not Satisfiable",
    422: b"Unprocessable Content",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
    507: b"Insufficient Storage",
}
Headers = list[tuple[bytes, bytes]]


class Request:
    """One parsed request (the head, and the whole body once it has arrived)."""

    __slots__ = (
        "method",
        "target",
        "path",
        "query",
        "headers",
        "version",
        "body",
        "keep_alive",
        "upgrade",
        "began",
    )

    def __init__(self, target: bytes, began: float) -> None:
        self.method = ""
        self.target = target
        self.path = ""
        self.query = b""
        self.headers: Headers = []
        self.version = "1.1"
        self.body = bytearray()
        self.keep_alive = True
        self.upgrade = False
        self.began = began

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header (``name`` in lower case)."""
        for key, value in self.headers:
            if key == name:
                return value
        return None
