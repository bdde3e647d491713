"""The Durable Streams rules without a database: messages and offsets, producer
fencing, the order of an append's checks, expiry, cursors, forks."""

from __future__ import annotations

import base64
from collections.abc import Sequence

import pytest

from streamer.core import durable, messages, producers
from streamer.core.durable import AppendRequest, Config, ForkRequest, Stream, View
from streamer.core.errors import BadRequest, Conflict, Forbidden, PayloadTooLarge, Unprocessable
from streamer.core.forks import ForkingReader, plan
from streamer.core.journal import JobState
from streamer.core.models import Event, Job, NewEvent, encode_events, utcnow
from streamer.core.producers import Claim, Position

NOW = "2026-01-01T00:00:00.000000Z"


def job(event_count: int = 0, status: str = "running") -> Job:
    return Job("j1", 1, "p", status, {}, NOW, NOW, event_count=event_count)


def stream(**fields: object) -> Stream:
    return Stream("j1", 1, "p", "text/plain", **fields)  # type: ignore[arg-type]


def events(*data: str, first: int = 0, kind: str = "log") -> list[Event]:
    return encode_events([NewEvent(kind, d, None) for d in data], first, NOW)


# messages and offsets ------------------------------------------------------------------


def test_offsets_are_zero_padded_indexes_that_sort_as_text() -> None:
    assert messages.offset(41) == "0000000000000000_0000000000000041"
    assert messages.parse_offset(messages.offset(41)) == 41
    assert sorted(messages.offset(i) for i in (10, 9, 100)) == [
        messages.offset(i) for i in (9, 10, 100)
    ]
    for bad in ("41", "0000000000000001_0000000000000000", "a", "", "0,1", "../x"):
        with pytest.raises(BadRequest):
            messages.parse_offset(bad)


def test_json_bodies_flatten_one_level_and_keep_each_text_as_sent() -> None:
    assert messages.json_messages(b' [ {"a" : 1} , [1,2],\n"x" ] ') == ['{"a" : 1}', "[1,2]", '"x"']
    assert messages.json_messages(b"[[[1]]]") == ["[[1]]"]
    assert messages.json_messages(b' {"b": 2} ') == ['{"b": 2}']
    assert messages.json_messages(b"12345678901234567890123") == ["12345678901234567890123"]
    assert messages.json_messages(b"[]", empty_array=True) == []
    for bad in (b"[]", b"{ invalid }", b"[1,]", b"[1 2]", b"NaN", b"[1] x", b"", b"\xff", b"["):
        with pytest.raises(BadRequest):
            messages.json_messages(bad)


def test_messages_become_log_json_or_bytes_events_and_read_back_byte_exact() -> None:
    def round_trip(body: bytes, content_type: str) -> tuple[str, bytes]:
        (event,) = messages.to_events(
            body, content_type, max_message_bytes=1 << 20, max_messages=10
        )
        (stored,) = encode_events([event], 0, NOW)
        kind = messages.kind_of(content_type)
        return event.type, messages.body([stored], kind)

    assert round_trip(b"h\xc3\xa9\r\n", "text/plain; charset=utf-8") == ("log", b"h\xc3\xa9\r\n")
    assert round_trip(b"\xff\x00", "text/plain") == ("bytes", b"\xff\x00")  # not UTF-8
    binary = bytes(range(256))
    assert round_trip(binary, "application/octet-stream") == ("bytes", binary)
    assert round_trip(b'{"a": 1}', "application/json") == ("json", b'[{"a": 1}]')


def test_message_limits_are_413s() -> None:
    with pytest.raises(PayloadTooLarge):
        messages.to_events(b"x" * 11, "text/plain", max_message_bytes=10, max_messages=10)
    with pytest.raises(PayloadTooLarge):
        messages.to_events(b"[1,2,3]", "application/json", max_message_bytes=10, max_messages=2)


def test_other_events_read_as_their_data_or_their_whole_json() -> None:
    log = events("plain")
    assert messages.body(log, messages.TEXT) == b"plain"
    assert messages.body(log, messages.JSON) == b"[" + log[0].line + b"]"
    done = encode_events([NewEvent("complete", None, True)], 1, NOW)
    assert messages.body([*log, *done], messages.TEXT) == b"plain"  # closure is no message


def test_api_producers_of_json_and_bytes_events_must_keep_them_well_formed() -> None:
    messages.check_event_data("json", ' [1, {"a": 2}] ')
    messages.check_event_data("bytes", base64.b64encode(b"\x00").decode())
    messages.check_event_data("log", "anything")
    for kind, data in (("json", "{"), ("json", "1 2"), ("json", None), ("bytes", "not base64!")):
        with pytest.raises(Unprocessable):
            messages.check_event_data(kind, data)


# producers ------------------------------------------------------------------------------


def test_producer_headers_come_together_as_plain_integers() -> None:
    assert producers.parse_claim(None, None, None) is None
    assert producers.parse_claim("w", "0", "7") == Claim("w", 0, 7)
    for raw in (
        ("w", "0", None),
        ("", "0", "0"),
        ("w", "1e3", "0"),
        ("w", "-1", "0"),
        ("w", "0", "1abc"),
        ("w", "01", "0"),
        ("w", str(2**53), "0"),
    ):
        with pytest.raises(BadRequest):
            producers.parse_claim(*raw)


def test_producer_fencing() -> None:
    check = producers.check
    assert check(Claim("w", 0, 0), None)
    assert check(Claim("w", 3, 0), Position(1, 9))  # a new epoch starts at 0
    assert check(Claim("w", 1, 10), Position(1, 9))
    assert not check(Claim("w", 1, 9), Position(1, 9))  # duplicates
    assert not check(Claim("w", 1, 0), Position(1, 9))
    with pytest.raises(Forbidden) as zombie:
        check(Claim("w", 0, 10), Position(1, 9))
    assert zombie.value.headers == {"Producer-Epoch": "1"}
    with pytest.raises(Conflict) as gap:
        check(Claim("w", 1, 12), Position(1, 9))
    assert gap.value.headers == {"Producer-Expected-Seq": "10", "Producer-Received-Seq": "12"}
    for bad_start in (Claim("w", 2, 1), Claim("w", 0, 5)):
        with pytest.raises(BadRequest):
            check(bad_start, Position(1, 9) if bad_start.epoch else None)


# appends --------------------------------------------------------------------------------


def test_an_append_checks_producer_then_closure_then_content_type_then_seq() -> None:
    closed = JobState(job(3, "completed"))
    duplicate = durable.append(
        stream(), closed, Position(0, 4), AppendRequest(None, claim=Claim("w", 0, 4)), NOW
    )
    assert duplicate.status == 204 and duplicate.headers["Stream-Closed"] == "true"
    with pytest.raises(Conflict) as shut:
        durable.append(stream(seq="z"), closed, None, AppendRequest(None, seq="a"), NOW)
    assert shut.value.headers["Stream-Closed"] == "true"
    assert shut.value.headers["Stream-Next-Offset"] == messages.offset(2)
    again = durable.append(stream(), closed, None, AppendRequest([], close=True), NOW)
    assert again.status == 204 and again.closed
    with pytest.raises(Conflict, match="not application/json"):
        durable.append(
            stream(seq="z"),
            JobState(job()),
            None,
            AppendRequest(None, seq="a", content_type="application/json"),
            NOW,
        )
    with pytest.raises(Conflict, match="Stream-Seq"):
        durable.append(stream(seq="2"), JobState(job()), None, AppendRequest([], seq="10"), NOW)


def test_an_append_and_close_is_one_append_that_ends_the_job() -> None:
    state = JobState(job(2))
    s = stream(ttl=60)
    outcome = durable.append(
        s,
        state,
        None,
        AppendRequest([NewEvent("log", "x", None)], close=True, seq="b", claim=Claim("w", 0, 0)),
        NOW,
    )
    assert outcome.status == 200 and outcome.closed and outcome.next_index == 3
    assert outcome.appended is not None
    assert [e.type for e in outcome.appended.events] == ["log", "complete"]
    assert outcome.position == Position(0, 0) and s.seq == "b" and s.touched_at == NOW
    assert state.job.status == "completed"


# configuration, expiry, cursors ---------------------------------------------------------


def test_configurations_compare_by_media_type_and_instant() -> None:
    same = durable.same_config
    assert same(Config("application/json"), Config("APPLICATION/JSON; charset=utf-8"))
    assert same(
        Config("a/b", expires_at=durable.parse_expires("2030-01-01T01:00:00+01:00")),
        Config("a/b", expires_at=durable.parse_expires("2030-01-01T00:00:00Z")),
    )
    assert not same(Config("a/b"), Config("a/b", closed=True))
    assert not same(Config("a/b"), Config("a/b", fork_spec="x\n\n0"))


def test_ttl_and_expiry_headers() -> None:
    assert durable.parse_ttl("3600") == 3600 and durable.parse_ttl(None) is None
    for bad in ("abc", "-1", "+60", "060", "60.5", "1e3", ""):
        with pytest.raises(BadRequest):
            durable.parse_ttl(bad)
    for bad in ("not-a-timestamp", "2030-01-01", "2030-01-01T00:00:00"):
        with pytest.raises(BadRequest):
            durable.parse_expires(bad)
    with pytest.raises(BadRequest):
        durable.expiry_headers(1, NOW)
    assert durable.is_true("TRUE") and not durable.is_true("yes") and not durable.is_true(None)


def test_expiry_slides_with_use_but_not_past_an_absolute_deadline() -> None:
    touched = "2026-01-01T00:00:00.000000Z"
    start = 1767225600.0  # that instant
    assert not durable.expired(stream(ttl=10, touched_at=touched), start + 9.9)
    assert durable.expired(stream(ttl=10, touched_at=touched), start + 10)
    assert durable.expired(stream(expires_at=touched), start)
    assert not durable.expired(stream(), start + 10**9)


def test_cursors_follow_the_clock_and_always_move_past_a_client_that_is_not_behind() -> None:
    now = durable.CURSOR_EPOCH + 20 * 1000 + 5
    assert durable.cursor(None, now) == "1000" == durable.cursor("999", now)
    for _ in range(50):
        assert 1000 < int(durable.cursor("1000", now)) <= 1000 + 180
    assert durable.cursor("junk", now) == "1000"


# forks ----------------------------------------------------------------------------------


class Store:
    """Events per job, and fork origins: an ``EventReader`` and ``Origins``."""

    def __init__(self) -> None:
        self.logs: dict[str, list[Event]] = {}
        self.forks: dict[str, tuple[str, int]] = {}

    async def read_events(self, job_id: str, from_index: int, limit: int) -> list[Event]:
        return [e for e in self.logs.get(job_id, []) if e.index >= from_index][:limit]

    async def fork_origin(self, job_id: str) -> tuple[str, int] | None:
        return self.forks.get(job_id)


def data(found: Sequence[Event]) -> list[tuple[int, str]]:
    return [(e.index, e.decode()["data"]) for e in found]


async def test_a_forking_reader_stitches_prefixes_across_a_chain() -> None:
    store = Store()
    store.logs["a"] = events("a0", "a1", "a2", "a3")
    store.logs["b"] = events("b2", "b3", first=2)
    store.forks["b"] = ("a", 2)
    store.logs["c"] = events("c3", first=3)
    store.forks["c"] = ("b", 3)
    reader = ForkingReader(store, store)
    assert data(await reader.read_events("c", 0, 10)) == [
        (0, "a0"),
        (1, "a1"),
        (2, "b2"),
        (3, "c3"),
    ]
    assert data(await reader.read_events("c", 1, 2)) == [(1, "a1"), (2, "b2")]
    assert data(await reader.read_events("b", 3, 10)) == [(3, "b3")]
    assert data(await reader.read_events("a", 4, 10)) == []


async def test_fork_points_and_sub_offsets() -> None:
    store = Store()
    store.logs["j1"] = events("hello", "world")
    text = View(job(2), stream())
    ask = ForkRequest("s", None, "", 0)
    assert (await plan(text, ask, store)).base == 2
    inside = await plan(text, ForkRequest("s", 1, "x", 3), store)
    assert inside.base == 1 and inside.first == NewEvent("log", "wor", None)
    assert (await plan(text, ForkRequest("s", 0, "x", 5), store)).base == 1
    for bad in (
        ForkRequest("s", 3, "x", 0),
        ForkRequest("s", 0, "x", 6),
        ask.__class__("s", None, "", 1),
    ):
        with pytest.raises(BadRequest):
            await plan(text, bad, store)
    as_json = View(job(4), Stream("j1", 1, "p", "application/json"))
    assert (await plan(as_json, ForkRequest("s", 1, "x", 3), store)).base == 4
    with pytest.raises(BadRequest):
        await plan(as_json, ForkRequest("s", 1, "x", 4), store)


def test_a_fork_inherits_its_source_content_type_and_expiry_unless_it_sets_its_own() -> None:
    source = View(job(), stream(ttl=3600))
    fork = ForkRequest("p", None, "", 0)
    assert durable.fork_config(source, None, None, None, False, fork) == Config(
        "text/plain", 3600, None, False, "p\n\n0"
    )
    own = durable.fork_config(source, "text/plain", None, utcnow(), False, fork)
    assert own.ttl is None and own.expires_at is not None
    with pytest.raises(Conflict):
        durable.fork_config(source, "application/json", None, None, False, fork)
