"""The Durable Streams writes (``ports.Streams``), checked on every backend: creation is
idempotent, an append and its producer's position commit together, closing ends the
job, forks read their source's prefix, deletion keeps what forks read."""

from __future__ import annotations

import pytest

from streamer.core import durable
from streamer.core.durable import AppendRequest, Config, ForkPlan
from streamer.core.errors import BadRequest, Conflict, Forbidden, Gone, NotFound
from streamer.core.forks import ForkingReader
from streamer.core.messages import to_events
from streamer.core.models import NewEvent, utcnow
from streamer.core.producers import Claim
from streamer.storage import Storage

from ..support.backends import Backend, new_user

TEXT = Config("text/plain")


def text(*parts: str) -> list[NewEvent]:
    return [NewEvent("log", p, None) for p in parts]


async def stored(storage: Storage, job_id: str) -> list[str | None]:
    reader = ForkingReader(storage.jobs, storage.streams)
    return [e.decode()["data"] for e in await reader.read_events(job_id, 0, 1000)]


async def test_create_is_idempotent_on_the_same_configuration(storage: Storage) -> None:
    uid = await new_user(storage)
    created, view = await storage.streams.create(uid, "a/b", TEXT, None, None, text("x"))
    assert created and view.tail == 1 and view.job.name == "a/b"
    again, same = await storage.streams.create(uid, "a/b", Config("TEXT/PLAIN"), None, None, [])
    assert not again and same.job.id == view.job.id and same.tail == 1
    for other in (
        Config("application/json"),
        Config("text/plain", ttl=5),
        Config("text/plain", closed=True),
    ):
        with pytest.raises(Conflict):
            await storage.streams.create(uid, "a/b", other, None, None, [])
    found = await storage.streams.find(uid, "a/b")
    assert found is not None and found.job.id == view.job.id
    by_id = await storage.streams.find(uid, view.job.id)  # a job is also at its id
    assert by_id is not None and by_id.stream is not None and by_id.stream.path == "a/b"


async def test_paths_are_per_user(storage: Storage) -> None:
    alice, bob = await new_user(storage, "alice"), await new_user(storage, "bob")
    _, mine = await storage.streams.create(alice, "shared", TEXT, None, None, text("a"))
    assert await storage.streams.find(bob, "shared") is None
    assert await storage.streams.find(bob, mine.job.id) is None
    created, theirs = await storage.streams.create(bob, "shared", TEXT, None, None, [])
    assert created and theirs.job.id != mine.job.id
    with pytest.raises(NotFound):
        await storage.streams.append(bob, mine.job.id, AppendRequest(text("x")))


async def test_an_append_and_its_producer_position_commit_together(backend: Backend) -> None:
    """A retry seen by another process (another node, or the same after a restart) is a
    duplicate: the position was committed with the events."""
    first = await backend.instance()
    uid = await new_user(first)
    _, view = await first.streams.create(uid, "p", TEXT, None, None, [])
    job = view.job.id

    def claim(epoch: int, seq: int) -> AppendRequest:
        return AppendRequest(text(f"{epoch}:{seq}"), claim=Claim("w", epoch, seq))

    assert (await first.streams.append(uid, job, claim(0, 0))).status == 200
    assert (await first.streams.append(uid, job, claim(0, 1))).status == 200
    second = await backend.instance()
    retry = await second.streams.append(uid, job, claim(0, 1))
    assert retry.status == 204 and retry.headers["Producer-Seq"] == "1" and retry.appended is None
    with pytest.raises(Conflict) as gap:
        await second.streams.append(uid, job, claim(0, 3))
    assert gap.value.headers["Producer-Expected-Seq"] == "2"
    assert (await second.streams.append(uid, job, claim(1, 0))).status == 200
    with pytest.raises(Forbidden) as zombie:
        await first.streams.append(uid, job, claim(0, 2))
    assert zombie.value.headers["Producer-Epoch"] == "1"
    with pytest.raises(BadRequest):
        await first.streams.append(uid, job, claim(2, 1))
    assert await stored(second, job) == ["0:0", "0:1", "1:0"]


async def test_closing_ends_the_job_and_refuses_more(storage: Storage) -> None:
    uid = await new_user(storage)
    _, view = await storage.streams.create(uid, "c", TEXT, None, None, text("a"))
    job = view.job.id
    done = await storage.streams.append(uid, job, AppendRequest(text("b"), close=True))
    assert done.closed and done.next_index == 2 and done.headers["Stream-Closed"] == "true"
    final = await storage.jobs.get_job(uid, job)
    assert final.status == "completed" and final.event_count == 3  # a, b, complete
    with pytest.raises(Conflict) as refused:
        await storage.streams.append(uid, job, AppendRequest(text("c")))
    assert refused.value.headers == {
        "Stream-Closed": "true",
        "Stream-Next-Offset": "0000000000000000_0000000000000002",
    }
    again = await storage.streams.append(uid, job, AppendRequest([], close=True))
    assert again.status == 204 and again.closed
    assert await stored(storage, job) == ["a", "b", None]


async def test_stream_seq_regression_and_content_type_are_conflicts(storage: Storage) -> None:
    uid = await new_user(storage)
    _, view = await storage.streams.create(uid, "s", TEXT, None, None, [])
    job = view.job.id
    await storage.streams.append(uid, job, AppendRequest(text("1"), seq="2"))
    for bad in (AppendRequest(text("x"), seq="10"), AppendRequest(None, content_type="a/b")):
        with pytest.raises(Conflict):
            await storage.streams.append(uid, job, bad)
    await storage.streams.append(uid, job, AppendRequest(text("2"), seq="3"))
    assert await stored(storage, job) == ["1", "2"]


async def test_forks_read_their_source_prefix_without_copying(storage: Storage) -> None:
    uid = await new_user(storage)
    _, source = await storage.streams.create(uid, "src", TEXT, None, None, text("A", "B", "C"))
    fork_config = Config("text/plain", fork_spec="src\n\n0")
    _, fork = await storage.streams.create(
        uid, "fork", fork_config, ForkPlan(2, NewEvent("log", "c", None)), "src", text("d")
    )
    assert fork.job.event_count == 4 and fork.tail == 4
    await storage.streams.append(uid, source.job.id, AppendRequest(text("D")))
    assert await stored(storage, fork.job.id) == ["A", "B", "c", "d"]
    assert await storage.streams.fork_origin(fork.job.id) == (source.job.id, 2)
    assert await storage.streams.fork_origin(source.job.id) is None
    _, grandchild = await storage.streams.create(
        uid, "g", Config("text/plain", fork_spec="fork\n\n0"), ForkPlan(3), "fork", []
    )
    assert await stored(storage, grandchild.job.id) == ["A", "B", "c"]


async def test_a_source_with_forks_is_only_marked_deleted(storage: Storage) -> None:
    uid = await new_user(storage)
    _, src = await storage.streams.create(uid, "s0", TEXT, None, None, text("x"))
    spec = Config("text/plain", fork_spec="s0\n\n0")
    _, mid = await storage.streams.create(uid, "s1", spec, ForkPlan(1), "s0", text("y"))
    _, leaf = await storage.streams.create(
        uid, "s2", Config("text/plain", fork_spec="s1\n\n0"), ForkPlan(2), "s1", []
    )
    with pytest.raises(Conflict):  # the /api/v1 door refuses too
        await storage.jobs.delete_job(uid, src.job.id)
    assert await storage.streams.delete(uid, src.job.id) == (True, [])
    assert await storage.streams.delete(uid, mid.job.id) == (True, [])
    with pytest.raises(Gone):
        await storage.streams.delete(uid, mid.job.id)
    with pytest.raises(Conflict):  # a marked path cannot be created again
        await storage.streams.create(uid, "s0", TEXT, None, None, [])
    assert await stored(storage, leaf.job.id) == ["x", "y"]
    soft, removed = await storage.streams.delete(uid, leaf.job.id)
    assert not soft and removed == [leaf.job.id, mid.job.id, src.job.id]
    for job in (src, mid, leaf):
        with pytest.raises(NotFound):
            await storage.jobs.get_job(uid, job.job.id)
    created, _ = await storage.streams.create(uid, "s0", TEXT, None, None, [])
    assert created


async def test_retention_keeps_the_sources_of_forks(storage: Storage) -> None:
    uid = await new_user(storage)
    _, src = await storage.streams.create(
        uid, "r", Config("text/plain", closed=True), None, None, text("x")
    )
    await storage.streams.create(
        uid, "rf", Config("text/plain", fork_spec="r\n\n0"), ForkPlan(1), "r", []
    )
    assert await storage.jobs.delete_finished_jobs("9999-12-31T00:00:00.000000Z", 100) == 0
    assert (await storage.jobs.get_job(uid, src.job.id)).is_final


async def test_an_expired_stream_is_removed_and_its_path_free(storage: Storage) -> None:
    uid = await new_user(storage)
    _, view = await storage.streams.create(
        uid, "t", Config("text/plain", ttl=0), None, None, text("old")
    )
    assert view.stream is not None and durable.expired(view.stream)
    created, fresh = await storage.streams.create(uid, "t", TEXT, None, None, text("new"))
    assert created and fresh.job.id != view.job.id
    with pytest.raises(NotFound):
        await storage.jobs.get_job(uid, view.job.id)
    _, short = await storage.streams.create(uid, "u", Config("text/plain", ttl=0), None, None, [])
    assert await storage.streams.expire(uid, short.job.id) == (False, [short.job.id])
    _, long = await storage.streams.create(uid, "v", Config("text/plain", ttl=60), None, None, [])
    assert await storage.streams.expire(uid, long.job.id) is None
    await storage.streams.touch(long.job.id)
    refreshed = await storage.streams.find(uid, "v")
    assert refreshed is not None and refreshed.stream is not None
    assert refreshed.stream.touched_at is not None and refreshed.stream.touched_at >= utcnow()[:10]


async def test_json_messages_are_events_of_the_same_log(storage: Storage) -> None:
    uid = await new_user(storage)
    events = to_events(
        b'[{"a": 1}, [2, 3], "x"]', "application/json", max_message_bytes=100, max_messages=10
    )
    _, view = await storage.streams.create(uid, "j", Config("application/json"), None, None, events)
    page = await storage.jobs.read_events(view.job.id, 0, 10)
    assert [(e.type, e.decode()["data"]) for e in page] == [
        ("json", '{"a": 1}'),
        ("json", "[2, 3]"),
        ("json", '"x"'),
    ]
