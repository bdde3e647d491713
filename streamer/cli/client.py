"""The async HTTP client of the CLI: requests that ride out restarts, and a resuming follow.

Only what can pass by itself is retried: connection and read errors, timeouts, 5xx,
408 and 429. Everything else is a verdict (401: the key is wrong, 404: the job is
not there or not yours) and ends the command at once with the server's own words.
Retries wait with capped, jittered exponential backoff, so a server restart does not
meet a synchronised stampede, and give up after ``retry_for`` seconds of continuous
failure (10 s at most before the server has answered anything, so a wrong URL fails
fast instead of hanging).

``events()`` reads SSE and resumes with ``Last-Event-ID`` from the last index it
yielded; it also drops an index it has already yielded and reconnects on a gap, so
what it yields is exactly ``from_index, from_index+1, ...`` whatever the connection
does. SSE framing is parsed on bytes, splitting on CR and LF only: ``str.splitlines``
(and so ``httpx``'s ``aiter_lines``) also splits on U+2028 and U+0085, which JSON
leaves raw inside strings.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import platformdirs

from ..server.settings_table import CLIENT_SETTINGS

DEFAULT_URL = str(CLIENT_SETTINGS[0].default)
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
FIRST_CONTACT_BUDGET = 10.0
READ_TIMEOUT = 45.0  # three keepalive periods: a silent connection is a dead one


class ClientError(Exception):
    """Ends a client command with a message for people and an exit status."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        usage: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.usage = usage


class Unreachable(ClientError):
    """Transient failures lasted longer than the retry budget."""


@dataclass(frozen=True)
class ClientSettings:
    url: str
    api_key: str | None


def config_path() -> Path:
    return Path(platformdirs.user_config_dir("streamer")) / "config.toml"


def load_client_settings(url: str | None = None, api_key: str | None = None) -> ClientSettings:
    """Flags, then ``STREAMER_URL`` / ``STREAMER_API_KEY``, then the config file, then defaults."""
    file: dict[str, Any] = {}
    path = config_path()
    if path.is_file():
        try:
            file = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ClientError(f"cannot read the config file {path}: {exc}", usage=True) from exc
    url = url or os.environ.get("STREAMER_URL") or file.get("url") or DEFAULT_URL
    api_key = api_key or os.environ.get("STREAMER_API_KEY") or file.get("api_key")
    return ClientSettings(str(url).rstrip("/"), str(api_key) if api_key else None)


def problem_of(response: httpx.Response) -> ClientError:
    """A refusal as a ``ClientError`` carrying the problem's ``detail`` and status."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    detail = body.get("detail") or response.reason_phrase or "error"
    return ClientError(f"{detail} (HTTP {response.status_code})", status=response.status_code)


def _reason(exc: BaseException) -> str:
    """Why a connection failed, in the system's words: ``connection refused``.

    httpx's own text depends on the backend (``[Errno 111] Connection refused``, or
    anyio's ``All connection attempts failed``); the errno at the root of the chain
    says the same thing every time.
    """
    text, depth = "", 0
    seen: BaseException | None = exc
    while seen is not None and depth < 10:
        if isinstance(seen, OSError) and seen.errno:
            text = os.strerror(seen.errno) if seen.errno > 0 else seen.strerror or ""
        seen, depth = seen.__cause__ or seen.__context__, depth + 1
    if not text:
        text = str(exc).strip()
        if text.startswith("[Errno") and "] " in text:
            text = text.split("] ", 1)[1]
    return text[:1].lower() + text[1:] if text else type(exc).__name__


# First match wins: the specific failures before the families they belong to.
PLAIN_WORDS: tuple[tuple[type[httpx.TransportError], str], ...] = (
    (httpx.ConnectTimeout, "no answer from {url} (connecting timed out)"),
    (httpx.ConnectError, "cannot connect to {url} ({reason})"),
    (httpx.ReadTimeout, "{url} sent nothing for {read:g} s"),
    (httpx.TimeoutException, "{url} did not answer in time"),
    (httpx.RemoteProtocolError, "{url} closed the connection in the middle of a response"),
    (httpx.UnsupportedProtocol, "{url} is not an http:// or https:// URL"),
    (httpx.TransportError, "the connection to {url} was lost ({reason})"),
)


def describe(exc: httpx.TransportError, url: str) -> str:
    """What went wrong with the connection, in plain words, naming the server."""
    text = next(text for kind, text in PLAIN_WORDS if isinstance(exc, kind))
    return text.format(url=url, reason=_reason(exc), read=READ_TIMEOUT)


class Backoff:
    """Capped exponential backoff with jitter, and a budget for one continuous outage.

    ``budget`` is asked at each failure: it grows once the server has answered at all.
    """

    def __init__(
        self,
        budget: Callable[[], float],
        base: float,
        cap: float,
        notice: Callable[[str], None] | None,
    ) -> None:
        self.budget, self.base, self.cap, self.notice = budget, base, cap, notice
        self.attempt = 0
        self.since: float | None = None

    def reset(self) -> None:
        self.attempt, self.since = 0, None

    async def wait(self, reason: str) -> None:
        """Sleep before the next attempt, or raise ``Unreachable`` once the budget is spent."""
        now, budget = time.monotonic(), self.budget()
        if self.since is None:
            self.since = now
            if self.notice is not None:
                self.notice(f"{reason}; retrying for up to {budget:g}s")
        if now - self.since >= budget:
            raise Unreachable(f"{reason}; gave up after {now - self.since:.1f}s")
        delay = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        # "Equal jitter": never a hammering zero delay, never a synchronised herd.
        await asyncio.sleep(delay / 2 + random.uniform(0, delay / 2))  # noqa: S311


@dataclass(frozen=True)
class Event:
    """One event as received: its fields and the exact JSON line the server sent."""

    index: int
    type: str
    data: str | None
    success: bool | None
    timestamp: str
    line: bytes

    @classmethod
    def parse(cls, line: bytes) -> Event:
        raw = orjson.loads(line)
        return cls(raw["index"], raw["type"], raw["data"], raw["success"], raw["timestamp"], line)


class SSEParser:
    """Incremental SSE framing (WHATWG) over bytes: ``feed`` returns what each chunk completed.

    Items are ``(id, event, data)`` tuples for messages, and ``str`` for comment lines.
    """

    def __init__(self) -> None:
        self.pending = b""
        self.event = b""
        self.data: list[bytes] = []
        self.id: bytes | None = None

    def feed(self, chunk: bytes) -> list[tuple[bytes | None, bytes, bytes] | str]:
        buffer, hold = self.pending + chunk, b""
        if buffer.endswith(b"\r"):  # maybe half of a CRLF: decide with the next chunk
            buffer, hold = buffer[:-1], b"\r"
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buffer.split(b"\n")
        self.pending = lines.pop() + hold
        out: list[tuple[bytes | None, bytes, bytes] | str] = []
        for line in lines:
            if not line:
                if self.data:
                    out.append((self.id, self.event or b"message", b"\n".join(self.data)))
                self.event, self.data = b"", []
            elif line.startswith(b":"):
                out.append(line[1:].strip().decode("utf-8", "replace"))
            else:
                name, _, value = line.partition(b":")
                value = value[1:] if value.startswith(b" ") else value
                if name == b"data":
                    self.data.append(value)
                elif name == b"event":
                    self.event = value
                elif name == b"id" and b"\0" not in value:
                    self.id = value
        return out


def _comment_next_index(comment: str) -> int | None:
    """``connected next_index=N`` / ``keepalive next_index=N`` → N."""
    _, sep, value = comment.partition("next_index=")
    return int(value) if sep and value.isdigit() else None


class Client:
    """One server, one API key; ``async with Client(...) as client``."""

    def __init__(
        self,
        settings: ClientSettings,
        *,
        retry_for: float = 300.0,
        backoff_base: float = 0.1,
        backoff_cap: float = 5.0,
        notice: Callable[[str], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not settings.api_key:
            raise ClientError(
                "no API key: set STREAMER_API_KEY (`streamer serve` prints the first one; "
                "`streamer keys create` makes more) or pass --api-key",
                usage=True,
            )
        if not settings.url.startswith(("http://", "https://")):
            raise ClientError(
                f"--url must start with http:// or https://, not {settings.url!r}", usage=True
            )
        self.settings = settings
        self.retry_for, self.backoff_base, self.backoff_cap = retry_for, backoff_base, backoff_cap
        self.notice = notice
        self.contacted = False
        self.http = httpx.AsyncClient(
            base_url=settings.url + "/api/v1",
            headers={"Authorization": f"Bearer {settings.api_key}"},
            timeout=httpx.Timeout(30.0, connect=10.0),
            transport=transport,
        )

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    def budget(self) -> float:
        """How long an outage may last: short until the server has answered once."""
        return self.retry_for if self.contacted else min(self.retry_for, FIRST_CONTACT_BUDGET)

    def backoff(self) -> Backoff:
        return Backoff(self.budget, self.backoff_base, self.backoff_cap, self.notice)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: dict[str, Any] | None = None,
        idempotent: bool = True,
        accept: frozenset[int] = frozenset(),
    ) -> httpx.Response:
        """One request, retried through transient failures; a refusal raises ``ClientError``.

        A request that is not idempotent is retried only when it surely never reached
        the server (it could not connect) or the server said it is unavailable.
        """
        backoff = self.backoff()
        headers = {"Content-Type": "application/json"} if content is not None else None
        while True:
            try:
                response = await self.http.request(
                    method, path, json=json, content=content, params=params, headers=headers
                )
            except httpx.TransportError as exc:
                unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                what = describe(exc, self.settings.url)
                if isinstance(exc, httpx.UnsupportedProtocol):
                    raise ClientError(what, usage=True) from exc
                if not (idempotent or unsent):
                    raise ClientError(
                        f"{what}; it may or may not have done {method} {path}"
                    ) from exc
                await backoff.wait(what)
                continue
            self.contacted = True
            status = response.status_code
            if status in RETRY_STATUSES and (idempotent or status == 503):
                await backoff.wait(
                    f"{self.settings.url} answered {method} {path} with HTTP {status}"
                )
                continue
            if status >= 400 and status not in accept:
                raise problem_of(response)
            return response

    async def get_job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = (await self.request("GET", f"/jobs/{job_id}")).json()
        return job

    async def events(
        self, job_id: str, *, from_index: int | None = None, tail: int | None = None
    ) -> AsyncIterator[list[Event]]:
        """Batches of consecutive events, each index exactly once, until ``complete``.

        Also ends, without a ``complete`` event, when the server answers 204: the
        cursor is already past the end of a finished job.
        """
        next_index = from_index
        backoff = self.backoff()
        while True:
            headers, params = {}, {}
            if next_index is not None and next_index > 0:
                headers["Last-Event-ID"] = str(next_index - 1)
            elif next_index is not None:
                params["from_index"] = "0"
            elif tail is not None:
                params["tail"] = str(tail)
            reason = f"{self.settings.url} ended the stream before the job completed"
            try:
                async with self.http.stream(
                    "GET",
                    f"/jobs/{job_id}/events/stream",
                    headers=headers,
                    params=params,
                    timeout=httpx.Timeout(30.0, connect=10.0, read=READ_TIMEOUT),
                ) as response:
                    self.contacted = True
                    if response.status_code == 204:
                        return
                    if response.status_code in RETRY_STATUSES:
                        await response.aread()
                        raise _Retry(f"{self.settings.url} answered HTTP {response.status_code}")
                    if response.status_code >= 400:
                        await response.aread()
                        raise problem_of(response)
                    parser = SSEParser()
                    async for chunk in response.aiter_bytes():
                        batch: list[Event] = []
                        gap: str | None = None
                        for item in parser.feed(chunk):
                            if isinstance(item, str):
                                seen = _comment_next_index(item)
                                if next_index is None and seen is not None:
                                    next_index = seen  # where a --tail start landed
                                backoff.reset()
                                continue
                            event = Event.parse(item[2])
                            if next_index is not None and event.index < next_index:
                                continue  # already yielded: never twice
                            if next_index is not None and event.index > next_index:
                                gap = f"gap in the stream: got {event.index}, not {next_index}"
                                break
                            batch.append(event)
                            next_index = event.index + 1
                        if batch:
                            backoff.reset()
                            yield batch
                            if batch[-1].type == "complete":
                                return
                        if gap is not None:
                            raise _Retry(gap)
            except httpx.TransportError as exc:
                reason = describe(exc, self.settings.url)
                if isinstance(exc, httpx.UnsupportedProtocol):
                    raise ClientError(reason, usage=True) from exc
            except _Retry as exc:
                reason = str(exc)
            await backoff.wait(reason)


class _Retry(Exception):
    """A stream ended in a way that reconnecting fixes."""


def stderr_notice(message: str) -> None:
    print(f"streamer: {message}", file=sys.stderr, flush=True)
