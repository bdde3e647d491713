"""The CLI's readers of the multi-job stream and of the change feed, resuming exactly.

``multi_events`` follows several jobs on one connection (``/streams/events``): it
keeps each job's next index itself, drops an index it has already yielded,
reconnects on a gap or a dropped connection, and asks for every job that has not
ended from exactly its own position (``jobs=ID:N,...``). ``changes`` follows the
change feed from a sequence number, resuming with ``Last-Event-ID``. Both retry
through outages with the client's backoff, like ``Client.events``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from .client import READ_TIMEOUT, RETRY_STATUSES, Client, ClientError, Event, SSEParser, problem_of


@dataclass(frozen=True)
class Ended:
    """One job's stream ended: ``complete``, ``deleted``, or refused (``problem``)."""

    job_id: str
    reason: str
    problem: dict[str, Any] | None = None


class _Retry(Exception):
    """A stream ended in a way that reconnecting fixes."""


async def _sse(
    client: Client, path: str, params: dict[str, str], headers: dict[str, str]
) -> AsyncIterator[tuple[bytes | None, bytes, bytes] | str | int]:
    """One SSE response: its items (``SSEParser``'s), or its status when it is 204.
    A refusal raises the problem; a transient failure ``_Retry``."""
    try:
        async with client.http.stream(
            "GET",
            path,
            params=params,
            headers=headers,
            timeout=httpx.Timeout(30.0, connect=10.0, read=READ_TIMEOUT),
        ) as response:
            client.contacted = True
            if response.status_code == 204:
                yield 204
                return
            if response.status_code in RETRY_STATUSES:
                await response.aread()
                raise _Retry(f"HTTP {response.status_code}")
            if response.status_code >= 400:
                await response.aread()
                raise problem_of(response)
            parser = SSEParser()
            async for chunk in response.aiter_bytes():
                for item in parser.feed(chunk):
                    yield item
    except httpx.TransportError as exc:
        if isinstance(exc, httpx.UnsupportedProtocol):
            raise ClientError(str(exc)) from exc
        raise _Retry(f"connection to {client.settings.url} lost: {type(exc).__name__}") from exc


async def multi_events(
    client: Client, positions: dict[str, int]
) -> AsyncIterator[tuple[str, list[Event]] | Ended]:
    """``(job id, batch)`` of consecutive events, each index once, and an ``Ended`` for
    each job, until every job in ``positions`` (job id -> first index) has ended."""
    positions = dict(positions)
    backoff = client.backoff()
    while positions:
        jobs = ",".join(f"{job}:{index}" for job, index in positions.items())
        reason = "the stream ended before every job did"
        try:
            async for item in _sse(client, "/streams/events", {"jobs": jobs}, {}):
                if item == 204:  # every job was already past its end
                    for job in list(positions):
                        yield Ended(job, "complete")
                    return
                if not isinstance(item, tuple):
                    backoff.reset()  # a comment: the connection is alive
                    continue
                for out in _take(item, positions):
                    backoff.reset()
                    yield out
        except _Retry as exc:
            reason = str(exc)
        if positions:
            await backoff.wait(reason)


def _take(
    item: tuple[bytes | None, bytes, bytes], positions: dict[str, int]
) -> list[tuple[str, list[Event]] | Ended]:
    """What one message means for the caller; a gap raises ``_Retry``."""
    _, kind, data = item
    body = orjson.loads(data)
    job = body.get("job_id")
    if job not in positions:
        return []
    if kind in (b"_end", b"_error"):
        del positions[job]
        return [Ended(job, body.get("reason", "refused"), body.get("problem"))]
    event = Event.parse(data)
    expected = positions[job]
    if event.index < expected:
        return []  # already yielded: never twice
    if event.index > expected:
        raise _Retry(f"gap in job {job}: got {event.index}, not {expected}")
    positions[job] = event.index + 1
    return [(job, [event])]


async def changes(
    client: Client, after: int | None, *, snapshot: bool = False
) -> AsyncIterator[dict[str, Any]]:
    """The change feed's messages (a ``snapshot`` first when asked), each change once,
    from after ``after`` (None: from now), until cancelled. A resume point retention
    dropped (410) is announced and the feed goes on from now."""
    backoff = client.backoff()
    while True:
        params, headers = {}, {}
        if after is not None:
            headers["Last-Event-ID"] = str(after)
        elif snapshot:
            params["snapshot"] = "true"
        reason = "the change feed ended"
        try:
            async for item in _sse(client, "/jobs/changes", params, headers):
                if not isinstance(item, tuple):
                    if isinstance(item, str) and "next_seq=" in item and after is None:
                        after = int(item.rpartition("=")[2]) - 1  # where "now" was
                    backoff.reset()
                    continue
                body = orjson.loads(item[2])
                if after is not None and body["seq"] <= after and body["type"] != "snapshot":
                    continue
                after, snapshot = body["seq"], False
                backoff.reset()
                yield body
        except ClientError as exc:
            if exc.status != 410:
                raise
            if client.notice is not None:
                client.notice(f"{exc.message}; some changes were missed, going on from now")
            after = None
            continue
        except _Retry as exc:
            reason = str(exc)
        await backoff.wait(reason)
