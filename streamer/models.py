"""Jobs, events, users and keys; validation of what clients send.

An ``Event`` is encoded to its JSON line exactly once, when it is appended. Every
transport frames those same bytes, and the SSE frame is cached on the event, so a
live event fanned out to a thousand readers is serialised once, not a thousand times.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from .errors import BadRequest, Conflict, PayloadTooLarge, Unprocessable

STATUSES = ("queued", "running", "completed", "failed", "cancelled")
FINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"running", "cancelled"}),
    "running": frozenset({"completed", "failed", "cancelled"}),
}
EVENT_TYPE = re.compile(r"[a-z][a-z0-9_.-]{0,31}")
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
    was a few percent of a single-event POST. The cache is one tuple, replaced
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

    The wire forms (SSE message, HTTP chunk, WebSocket frame) are built on first use
    and kept on the event, so fan-out to a thousand readers encodes each event once.
    A plain ``__slots__`` class rather than a frozen dataclass with
    ``cached_property``: on Python 3.11 the latter takes a lock on every first access
    and the former's ``__init__`` goes through ``object.__setattr__``; together they
    were a third of the replay CPU (bench/README.md, profiles).
    """

    __slots__ = ("index", "type", "line", "_sse", "_text", "_chunk", "_frame")

    def __init__(self, index: int, type: str, line: bytes) -> None:
        self.index = index
        self.type = type
        self.line = line
        self._sse: bytes | None = None
        self._text: str | None = None
        self._chunk: bytes | None = None
        self._frame: bytes | None = None

    def __repr__(self) -> str:
        return f"Event({self.index!r}, {self.type!r}, {self.line!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return (self.index, self.type, self.line) == (other.index, other.type, other.line)

    def __hash__(self) -> int:
        return hash((self.index, self.type, self.line))

    @property
    def sse(self) -> bytes:
        """The whole SSE message; shared by every SSE reader of this event."""
        sse = self._sse
        if sse is None:
            sse = self._sse = b"id: %d\nevent: %s\ndata: %s\n\n" % (
                self.index,
                self.type.encode(),
                self.line,
            )
        return sse

    @property
    def sse_chunk(self) -> bytes:
        """The SSE message as one HTTP/1.1 chunk, for writing straight to a socket."""
        chunk = self._chunk
        if chunk is None:
            sse = self.sse
            chunk = self._chunk = b"%x\r\n%s\r\n" % (len(sse), sse)
        return chunk

    @property
    def text(self) -> str:
        """The JSON line as text, for WebSocket text frames; decoded once per event."""
        text = self._text
        if text is None:
            text = self._text = self.line.decode()
        return text

    @property
    def ws_frame(self) -> bytes:
        """The JSON line as one unmasked WebSocket text frame (RFC 6455 5.2)."""
        frame = self._frame
        if frame is None:
            frame = self._frame = ws_text_frame(self.line)
        return frame

    def decode(self) -> dict[str, Any]:
        value: dict[str, Any] = orjson.loads(self.line)
        return value

    @property
    def is_complete(self) -> bool:
        return self.type == "complete"


def ws_text_frame(payload: bytes) -> bytes:
    """A final, unmasked text frame: what a server sends (RFC 6455 5.2), no extension
    bits (the server never negotiates per-message compression)."""
    size = len(payload)
    if size < 126:
        return b"\x81" + bytes((size,)) + payload
    if size < 1 << 16:
        return b"\x81\x7e" + size.to_bytes(2, "big") + payload
    return b"\x81\x7f" + size.to_bytes(8, "big") + payload


class NewEvent:
    """An event as a producer sent it, validated, before it has an index.

    A plain ``__slots__`` class, not a frozen dataclass: a batch makes thousands, and
    the frozen ``__init__`` (``object.__setattr__`` per field) cost ~4x as much. Treat
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

    def record_append(self, last: NewEvent, count: int, now: str) -> None:
        """Move the job past an append of ``count`` events ending with ``last``: a
        ``complete`` event makes it final, any event starts a queued job. One rule for
        every backend."""
        if last.type == "complete":
            self.status = "completed" if last.success else "failed"
            self.finished_at = now
        elif self.status == "queued":
            self.status = "running"
        if self.status == "running" and self.started_at is None:
            self.started_at = now
        self.event_count += count
        self.updated_at = now

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


def apply_changes(job: Job, changes: dict[str, Any], now: str) -> NewEvent | None:
    """Check a PATCH against the job's status and apply it to ``job`` in memory.

    Returns the ``complete`` event the server must append, in the same transaction,
    when the job becomes final (API.md: every log ends with exactly one); the caller
    appends it and then sets ``job.status`` to the target, so a cancelled job stays
    ``cancelled`` rather than the ``failed`` its ``success: false`` would imply. One
    function for every backend: the state machine cannot differ between them.
    """
    status = changes.get("status")
    closing = None
    if status is not None and status != job.status:
        if status not in TRANSITIONS.get(job.status, frozenset()):
            raise Conflict(f"cannot move a {job.status} job to {status}", job_status=job.status)
        if status in FINAL_STATUSES:
            closing = NewEvent("complete", None, status == "completed")
        else:
            job.status = status
            job.started_at = job.started_at or now
    elif status is not None and job.is_final:
        raise Conflict(f"job is already {job.status}", job_status=job.status)
    for key in RUNNER_FIELDS:
        if key in changes:
            setattr(job, key, changes[key])
    job.updated_at = now
    return closing


# --- validation of client input -------------------------------------------------------


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
    return value


_exact = json.JSONDecoder(object_pairs_hook=_no_duplicates)
# The end of a key token: its closing quote, optional JSON whitespace, the colon. Inside
# a string a quote is always escaped, so every key has its own match (strings holding
# ``\":`` add more): the count is never below the number of keys in the body.
_KEY_END = re.compile(rb'"[ \t\n\r]*:')
_SCALARS = frozenset({str, int, bool, type(None)})
_PLAIN_DEPTH = 64  # deeper bodies go to the exact parser, which may hit its recursion limit


def _plain_keys(value: Any, depth: int = 0) -> int:
    """How many keys the objects in ``value`` hold, or -1 when orjson's reading of the
    body may differ from the exact parser's: a float anywhere (orjson reads integers
    beyond 64 bits as floats; any float sends the body the exact way) or nesting
    deeper than ``_PLAIN_DEPTH``."""
    kind = type(value)
    if kind is dict:
        count, items = len(value), value.values()
    elif kind is list:
        count, items = 0, value
    else:
        return -1 if kind is float else 0
    if depth >= _PLAIN_DEPTH:
        return -1
    for item in items:
        if type(item) in _SCALARS:
            continue
        if type(item) is dict:  # an event: an object of scalars, counted here, no call
            for leaf in item.values():
                if type(leaf) not in _SCALARS:
                    break
            else:
                count += len(item)
                continue
        inner = _plain_keys(item, depth + 1)
        if inner < 0:
            return -1
        count += inner
    return count


def parse_json(body: bytes) -> Any:
    """A request body as I-JSON (RFC 7493), or ``BadRequest`` saying what is wrong.

    orjson refuses what is not JSON or not UTF-8: NaN and Infinity, lone surrogates,
    a BOM, nesting past 1024 levels. It also keeps the last of duplicate keys and
    turns integers beyond 64 bits into floats, silently; so an exact parse refuses
    duplicate keys (``{"type": "log", "type": "complete"}`` must not mean whatever
    one parser picks) and returns integers as written, for the field validators to
    refuse the ones out of range.

    The exact parse is slow (a Python call per object), so it runs only when it
    could change the outcome: when orjson's value holds a float or deep nesting
    (``_plain_keys``), or when the body may hold more keys than orjson's objects do,
    i.e. a duplicate. The key tokens are bounded by the body's colons (each key has
    its own), or more tightly by ``_KEY_END``'s matches; either equal to the keys
    orjson kept proves there is no duplicate. Otherwise the result, and every error,
    is the exact parser's, as before.
    """
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", field="body") from exc
    keys = _plain_keys(value)
    if keys >= 0 and (body.count(b":") == keys or len(_KEY_END.findall(body)) == keys):
        return value
    try:
        return _exact.decode(body.decode())
    except _Duplicate as exc:
        raise BadRequest(f"request body repeats the key {exc.args[0]!r}", field="body") from exc
    except (ValueError, RecursionError) as exc:  # number too long to convert, say
        raise BadRequest(f"request body is not valid JSON: {exc}", field="body") from exc


def _check_json(value: Any, field: str, depth: int = 0) -> None:
    """Integers within 64 bits, nesting within ``MAX_METADATA_DEPTH``: what every
    client and database can hold exactly."""
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return
    if isinstance(value, int):
        if value not in INT64:
            raise Unprocessable(f"{field} holds an integer outside 64 bits", field=field)
        return
    if depth >= MAX_METADATA_DEPTH:
        raise Unprocessable(f"{field} nests deeper than {MAX_METADATA_DEPTH} levels", field=field)
    for item in value.values() if isinstance(value, dict) else value:
        _check_json(item, field, depth + 1)


def _object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Unprocessable(f"{what} must be a JSON object", field=what)
    return body


def _unknown(body: dict[str, Any], allowed: tuple[str, ...], where: str = "") -> None:
    for key in body:
        if key not in allowed:
            raise Unprocessable(f"unknown field {where}{key!r}", field=f"{where}{key}")


def _optional_text(body: dict[str, Any], key: str, limit: int, where: str = "") -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Unprocessable(f"{where}{key} must be a string or null", field=f"{where}{key}")
    if len(value.encode("utf-8", "surrogatepass")) > limit:
        raise Unprocessable(f"{where}{key} is longer than {limit} bytes", field=f"{where}{key}")
    return value


def parse_new_job(body: Any) -> tuple[str | None, dict[str, Any]]:
    body = _object(body, "body")
    _unknown(body, ("name", "metadata"))
    name = _optional_text(body, "name", MAX_NAME)
    metadata = body.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise Unprocessable("metadata must be a JSON object", field="metadata")
    _check_json(metadata, "metadata")
    if len(orjson.dumps(metadata)) > MAX_METADATA_BYTES:
        raise Unprocessable(f"metadata is larger than {MAX_METADATA_BYTES} bytes", field="metadata")
    return name, metadata


def parse_job_patch(body: Any) -> dict[str, Any]:
    body = _object(body, "body")
    _unknown(body, ("status", *RUNNER_FIELDS))
    changes: dict[str, Any] = {}
    if "status" in body:
        status = body["status"]
        if status not in STATUSES:
            raise Unprocessable(f"status must be one of {', '.join(STATUSES)}", field="status")
        changes["status"] = status
    for key in RUNNER_FIELDS:
        if key in body:
            changes[key] = _optional_text(body, key, MAX_NAME)
    if not changes:
        raise Unprocessable("nothing to change: give status or a runner field", field="body")
    return changes


def parse_event(raw: Any, max_data_bytes: int, where: str = "") -> NewEvent:
    item = _object(raw, where.rstrip(".") or "body")
    _unknown(item, ("type", "data", "success"), where)
    etype = item.get("type", "log")
    if not isinstance(etype, str) or not EVENT_TYPE.fullmatch(etype):
        raise Unprocessable(
            f"{where}type must match [a-z][a-z0-9_.-]{{0,31}}", field=f"{where}type"
        )
    data = item.get("data")
    if data is not None:
        if not isinstance(data, str):
            raise Unprocessable(f"{where}data must be a string or null", field=f"{where}data")
        if len(data) > max_data_bytes // 4 and len(data.encode()) > max_data_bytes:
            raise PayloadTooLarge(
                f"{where}data is larger than the limit of {max_data_bytes} bytes",
                field=f"{where}data",
                limit=max_data_bytes,
            )
    success = item.get("success")
    if etype == "complete":
        if not isinstance(success, bool):
            raise Unprocessable(
                f"{where}success must be true or false on a complete event",
                field=f"{where}success",
            )
    elif success is not None:
        raise Unprocessable(
            f"{where}success is only allowed on complete events", field=f"{where}success"
        )
    return NewEvent(etype, data, success)


def _parse_batch(items: list[Any], max_data_bytes: int) -> list[NewEvent]:
    """``parse_event`` for each item, with a fast path for what batches are made of:
    ``{"data": str}`` and ``{"type": t, "data": str}`` with a valid type other than
    ``complete`` and data short enough to pass without encoding it. Anything else,
    valid or not, takes ``parse_event``, which raises the same error as always; the
    field prefix (``events[i].``) is built only then.

    The shape is told by the number of keys: one key and a string ``data``, or two
    and both ``type`` and a string ``data``, leave no room for an unknown field or a
    ``success``.
    """
    short = max_data_bytes // 4  # a str of n characters encodes to at most 4n bytes
    events = []
    for i, item in enumerate(items):
        if type(item) is dict:
            data = item.get("data")
            if type(data) is str and len(data) <= short:
                size = len(item)
                if size == 1:
                    events.append(NewEvent("log", data, None))
                    continue
                etype = item.get("type")
                if size == 2 and (
                    etype == "log"
                    or (type(etype) is str and etype != "complete" and EVENT_TYPE.fullmatch(etype))
                ):
                    events.append(NewEvent(etype, data, None))
                    continue
        events.append(parse_event(item, max_data_bytes, f"events[{i}]."))
    return events


def parse_events(body: Any, max_data_bytes: int, max_batch: int) -> list[NewEvent]:
    """A single event object, or ``{"events": [...]}``; ``complete`` only last."""
    body = _object(body, "body")
    if "events" not in body:
        return [parse_event(body, max_data_bytes)]
    _unknown(body, ("events",))
    items = body["events"]
    if not isinstance(items, list) or not items:
        raise Unprocessable("events must be a non-empty array", field="events")
    if len(items) > max_batch:
        raise PayloadTooLarge(
            f"events holds {len(items)} events; the limit is {max_batch}",
            field="events",
            limit=max_batch,
        )
    events = _parse_batch(items, max_data_bytes)
    for i, event in enumerate(events[:-1]):
        if event.type == "complete":
            raise Unprocessable(
                "a complete event must be the last of its batch", field=f"events[{i}].type"
            )
    return events
