"""Forks: a stream that starts as another's prefix, without copying it.

A fork is a job of its own whose events start at its fork index; the indexes below
it are its source's, in the same index space (a fork read from 0 shows the same
offsets as its source up to the fork point, then its own). ``ForkingReader`` is the
``EventReader`` every stream reads through: for a job's own events it is the
storage's read, unchanged; when a read starts below a fork's first own event, it
reads that part from the source (itself perhaps a fork) and continues with the
fork's own. So ``follow()``, the hub and the shared replay pages need not know that
forks exist, and a fork reads the same through ``/api/v1`` as through Durable
Streams.

Only a read that comes back short of its start (no rows, or rows starting later)
asks whether the job is a fork, which is one small lookup; the reads of every other
job are the storage's own.
"""

from __future__ import annotations

from typing import Protocol

from .durable import ForkPlan, ForkRequest, View
from .errors import BadRequest
from .messages import JSON, TEXT, bytes_event, message_bytes, text_or_bytes
from .models import Event
from .ports import EventReader


class Origins(Protocol):
    async def fork_origin(self, job_id: str) -> tuple[str, int] | None:
        """(source job id, fork index) of a fork; None for any other job."""


class ForkingReader:
    """``read_events`` that stitches a fork's inherited prefix to its own events."""

    def __init__(self, reader: EventReader, origins: Origins) -> None:
        self.reader = reader
        self.origins = origins

    async def read_events(self, job_id: str, from_index: int, limit: int) -> list[Event]:
        own = await self.reader.read_events(job_id, from_index, limit)
        if own and own[0].index == from_index:
            return own
        origin = await self.origins.fork_origin(job_id)
        if origin is None or from_index >= origin[1]:
            return own
        source, base = origin
        wanted = min(limit, base - from_index)
        events = await self.read_events(source, from_index, wanted)
        rest = limit - len(events)
        if len(events) == wanted and rest > 0:
            events += own[:rest]
        return events


async def plan(source: View, request: ForkRequest, reader: EventReader) -> ForkPlan:
    """The fork point ``request`` names in ``source`` (400 past its tail).

    A sub-offset counts JSON messages in a JSON stream (every message has its own
    offset here, so that is a plain fork further on), bytes of the next message in
    any other (a fork inside a message starts with a copy of its first bytes).
    """
    tail = source.tail
    anchor = tail if request.offset is None else request.offset
    if anchor > tail:
        raise BadRequest(
            "Stream-Fork-Offset is past the source stream's tail", field="Stream-Fork-Offset"
        )
    sub = request.sub
    if sub == 0:
        return ForkPlan(anchor)
    if source.kind == JSON:
        if anchor + sub > tail:
            raise _past_boundary()
        return ForkPlan(anchor + sub)
    events = await reader.read_events(source.job.id, anchor, 1) if anchor < tail else []
    if not events:
        raise _past_boundary()
    data = message_bytes(events[0], source.kind)
    if sub > len(data):
        raise _past_boundary()
    if sub == len(data):
        return ForkPlan(anchor + 1)
    part = data[:sub]
    return ForkPlan(anchor, text_or_bytes(part) if source.kind == TEXT else bytes_event(part))


def _past_boundary() -> BadRequest:
    return BadRequest(
        "Stream-Fork-Sub-Offset is past the end of the next message",
        field="Stream-Fork-Sub-Offset",
    )
