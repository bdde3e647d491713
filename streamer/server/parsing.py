"""Request bodies to validated values: I-JSON parsing and API.md's field rules.

Every error names its field (``events[3].data``) and is a 4xx problem, never a 500.
The common shapes take fast paths (one orjson parse, no error strings built for
valid events); anything unusual goes through the exact checks, and
``tests/server/test_ingest_fastpath.py`` holds the two to the same results.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from ..core.errors import BadRequest, PayloadTooLarge, Unprocessable
from ..core.messages import CHECKED_TYPES, check_event_data
from ..core.models import (
    EVENT_TYPE,
    INT64,
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    MAX_NAME,
    RUNNER_FIELDS,
    STATUSES,
    UNSTORABLE,
    NewEvent,
)

SURROGATE = re.compile("[\ud800-\udfff]")


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
        value = _exact.decode(body.decode())
    except _Duplicate as exc:
        raise BadRequest(f"request body repeats the key {exc.args[0]!r}", field="body") from exc
    except (ValueError, RecursionError) as exc:  # number too long to convert, say
        raise BadRequest(f"request body is not valid JSON: {exc}", field="body") from exc
    if _has_surrogate(value):  # JSON's \ud800 escapes can name what UTF-8 cannot hold
        raise BadRequest("request body holds a lone surrogate (not UTF-8 text)", field="body")
    return value


def _has_surrogate(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        return SURROGATE.search(value) is not None
    if depth > MAX_METADATA_DEPTH + 2:
        return False  # deeper than anything accepted: refused by the field checks
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(v, depth + 1) for v in value)
    return False


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
    if UNSTORABLE.search(value):
        raise Unprocessable(
            f"{where}{key} holds a NUL character or a lone surrogate", field=f"{where}{key}"
        )
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
    if etype in CHECKED_TYPES:
        check_event_data(etype, data, f"{where}data")
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
                    or (
                        type(etype) is str
                        and etype != "complete"
                        and etype not in CHECKED_TYPES
                        and EVENT_TYPE.fullmatch(etype)
                    )
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
