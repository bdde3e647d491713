"""Durable Streams messages as events, and offsets as indexes: the mapping, once.

A Durable Streams stream is a job; each message appended through that door is one
event of the job, so every reader of either door sees the same log:

- a ``text/*`` message whose bytes are UTF-8 is a ``log`` event whose ``data`` is
  that text;
- an ``application/json`` message is a ``json`` event whose ``data`` is the message's
  JSON text, exactly as the producer sent it (a POSTed array is split into its
  elements, each its own message and event);
- any other message (and a ``text/*`` one that is not UTF-8) is a ``bytes`` event
  whose ``data`` is the standard base64 of the bytes, so they stay byte-exact in a
  log whose ``data`` is text.

Reading goes the other way (``message_bytes``). An event appended through
``/api/v1`` reads as its ``data`` in a text or byte stream, and in a JSON stream as
its whole event JSON unless it is a ``json`` event; a job's ``complete`` event is
the stream's closure, never a message.

An offset is the index of the next message, zero-padded so that offsets sort as
text: ``0000000000000000_0000000000000041`` is ``from_index=41``. Both doors name
the same positions.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence

import orjson

from .errors import BadRequest, PayloadTooLarge, Unprocessable
from .models import Event, NewEvent

OFFSET = re.compile(r"([0-9]{16})_([0-9]{16})")
TEXT, JSON, BYTES = "text", "json", "bytes"  # how a stream's messages are kept and shown
TEXT_EVENT, JSON_EVENT, BYTES_EVENT = "log", "json", "bytes"
CHECKED_TYPES = frozenset({JSON_EVENT, BYTES_EVENT})  # whose data ``check_event_data`` checks
DEFAULT_CONTENT_TYPE = "application/octet-stream"
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
WHITESPACE = " \t\n\r"


def offset(index: int) -> str:
    """The offset naming the position before message ``index``."""
    return f"0000000000000000_{index:016d}"


def parse_offset(raw: str, field: str = "offset") -> int:
    """The index an offset names; 400 for anything this server did not mint."""
    match = OFFSET.fullmatch(raw)
    if match is None or int(match.group(1)) != 0:
        raise BadRequest(f"{field} is not an offset this server issued", field=field)
    return int(match.group(2))


def parse_content_type(raw: str, field: str = "Content-Type") -> str:
    """A ``type/subtype`` media type (parameters kept as sent), or a 400."""
    essence_part = raw.split(";", 1)[0].strip()
    kind, slash, sub = essence_part.partition("/")
    if not slash or not TOKEN.fullmatch(kind) or not TOKEN.fullmatch(sub):
        raise BadRequest(f"{field} is not a media type: {raw!r}", field=field)
    return raw.strip()


def essence(content_type: str) -> str:
    """``type/subtype`` in lower case: what two content types are compared by."""
    return content_type.split(";", 1)[0].strip().lower()


def kind_of(content_type: str) -> str:
    media = essence(content_type)
    if media == "application/json":
        return JSON
    if media.startswith("text/"):
        return TEXT
    return BYTES


def to_events(
    body: bytes,
    content_type: str,
    *,
    max_message_bytes: int,
    max_messages: int,
    empty_array: bool = False,
) -> list[NewEvent]:
    """The messages of one append's body, as the events that store them.

    ``empty_array``: whether ``[]`` is allowed (a PUT creating an empty JSON stream)
    rather than a 400 (a POST that appends nothing).
    """
    kind = kind_of(content_type)
    if kind == JSON:
        texts = json_messages(body, empty_array=empty_array)
        if len(texts) > max_messages:
            raise PayloadTooLarge(
                f"{len(texts)} messages in one append; at most {max_messages} (max_batch_events)",
                field="body",
                limit=max_messages,
            )
        events = []
        for text in texts:
            _check_size(len(text.encode("utf-8", "surrogatepass")), max_message_bytes)
            events.append(NewEvent(JSON_EVENT, text, None))
        return events
    _check_size(len(body), max_message_bytes)
    return [text_or_bytes(body) if kind == TEXT else bytes_event(body)]


def text_or_bytes(data: bytes) -> NewEvent:
    """A text message: a ``log`` event when it is UTF-8, else kept as bytes."""
    try:
        return NewEvent(TEXT_EVENT, data.decode("utf-8"), None)
    except UnicodeDecodeError:
        return bytes_event(data)


def bytes_event(data: bytes) -> NewEvent:
    return NewEvent(BYTES_EVENT, base64.b64encode(data).decode("ascii"), None)


def _check_size(size: int, limit: int) -> None:
    if size > limit:
        raise PayloadTooLarge(
            f"a message of {size} bytes; at most {limit} (max_event_bytes)",
            field="body",
            limit=limit,
        )


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


DECODER = json.JSONDecoder(parse_constant=_no_constants)


def json_messages(body: bytes, *, empty_array: bool = False) -> list[str]:
    """The JSON texts of a JSON append: the elements of a top-level array (one level
    flattened), or the one value; each exactly as sent. 400 for anything not JSON."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("the body is not UTF-8 JSON", field="body") from exc
    start, end = _skip(text, 0), len(text.rstrip(WHITESPACE))
    if start >= end:
        raise BadRequest("the body is empty; send a JSON value", field="body")
    try:
        if text[start] != "[":
            if _value_end(text, start) != end:
                raise ValueError("extra data after the JSON value")
            return [text[start:end]]
        messages: list[str] = []
        position = _skip(text, start + 1)
        if text[position : position + 1] == "]":
            position = _skip(text, position + 1)
        else:
            while True:
                stop = _value_end(text, position)
                messages.append(text[position:stop])
                position = _skip(text, stop)
                separator = text[position : position + 1]
                position = _skip(text, position + 1)
                if separator == "]":
                    break
                if separator != ",":
                    raise ValueError("expected ',' or ']' in the array")
        if position != len(text):
            raise ValueError("extra data after the JSON array")
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", field="body") from exc
    if not messages and not empty_array:
        raise BadRequest("an empty JSON array appends nothing", field="body")
    return messages


def _skip(text: str, position: int) -> int:
    while position < len(text) and text[position] in WHITESPACE:
        position += 1
    return position


def _value_end(text: str, position: int) -> int:
    return int(DECODER.raw_decode(text, position)[1])


def check_event_data(event_type: str, data: str | None, field: str = "data") -> None:
    """What ``/api/v1`` producers promise when they use a message type: a ``json``
    event holds one JSON value, a ``bytes`` event base64 (422 otherwise), so both
    doors always read a well-formed stream."""
    if event_type == JSON_EVENT:
        text = data or ""
        start, end = _skip(text, 0), len(text.rstrip(WHITESPACE))
        try:
            if start >= end or _value_end(text, start) != end:
                raise ValueError("not one JSON value")
        except (ValueError, RecursionError) as exc:
            raise Unprocessable("a json event's data must be one JSON value", field=field) from exc
    elif event_type == BYTES_EVENT:
        try:
            base64.b64decode(data or "", validate=True)
        except (binascii.Error, ValueError) as exc:
            raise Unprocessable("a bytes event's data must be base64", field=field) from exc


def message_bytes(event: Event, kind: str) -> bytes:
    """The bytes of the message an event holds, for a stream of ``kind`` (cached on
    the event, like the other transports' frames: one decode for every reader)."""
    key = "ds-" + kind
    wire = event.wire
    if wire is not None and key in wire:
        return wire[key]
    if kind == JSON and event.type != JSON_EVENT:
        form = event.line
    else:
        data = orjson.loads(event.line)["data"]
        if event.type == BYTES_EVENT:
            form = base64.b64decode(data or "")
        else:
            form = data.encode("utf-8", "surrogatepass") if data is not None else b""
    if wire is None:
        event.wire = {key: form}
    else:
        wire[key] = form
    return form


def messages(events: Sequence[Event]) -> list[Event]:
    """The events that are messages (everything but ``complete``)."""
    return [e for e in events if not e.is_complete]


def body(events: Sequence[Event], kind: str) -> bytes:
    """A read's body: the messages' bytes one after another, or for a JSON stream one
    array of them (``[]`` when there are none)."""
    parts = [message_bytes(e, kind) for e in events if not e.is_complete]
    if kind == JSON:
        return b"[" + b",".join(parts) + b"]"
    return b"".join(parts)
