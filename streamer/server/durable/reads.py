"""Catch-up and long-poll reads: one whole answer, read through ``follow()``.

A read opens a ``Follow`` from the requested offset like any stream (counted,
tracked, logged), into a ``ReadOutlet`` that answers once:

- **catch-up** (``live`` false): the stored messages from the offset, up to
  ``ds_read_bytes``, with ``Stream-Up-To-Date`` when they reach the end;
- **long-poll**: the same when there are messages; at the tail it waits for the
  first live ones, or answers 204 after ``ds_long_poll_seconds``.

Whether an answer reaches the end is decided when the follow has settled: it has
gone live (caught up) or ended; while it still reads storage, more may come, so the
outlet waits for it unless its budget is already full. A closed stream's
``complete`` event is its end in every mode: ``Stream-Closed``, and no waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from starlette.requests import Request
from starlette.responses import Response

from ...core import messages
from ...core.durable import View, cursor
from ...core.follow import Follow, Outlet
from ...core.keys import Credential
from ...core.messages import offset
from ...core.models import Event
from ..resources import Resources
from ..transports.streaming import Answered, answer, lean

SETTLE_POLL = 0.005  # how often an outlet looks whether its follow has caught up
CACHEABLE = "private, max-age=60, stale-while-revalidate=300"


@dataclass(frozen=True)
class ReadSpec:
    view: View
    start: int
    live: bool  # long-poll
    tail_sentinel: bool  # offset=now: no ETag, never cached
    client_cursor: str | None
    if_none_match: str | None
    budget: int
    headers: dict[str, str]


def read_response(spec: ReadSpec, events: Sequence[Event], *, settled: bool) -> Response:
    """The answer for the events a read collected (``settled``: nothing more was
    stored when it stopped collecting)."""
    view, kind = spec.view, spec.view.kind
    kept: list[Event] = []
    size, closed_at = 0, None
    for event in events:
        if event.is_complete:
            closed_at = event.index
            break
        length = len(messages.message_bytes(event, kind))
        if kept and size + length > spec.budget:
            break
        kept.append(event)
        size += length
    trimmed = len(kept) < len(messages.messages(events))
    if not events and view.closed and spec.start >= view.tail:
        closed_at = view.tail
    closed = closed_at is not None and not trimmed
    next_index = kept[-1].index + 1 if kept else (closed_at if closed else spec.start)
    assert next_index is not None
    headers = {**spec.headers, "Stream-Next-Offset": offset(next_index)}
    if closed or (settled and not trimmed):
        headers["Stream-Up-To-Date"] = "true"
    if closed:
        headers["Stream-Closed"] = "true"
    elif spec.live:
        headers["Stream-Cursor"] = cursor(spec.client_cursor)
    headers["Cache-Control"] = CACHEABLE if kept and not spec.tail_sentinel else "no-store"
    if spec.live and not kept:
        return Response(status_code=204, headers=headers)
    if not spec.tail_sentinel:
        etag = f'"{view.job.id}:{spec.start}:{next_index}{":c" if closed else ""}"'
        headers["ETag"] = etag
        if matches(spec.if_none_match, etag):
            return Response(status_code=304, headers=headers)
    headers["Content-Type"] = view.content_type
    return Response(messages.body(kept, kind), headers=headers)


def matches(if_none_match: str | None, etag: str) -> bool:
    if if_none_match is None:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


class Settling:
    """What the protocol's outlets share: their follow, and a look, soon, at whether it
    has settled (caught up, or ended); while it still reads storage, another look."""

    def __init__(self) -> None:
        self.on_ready: Callable[[], None] | None = None
        self.follow: Follow | None = None
        self._settling = False

    def _settle_soon(self, delay: float) -> None:
        if not self._settling:
            self._settling = True
            asyncio.get_running_loop().call_later(delay, self._look)

    def _look(self) -> None:
        self._settling = False
        follow = self.follow
        if follow is None or follow.ended:
            return
        if follow.replaying:
            self._replaying()
            self._settle_soon(SETTLE_POLL)
        else:
            self._settled()

    def _replaying(self) -> None:
        """The follow still reads storage (more may come)."""

    def _settled(self) -> None:
        """The follow has caught up: it is live."""


class Attached(Outlet, Protocol):
    """An outlet told which follow feeds it, once that is open."""

    def attach(self, follow: Follow) -> None: ...


def open_follow(
    res: Resources,
    request: Request,
    view: View,
    start: int,
    transport: str,
    credential: Credential,
    outlet: Attached,
    *,
    live: bool = True,
) -> Follow:
    """A counted, tracked follow of ``view`` from ``start`` into ``outlet`` (ended with
    its connection on the lean path), attached to the outlet."""
    follow = res.streams.open(view.job, start, transport, credential, outlet, live=live)
    context = lean(request.scope)
    if context is not None:
        context.conn.on_lost.append(partial(follow.close, "disconnect"))
    outlet.attach(follow)
    return follow


class ReadOutlet(Settling):
    """A follow's outlet that collects the first delivery and answers it once."""

    def __init__(self, spec: ReadSpec, reply: Callable[[Response], None], timeout: float) -> None:
        super().__init__()
        self.spec = spec
        self.reply = reply
        self.timeout = timeout
        self.events: list[Event] = []
        self.size = 0
        self.done = False
        self._timer: asyncio.TimerHandle | None = None

    def attach(self, follow: Follow) -> None:
        """Called once the follow is open: a long-poll's clock starts now."""
        self.follow = follow
        if self.spec.live and not self.done:
            self._timer = asyncio.get_running_loop().call_later(self.timeout, self._answer)

    def ready(self) -> bool:
        return not self.done

    def send(self, events: Sequence[Event]) -> None:
        if self.done:
            return
        self.events.extend(events)
        self.size += sum([len(e.line) for e in events])
        follow = self.follow
        if events[-1].is_complete or self.size >= self.spec.budget:
            self._answer()
        elif follow is not None and not follow.replaying:
            self._answer()  # live events: everything there is
        else:
            self._settle_soon(0.0)

    def keepalive(self, next_index: int) -> None:
        return

    def finish(self, follow: Follow) -> None:
        self._answer()

    async def drain(self) -> None:
        return

    def _settled(self) -> None:
        if self.events:
            self._answer()

    def _answer(self) -> None:
        if self.done:
            return
        self.done = True
        if self._timer is not None:
            self._timer.cancel()
        follow = self.follow
        settled = follow is None or not follow.replaying
        self.reply(read_response(self.spec, self.events, settled=settled))
        if follow is not None and not follow.ended:
            asyncio.get_running_loop().call_soon(follow.close, "answered")


async def open_read(
    request: Request, res: Resources, credential: Credential, spec: ReadSpec
) -> Response:
    """Start a catch-up or long-poll read; its answer comes when it has one."""
    context = lean(request.scope)
    transport = "ds-poll" if spec.live else "ds-read"
    timeout = res.settings.ds_long_poll_seconds
    if context is not None:
        conn, extra = context.conn, context.headers
        outlet = ReadOutlet(spec, lambda response: answer(conn, response, extra), timeout)
        open_follow(
            res, request, spec.view, spec.start, transport, credential, outlet, live=spec.live
        )
        return Answered()
    future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()

    def reply(response: Response) -> None:
        if not future.done():
            future.set_result(response)

    outlet = ReadOutlet(spec, reply, timeout)
    follow = open_follow(
        res, request, spec.view, spec.start, transport, credential, outlet, live=spec.live
    )
    try:
        return await future
    finally:
        follow.close("disconnect")  # a no-op once it has ended
