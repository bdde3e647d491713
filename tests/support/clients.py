"""Real protocol clients for tests: a reference SSE parser over httpx, and WebSocket.

The SSE parser follows the WHATWG algorithm (lines end in CR, LF or CRLF; a blank
line dispatches; ``:`` starts a comment; one optional space after the colon), so a
malformed frame from the server shows up as a wrong event, not as a silent pass.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import websockets


@dataclass
class SSEMessage:
    event: str = "message"
    data: str = ""
    id: str | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.data)
        return value


async def parse_sse(chunks: AsyncIterator[bytes]) -> AsyncIterator[SSEMessage | str]:
    """Yield each dispatched message, and each comment line as a plain ``str``."""
    buffer = ""
    event, data, last_id = "", [], None
    decoder = __import__("codecs").getincrementaldecoder("utf-8")()
    async for chunk in chunks:
        buffer += decoder.decode(chunk)
        while True:
            positions = [p for p in (buffer.find("\r"), buffer.find("\n")) if p != -1]
            if not positions:
                break
            end = min(positions)
            if buffer[end] == "\r" and end + 1 == len(buffer):
                break  # a CR at the end might be half of a CRLF
            line = buffer[:end]
            skip = 2 if buffer[end : end + 2] == "\r\n" else 1
            buffer = buffer[end + skip :]
            if line == "":
                if data:
                    yield SSEMessage(event or "message", "\n".join(data), last_id)
                event, data = "", []
                continue
            if line.startswith(":"):
                yield line[1:].lstrip(" ")
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            elif name == "id" and "\0" not in value:
                last_id = value


class SSEClient:
    """One SSE request; ``messages()`` yields events, ``comments`` collects comment lines."""

    def __init__(
        self, base: str, job_id: str, key: str, params: dict[str, Any], timeout: float = 30
    ) -> None:
        self.base = base
        self.job_id = job_id
        self.key = key
        self.params = params
        self.timeout = timeout
        self.comments: list[str] = []
        self.status: int | None = None
        self.headers: httpx.Headers | None = None

    def url(self) -> str:
        query = f"?{urlencode(self.params)}" if self.params else ""
        return f"{self.base}/api/v1/jobs/{self.job_id}/events/stream{query}"

    async def messages(self, last_event_id: str | None = None) -> AsyncIterator[SSEMessage]:
        headers = {"Authorization": f"Bearer {self.key}"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        async with (
            httpx.AsyncClient(timeout=self.timeout, verify=False) as client,
            client.stream("GET", self.url(), headers=headers) as response,
        ):
            self.status = response.status_code
            self.headers = response.headers
            if response.status_code != 200:
                await response.aread()
                return
            async for item in parse_sse(response.aiter_bytes()):
                if isinstance(item, str):
                    self.comments.append(item)
                else:
                    yield item

    async def collect(self, limit: int | None = None, **kwargs: Any) -> list[SSEMessage]:
        """Messages until the server ends the stream (or ``limit`` of them)."""
        out: list[SSEMessage] = []
        async for message in self.messages(**kwargs):
            out.append(message)
            if limit is not None and len(out) >= limit:
                break
        return out


def ws_events(base: str, job_id: str, key: str, params: dict[str, Any]) -> Any:
    query = f"?{urlencode(params)}" if params else ""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return websockets.connect(
        f"{base}/api/v1/jobs/{job_id}/events/ws{query}",
        additional_headers=headers,
        max_size=None,
        compression=None,
        open_timeout=10,
    )


async def ws_refused(base: str, job_id: str, key: str, params: dict[str, Any]) -> tuple[int, Any]:
    """A WebSocket handshake the server must refuse: its HTTP status and JSON body."""
    try:
        async with ws_events(base, job_id, key, params):
            pass
    except websockets.InvalidStatus as refused:
        return refused.response.status_code, json.loads(refused.response.body or b"null")
    raise AssertionError("the handshake was accepted")


async def ws_collect(connection: Any, limit: int | None = None) -> list[dict[str, Any]]:
    """Event JSON from text frames until the server closes (or ``limit`` events)."""
    out: list[dict[str, Any]] = []
    try:
        async for frame in connection:
            assert isinstance(frame, str), "events come in text frames"
            out.extend(json.loads(line) for line in frame.split("\n"))
            if limit is not None and len(out) >= limit:
                break
    except websockets.ConnectionClosedError:
        pass
    return out


async def raw_sse_ids(
    port: int, path: str, key: str, last_event_id: str | None = None, until: int | None = None
) -> list[int]:
    """SSE event ids over a bare asyncio connection, until the server ends the response
    (or ``until`` ids arrived): cheap enough to hold a thousand readers in one test."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    resume = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id is not None else ""
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"{resume}Connection: close\r\n\r\n".encode()
    )
    ids: list[int] = []
    try:
        async for line in reader:
            if line.startswith(b"id: "):
                ids.append(int(line[4:]))
                if until is not None and len(ids) >= until:
                    break
    finally:
        writer.close()
    return ids


async def ds_sse_read(base: str, path: str, key: str, offset: str) -> tuple[list[Any], str]:
    """A Durable Streams SSE read of a JSON stream until ``streamClosed``: the messages,
    and the last ``streamNextOffset``. Checks that every data event is followed by a
    control event whose offset moved by exactly the messages it held."""
    messages: list[Any] = []
    pending: list[Any] | None = None
    position = offset
    async with (
        httpx.AsyncClient(timeout=30, verify=False) as client,
        client.stream(
            "GET",
            f"{base}{path}",
            params={"offset": offset, "live": "sse"},
            headers={"Authorization": f"Bearer {key}"},
        ) as response,
    ):
        assert response.status_code == 200, await response.aread()
        async for item in parse_sse(response.aiter_bytes()):
            if isinstance(item, str):
                continue
            if item.event == "data":
                assert pending is None, "two data events without a control event"
                pending = json.loads(item.data)
                continue
            control = item.json()
            got = pending or []
            moved = int(control["streamNextOffset"][-16:]) - int(position[-16:] or 0)
            assert moved == len(got) or position == "-1", (position, control, len(got))
            messages += got
            pending, position = None, control["streamNextOffset"]
            if control.get("streamClosed"):
                return messages, position
    raise AssertionError("the SSE response ended before streamClosed")


async def ds_long_poll_read(base: str, path: str, key: str, offset: str) -> tuple[list[Any], str]:
    """Durable Streams long-polls of a JSON stream from ``offset`` until
    ``Stream-Closed``: the messages, and the final offset."""
    messages: list[Any] = []
    async with httpx.AsyncClient(
        base_url=base, timeout=30, verify=False, headers={"Authorization": f"Bearer {key}"}
    ) as client:
        while True:
            response = await client.get(path, params={"offset": offset, "live": "long-poll"})
            assert response.status_code in (200, 204), response.text
            if response.status_code == 200:
                messages += response.json()
            offset = response.headers["Stream-Next-Offset"]
            if response.headers.get("Stream-Closed") == "true":
                return messages, offset
