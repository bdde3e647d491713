"""Jobs, events, users and keys: the values the service stores and streams.

An ``Event`` is encoded to its JSON line exactly once, when it is appended
(``encode_events``); every transport frames those same bytes. What an append or a
status change does to a job is decided in ``journal``, not here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

STATUSES = ("queued", "running", "completed", "failed", "cancelled")
FINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"running", "cancelled"}),
    "running": frozenset({"completed", "failed", "cancelled"}),
}
EVENT_TYPE = re.compile(r"[a-z][a-z0-9_.-]{0,31}")
# What a job id can be: ours are 16 URL-safe base64 characters. Anything else names
# no job, and is answered as a missing one before it reaches a database.
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Text a database column cannot hold on every backend: NUL (PostgreSQL's text type
# refuses it) and lone surrogates (not UTF-8 at all).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
RUNNER_FIELDS = ("container_id", "runner")
MAX_NAME = 200
MAX_METADATA_BYTES = 16 * 1024
MAX_METADATA_DEPTH = 32
INT64 = range(-(2**63), 2**63)


_second: tuple[int, str] = (-1, "")  # (a Unix second, its "YYYY-MM-DDTHH:MM:SS")


def utcnow() -> str:
    """ISO 8601 UTC with microseconds and ``Z``, the one timestamp format of the API.

    The same string as ``datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")`` (the
    same clock, microseconds truncated), but the date and time of day are formatted
    once per second, not per call: every append takes a timestamp, and ``strftime``
    is slow next to the rest of a small append. The cache is one tuple, replaced
    whole, so threads can share it.
    """
    global _second
    micros = time.time_ns() // 1000
    second, fraction = divmod(micros, 1_000_000)
    cached, text = _second
    if cached != second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second = (second, text)
    return f"{text}.{fraction:06d}Z"


class Event:
    """One stored event. ``line`` is its JSON encoding, made once at append time.

    ``wire`` is a cache the transports own: each keeps the framed form of the event
    there (an SSE message, a WebSocket frame) the first time it frames it, so fan-out
    to a thousand readers frames each event once. The core never reads it.
    A plain ``__slots__`` class rather than a frozen dataclass: events are made by the
    thousand per replay page, and a frozen ``__init__`` goes through
    ``object.__setattr__`` for every field.
    """

    __slots__ = ("index", "type", "line", "wire")

    def __init__(self, index: int, type: str, line: bytes) -> None:
        self.index = index
        self.type = type
        self.line = line
        self.wire: dict[str, bytes] | None = None

    def __repr__(self) -> str:
        return f"Event({self.index!r}, {self.type!r}, {self.line!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return (self.index, self.type, self.line) == (other.index, other.type, other.line)

    def __hash__(self) -> int:
        return hash((self.index, self.type, self.line))

    def decode(self) -> dict[str, Any]:
        value: dict[str, Any] = orjson.loads(self.line)
        return value

    @property
    def is_complete(self) -> bool:
        return self.type == "complete"


class NewEvent:
    """An event as a producer sent it, validated, before it has an index.

    A plain ``__slots__`` class, not a frozen dataclass: a batch makes thousands, and
    a frozen ``__init__`` goes through ``object.__setattr__`` per field. Treat
    instances as immutable.
    """

    __slots__ = ("type", "data", "success")

    def __init__(self, type: str, data: str | None, success: bool | None) -> None:
        self.type = type
        self.data = data
        self.success = success

    def __repr__(self) -> str:
        return f"NewEvent({self.type!r}, {self.data!r}, {self.success!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NewEvent):
            return NotImplemented
        return (self.type, self.data, self.success) == (other.type, other.data, other.success)

    def __hash__(self) -> int:
        return hash((self.type, self.data, self.success))

    def encode(self, index: int, timestamp: str) -> Event:
        """This event stored at ``index``: the reference encoding, which
        ``encode_events`` reproduces byte for byte, faster for a batch."""
        line = orjson.dumps(
            {
                "index": index,
                "type": self.type,
                "data": self.data,
                "success": self.success,
                "timestamp": timestamp,
            }
        )
        return Event(index, self.type, line)


def encode_events(events: Sequence[NewEvent], first: int, timestamp: str) -> list[Event]:
    """``events`` stored at ``first``, ``first + 1``, ... with their JSON lines.

    Each line is exactly ``orjson.dumps({"index", "type", "data", "success",
    "timestamp"})`` (``tests/test_ingest_fastpath.py`` pins it byte for byte), built
    from one template instead of a dict and a full ``dumps`` per event: the parts
    shared by the batch (the timestamp, each type's JSON) are encoded once, and only
    ``data`` goes through orjson per event (which also keeps its escaping exact).
    """
    dumps = orjson.dumps
    tail = b',"timestamp":%b}' % dumps(timestamp)
    types: dict[str, bytes] = {}
    stored = []
    for index, event in enumerate(events, first):
        etype, success = event.type, event.success
        type_json = types.get(etype)
        if type_json is None:
            type_json = types[etype] = dumps(etype)
        if success is None:
            success_json = b"null"
        elif success is True:
            success_json = b"true"
        elif success is False:
            success_json = b"false"
        else:  # not a valid event, but encode it as orjson would
            success_json = dumps(success)
        line = b'{"index":%d,"type":%b,"data":%b,"success":%b%b' % (
            index,
            type_json,
            dumps(event.data),
            success_json,
            tail,
        )
        stored.append(Event(index, etype, line))
    return stored


@dataclass
class Job:
    id: str
    user_id: int
    name: str | None
    status: str
    metadata: dict[str, Any]
    created_at: str
    updated_at: str
    started_at: str | None = None
    finished_at: str | None = None
    container_id: str | None = None
    runner: str | None = None
    event_count: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "metadata": self.metadata,
            "container_id": self.container_id,
            "runner": self.runner,
            "event_count": self.event_count,
            "next_index": self.event_count,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


@dataclass(frozen=True)
class User:
    id: int
    name: str
    email: str
    active: bool
    created_at: str


@dataclass(frozen=True)
class APIKey:
    id: int
    user_id: int
    name: str
    prefix: str
    created_at: str
    last_used_at: str | None
    active: bool
