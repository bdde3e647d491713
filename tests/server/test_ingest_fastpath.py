"""The ingest fast paths give exactly what the slow, obvious code gave.

``parse_json`` skips its exact (duplicate-key, big-integer) parse when it cannot
matter, ``parse_events`` validates common events without building error strings,
and ``encode_events`` builds each stored line from a template. Each is compared
here with the code it replaced, kept verbatim below as the reference: the same
value or the same error (class, status, detail, field) for the same body, and
byte-identical stored lines.
"""

from __future__ import annotations

import json
import string
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamer.core.errors import BadRequest, PayloadTooLarge, StreamerError, Unprocessable
from streamer.core.models import EVENT_TYPE, NewEvent, encode_events
from streamer.server.parsing import _object, _unknown, parse_events, parse_json

# --- the reference: the code before the fast paths ------------------------------------


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


def reference_parse_json(body: bytes) -> Any:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", field="body") from exc
    try:
        return _exact.decode(body.decode())
    except _Duplicate as exc:
        raise BadRequest(f"request body repeats the key {exc.args[0]!r}", field="body") from exc
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", field="body") from exc


def reference_parse_event(raw: Any, max_data_bytes: int, where: str = "") -> NewEvent:
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


def reference_parse_events(body: Any, max_data_bytes: int, max_batch: int) -> list[NewEvent]:
    body = _object(body, "body")
    if "events" not in body:
        return [reference_parse_event(body, max_data_bytes)]
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
    events = [
        reference_parse_event(item, max_data_bytes, f"events[{i}].") for i, item in enumerate(items)
    ]
    for i, event in enumerate(events[:-1]):
        if event.type == "complete":
            raise Unprocessable(
                "a complete event must be the last of its batch", field=f"events[{i}].type"
            )
    return events


def reference_line(event: NewEvent, index: int, timestamp: str) -> bytes:
    return orjson.dumps(
        {
            "index": index,
            "type": event.type,
            "data": event.data,
            "success": event.success,
            "timestamp": timestamp,
        }
    )


# --- comparing outcomes ---------------------------------------------------------------


def outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    """What a call gives: its value with the exact type of every part, or its error."""
    try:
        return "value", typed(fn(*args))
    except StreamerError as exc:
        return "error", (type(exc), exc.status, exc.detail, exc.extra)


def typed(value: Any) -> Any:
    """``value`` with types spelled out: 1 == 1.0 == True, but they are not the same."""
    if isinstance(value, dict):
        return ("dict", [(k, typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    if isinstance(value, NewEvent):
        return ("event", typed(value.type), typed(value.data), typed(value.success))
    return (type(value).__name__, value)


def same_json(body: bytes) -> None:
    assert outcome(parse_json, body) == outcome(reference_parse_json, body), body[:200]


def same_events(value: Any, max_data: int = 64, max_batch: int = 8) -> None:
    new = outcome(parse_events, value, max_data, max_batch)
    assert new == outcome(reference_parse_events, value, max_data, max_batch), value


# --- parse_json -----------------------------------------------------------------------

EDGES = [
    b'{"data": "a", "data": "b"}',
    b'{"data": "a" , "data" :"b"}',
    b'{"data":"a",\n"data"\t:\r"b"}',
    b'{"a": 1, "\\u0061": 2}',
    b'{"events": [{"data": "x:y"}, {"data": "a", "data": "b"}]}',
    b'{"events": [{"data": "\\":"}, {"data": "a"}]}',
    b'{"data": "\\" : \\":"}',
    b'{"metadata": {"n": 9223372036854775808}}',
    b'{"metadata": {"n": 18446744073709551615}}',
    b'{"metadata": {"n": 18446744073709551616}}',
    b'{"metadata": {"n": -9223372036854775809}}',
    b'{"metadata": {"n": ' + b"7" * 40 + b"}}",
    b'{"n": 1.5, "m": -0.0, "k": 1e2, "j": 0.1000000000000000055511151231257827}',
    b"18446744073709551616",
    b"1.0",
    b"-0",
    b"[]",
    b"{}",
    b'""',
    b"null",
    b'{"data": ' + b"9" * 5000 + b"}",
    b'{"data": 1e400}',
    b'{"data": "\\ud800"}',
    b'\xef\xbb\xbf{"data": "x"}',
    b' {"data": "x"} \r\n',
    b'{"data": "x"} x',
    b"{}{}",
    b'{"metadata": ' + b'{"k": ' * 60 + b"1" + b"}" * 60 + b"}",
    b'{"metadata": ' + b'{"k": ' * 70 + b"1" + b"}" * 70 + b"}",
    b'{"metadata": ' + b'{"k": ' * 70 + b'{"k": 1, "k": 2}' + b"}" * 70 + b"}",
    b"[" * 1000 + b"]" * 1000,
    b"[" * 1023 + b"]" * 1023,
    b'{"data": ' + b"[" * 990 + b"]" * 990 + b"}",
    b'{"data": "tab\there"}',
    b'{"data": "nul\x00"}',
    b'{"data": "del\x7f"}',
    b'{"data": "line\\u2028sep"}',
]


@pytest.mark.parametrize("body", EDGES, ids=range(len(EDGES)))
def test_parse_json_edges(body: bytes) -> None:
    same_json(body)


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    keys = st.sampled_from(["a", "b", "data", "type", "events", "k:", '"', "\u00e9"])
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(alphabet=string.printable + "\u00e9\u2028\U0001f600", max_size=8),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.lists(st.tuples(keys, inner), max_size=4),  # pairs: duplicates possible
        ),
        max_leaves=max_leaves,
    )


def dump(value: Any, spaced: bool) -> str:
    """JSON text; a list of pairs becomes an object, repeated keys and all."""
    if isinstance(value, list) and value and all(isinstance(p, tuple) for p in value):
        sep = " : " if spaced else ":"
        return "{" + ", ".join(json.dumps(k) + sep + dump(v, spaced) for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v, spaced) for v in value) + "]"
    return json.dumps(value)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(json_values(), st.booleans())
@example([("data", "a"), ("data", "b")], False)
@example([("data", "a"), ("data", "b")], True)
@example([("events", [[("data", "x")], [("data", 1), ("data", "y")]])], False)
def test_parse_json_same_as_exact_parser(value: Any, spaced: bool) -> None:
    same_json(dump(value, spaced).encode())


# --- parse_events ---------------------------------------------------------------------


def event_items() -> st.SearchStrategy[Any]:
    fields = st.sampled_from(["type", "data", "success", "other"])
    values = st.one_of(
        st.sampled_from(["log", "complete", "step", "Log", "a" * 33, "1x", "", "a:b"]),
        st.text(max_size=20),
        st.text(min_size=14, max_size=70),  # around a limit of 64 bytes, multi-byte too
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.just([]),
        st.just({}),
    )
    return st.one_of(
        st.dictionaries(fields, values, max_size=4),
        st.fixed_dictionaries({"data": st.text(max_size=70)}),
        st.fixed_dictionaries({"type": st.just("log"), "data": st.text(max_size=30)}),
        values,
    )


@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event_items(), max_size=10), st.booleans())
def test_parse_events_same_as_before(items: list[Any], batch: bool) -> None:
    if batch:
        same_events({"events": items})
    elif items:
        same_events(items[0])


@pytest.mark.parametrize(
    "value",
    [
        {"events": [{"data": "x"}, {"type": "complete", "success": True}]},
        {"events": [{"type": "complete", "success": True}, {"data": "x"}]},
        {"events": [{"data": "é" * 16}, {"data": "é" * 17}]},  # 32 and 34 bytes, limit 32
        {"events": [{"data": "x" * 8}, {"data": "x" * 33}]},
        {"events": [{"type": "step", "data": None}, {"type": "step\n"}]},
        {"events": [{"data": "x", "success": None}, {"data": "x", "success": False}]},
        {"events": [{"data": "x"}] * 9},
        {"events": []},
        {"events": {}},
        {"events": [{"data": "x"}], "data": "y"},
    ],
)
def test_parse_events_edges(value: Any) -> None:
    same_events(value, max_data=32)


# --- encode_events --------------------------------------------------------------------


@settings(max_examples=500)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["log", "complete", "step", "a.b-c_d"]),
            st.one_of(st.none(), st.text()),
            st.sampled_from([None, True, False]),
        ),
        min_size=1,
        max_size=5,
    ),
    st.integers(min_value=0, max_value=2**62),
)
@example([("log", "~0000000001 0123456789012345678 xxx", None)], 0)
@example([("log", '\x00\x1f"\\\u2028\u2029\U0001f600\x7f</script>', None)], 7)
@example([("complete", None, True), ("complete", "bye", False)], 2**53)
def test_encoded_lines_are_byte_identical(
    spec: list[tuple[str, str | None, bool | None]], first: int
) -> None:
    events = [NewEvent(*fields) for fields in spec]
    timestamp = "2026-11-22T10:31:07.123456Z"
    stored = encode_events(events, first, timestamp)
    assert [e.line for e in stored] == [
        reference_line(e, first + i, timestamp) for i, e in enumerate(events)
    ]
    assert [(e.index, e.type) for e in stored] == [
        (first + i, e.type) for i, e in enumerate(events)
    ]
    assert [e.encode(first + i, timestamp).line for i, e in enumerate(events)] == [
        e.line for e in stored
    ]


def test_encoding_refuses_what_orjson_refuses() -> None:
    with pytest.raises(orjson.JSONEncodeError):
        reference_line(NewEvent("log", "\ud800", None), 0, "t")
    with pytest.raises(orjson.JSONEncodeError):
        encode_events([NewEvent("log", "\ud800", None)], 0, "t")


def test_stored_line_is_pinned() -> None:
    """The stored form of an event, spelled out: clients and old databases depend on it."""
    [event] = encode_events([NewEvent("log", 'a "b"\n', None)], 41, "2026-11-22T10:31:07.123456Z")
    assert event.line == (
        b'{"index":41,"type":"log","data":"a \\"b\\"\\n","success":null,'
        b'"timestamp":"2026-11-22T10:31:07.123456Z"}'
    )


# --- utcnow ---------------------------------------------------------------------------


def test_utcnow_is_datetime_strftime_of_the_same_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-second cache gives what ``datetime.now(UTC).strftime`` gave, including
    across a second, a day and a year boundary."""
    from datetime import UTC, datetime

    from streamer.core import models

    for ns in (
        1_795_000_000_123_456_789,
        1_795_000_000_999_999_999,
        1_795_000_001_000_000_000,
        1_798_761_599_999_999_000,  # 2026-12-31T23:59:59.999999
        1_798_761_600_000_000_000,  # 2027-01-01T00:00:00.000000
        1_798_761_600_000_001_999,
    ):
        monkeypatch.setattr(models.time, "time_ns", lambda ns=ns: ns)
        expected = datetime.fromtimestamp(ns // 1000 / 1e6, UTC)
        expected = expected.replace(microsecond=ns // 1000 % 1_000_000)
        assert models.utcnow() == expected.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    monkeypatch.undo()
    before = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    now = models.utcnow()
    assert before <= now <= datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
