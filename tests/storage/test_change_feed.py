"""The change feed's storage contract (``core/changes.py``, guarantee 9), on every backend.

Each write records its change in its own transaction under the user's next sequence
number; growth is throttled by the job's own clock and its trailing change is never
lost; a superseded ``grew`` change and changes past ``keep`` are dropped, the latter
raising the floor; a snapshot is consistent with the head it reports.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from streamer.core.changes import ChangePolicy, feed_key, feed_user
from streamer.core.errors import Dropped
from streamer.core.models import Event, NewEvent
from streamer.storage import Storage, open_storage

from ..support.backends import Backend, new_user
from .test_storage_contract import logs

NEVER = ChangePolicy(growth_interval_ms=10**12)  # appends never record a growth by themselves
ALWAYS = ChangePolicy(growth_interval_ms=0)  # every append records one


async def instance(backend: Backend, policy: ChangePolicy) -> Storage:
    storage = open_storage(backend.url, policy=policy)
    await storage.open()
    backend.opened.append(storage)
    return storage


async def feed(storage: Storage, user_id: int) -> list[dict[str, Any]]:
    """Every kept change of the user's feed, oldest first (``read_rows``: what is kept,
    whatever the floor)."""
    changes_of: Any = storage.changes
    entries = await changes_of.read_rows(feed_key(user_id), 0, 100_000)
    changes = [orjson.loads(e.line) for e in entries]
    for entry, change in zip(entries, changes, strict=True):
        assert (entry.index, entry.type) == (change["seq"], change["type"])
    return changes


class FeedCommits:
    """``on_commit`` for feeds only: the sequence numbers published per feed key."""

    def __init__(self) -> None:
        self.seqs: dict[str, list[int]] = {}

    def __call__(self, key: str, entries: Sequence[Event]) -> None:
        if feed_user(key) is not None:
            self.seqs.setdefault(key, []).extend(e.index for e in entries)


async def test_every_write_records_its_change_in_order(backend: Backend) -> None:
    """create, first event, PATCH, complete, delete: one change each, seq 1..5, published."""
    storage = await instance(backend, NEVER)
    commits = FeedCommits()
    storage.on_commit = commits
    uid = await new_user(storage)
    job = await storage.jobs.create_job(uid, "build", {"k": 1})
    await storage.jobs.append(uid, job.id, logs(1))  # queued -> running: updated
    await storage.jobs.append(uid, job.id, logs(3))  # growth, held back by the throttle
    await storage.jobs.update_job(uid, job.id, {"runner": "r1"})
    await storage.jobs.append(uid, job.id, [NewEvent("complete", None, True)])
    await storage.jobs.delete_job(uid, job.id)
    changes = await feed(storage, uid)
    assert [(c["seq"], c["type"]) for c in changes] == [
        (1, "created"),
        (2, "updated"),
        (3, "updated"),
        (4, "updated"),
        (5, "deleted"),
    ]
    assert [c["job"]["status"] for c in changes] == [
        "queued",
        "running",
        "running",
        "completed",
        "completed",
    ]
    assert [c["job"]["event_count"] for c in changes] == [0, 1, 4, 5, 5]
    assert changes[2]["job"]["runner"] == "r1" and changes[0]["job"]["metadata"] == {"k": 1}
    assert commits.seqs == {feed_key(uid): [1, 2, 3, 4, 5]}
    assert await storage.changes.head(uid) == (5, 0)


async def test_growth_is_throttled_and_the_trailing_growth_recorded(
    backend: Backend,
) -> None:
    """Appends inside the interval record nothing; the sweep's record does, once, with
    the count at that time; it supersedes the job's earlier grew change."""
    storage = await instance(backend, ALWAYS)
    uid = await new_user(storage)
    job = await storage.jobs.create_job(uid, None, {})
    await storage.jobs.append(uid, job.id, logs(1))  # updated (started)
    await storage.jobs.append(uid, job.id, logs(2))  # grew (interval 0)
    throttled = await instance(backend, NEVER)  # another node, whose interval never passes
    for _ in range(5):
        await throttled.jobs.append(uid, job.id, logs(1))
    assert [c["type"] for c in await feed(storage, uid)] == ["created", "updated", "grew"]
    assert await throttled.changes.pending_growth(2**62, 10) == [(uid, job.id)]
    assert await throttled.changes.record_growth(uid, job.id) is False  # not due there
    assert await storage.changes.record_growth(uid, job.id) is True
    assert await storage.changes.record_growth(uid, job.id) is False  # nothing pending now
    assert await storage.changes.pending_growth(2**62, 10) == []
    changes = await feed(storage, uid)
    assert [(c["seq"], c["type"]) for c in changes] == [(1, "created"), (2, "updated"), (4, "grew")]
    assert changes[-1]["job"]["event_count"] == 8  # seq 3, the first grew, was superseded


async def test_a_growth_left_pending_is_found_after_its_interval(
    backend: Backend,
) -> None:
    """The throttle's clock is the job's column: a sweep anywhere finds what is due."""
    storage = await instance(backend, ChangePolicy(growth_interval_ms=60_000))
    uid = await new_user(storage)
    job = await storage.jobs.create_job(uid, None, {})
    await storage.jobs.append(uid, job.id, logs(2))
    await storage.jobs.append(uid, job.id, logs(2))  # held back: the job changed just now
    assert await storage.changes.pending_growth(0, 10) == []  # not a minute old yet
    db: Any = storage.db  # type: ignore[attr-defined]
    await db.transact(_age_job(job.id))  # as if a minute had passed
    assert await storage.changes.pending_growth(10**6, 10) == [(uid, job.id)]
    assert await storage.changes.record_growth(uid, job.id) is True
    assert (await feed(storage, uid))[-1]["job"]["event_count"] == 4


def _age_job(job_id: str) -> Any:
    from streamer.storage.commands import Execute

    yield Execute("UPDATE jobs SET change_ms = 1 WHERE id = ?", (job_id,))
    return None, []


async def test_retention_keeps_the_last_changes_and_raises_the_floor(
    backend: Backend,
) -> None:
    storage = await instance(backend, ChangePolicy(growth_interval_ms=10**12, keep=5, trim_every=4))
    uid = await new_user(storage)
    jobs = [await storage.jobs.create_job(uid, f"j{i}", {}) for i in range(10)]
    head, floor = await storage.changes.head(uid)
    assert (head, floor) == (10, 3)  # trimmed at seq 4 (nothing), 8 (to 3)
    assert [c["seq"] for c in await feed(storage, uid)] == [4, 5, 6, 7, 8, 9, 10]
    for job in jobs[:6]:
        await storage.jobs.delete_job(uid, job.id)
    head, floor = await storage.changes.head(uid)
    assert (head, floor) == (16, 11)
    entries = await storage.changes.read_events(feed_key(uid), 12, 100)
    assert [e.index for e in entries] == [12, 13, 14, 15, 16]
    with pytest.raises(Dropped):  # a reader that still needs 11 is told, not served 12 on
        await storage.changes.read_events(feed_key(uid), 11, 100)


async def test_retention_sweep_records_each_deleted_job(backend: Backend) -> None:
    storage = await instance(backend, NEVER)
    a, b = await new_user(storage, "a"), await new_user(storage, "b")
    for uid in (a, b):
        job = await storage.jobs.create_job(uid, None, {})
        await storage.jobs.update_job(uid, job.id, {"status": "cancelled"})
    assert await storage.jobs.delete_finished_jobs("9999", 10) == 2
    for uid in (a, b):
        assert [c["type"] for c in await feed(storage, uid)] == ["created", "updated", "deleted"]


async def test_feeds_are_per_user(backend: Backend) -> None:
    storage = await instance(backend, NEVER)
    a, b = await new_user(storage, "a"), await new_user(storage, "b")
    await storage.jobs.create_job(a, "mine", {})
    assert await feed(storage, b) == [] and await storage.changes.head(b) == (0, 0)
    assert (await storage.changes.snapshot(b, 10)) == (0, [])
    head, jobs = await storage.changes.snapshot(a, 10)
    assert head == 1 and [j.name for j in jobs] == ["mine"]


async def test_snapshots_are_consistent_with_their_head(backend: Backend) -> None:
    """Snapshots taken while two nodes create, change and delete jobs: each equals the
    job list rebuilt from the changes up to its head; each node publishes the feed in
    strictly increasing order (the server-level two-node tests cover delivery)."""
    nodes = [await instance(backend, NEVER), await instance(backend, NEVER)]
    published = [FeedCommits(), FeedCommits()]
    for node, commits in zip(nodes, published, strict=True):
        node.on_commit = commits
    uid = await new_user(nodes[0])
    snapshots: list[tuple[int, list[dict[str, Any]]]] = []

    async def producer(node: Storage, seed: int) -> None:
        rng = random.Random(seed)
        mine: list[str] = []
        for _ in range(25):
            roll = rng.random()
            if roll < 0.4 or not mine:
                mine.append((await node.jobs.create_job(uid, f"p{seed}", {})).id)
            elif roll < 0.8:
                job_id = rng.choice(mine)
                status = (await node.jobs.get_job(uid, job_id)).status
                if status == "queued":
                    await node.jobs.update_job(uid, job_id, {"status": "running"})
                elif status == "running":
                    await node.jobs.update_job(uid, job_id, {"status": "completed"})
            else:
                await node.jobs.delete_job(uid, mine.pop(rng.randrange(len(mine))))

    async def snapshotter(node: Storage) -> None:
        for _ in range(15):
            head, jobs = await node.changes.snapshot(uid, 1000)
            snapshots.append((head, [j.public() for j in jobs]))
            await asyncio.sleep(0)

    async with asyncio.timeout(60):
        await asyncio.gather(
            *(producer(nodes[i % 2], i) for i in range(4)),
            snapshotter(nodes[0]),
            snapshotter(nodes[1]),
        )
    changes = await feed(nodes[0], uid)
    assert [c["seq"] for c in changes] == list(range(1, len(changes) + 1))
    for head, listed in snapshots:
        view: dict[str, dict[str, Any]] = {}
        for change in changes[:head]:
            if change["type"] == "deleted":
                view.pop(change["job"]["id"], None)
            else:
                view[change["job"]["id"]] = change["job"]
        expected = sorted(view.values(), key=lambda j: (j["created_at"], j["id"]), reverse=True)
        assert listed == expected, f"snapshot at {head} differs from the feed"
    for commits in published:
        seqs = commits.seqs.get(feed_key(uid), [])
        assert seqs == sorted(set(seqs)), "a node published its feed out of order or twice"


async def test_durable_streams_are_jobs_in_the_feed_too(backend: Backend) -> None:
    """A stream created with data, appended to, and deleted: its changes, in order."""
    from streamer.core.durable import AppendRequest, Config

    storage = await instance(backend, ALWAYS)
    uid = await new_user(storage)
    created, view = await storage.streams.create(
        uid, "ci/build", Config("text/plain"), None, None, [NewEvent("log", "a", None)]
    )
    assert created
    await storage.streams.append(uid, view.job.id, AppendRequest([NewEvent("log", "b", None)]))
    changes = await feed(storage, uid)
    assert [(c["type"], c["job"]["event_count"]) for c in changes] == [
        ("created", 0),
        ("updated", 1),  # its first event started it
        ("grew", 2),
    ]
    assert {c["job"]["name"] for c in changes} == {"ci/build"}
    await storage.streams.delete(uid, view.job.id)
    after = [(c["seq"], c["type"]) for c in await feed(storage, uid)]
    assert after == [(1, "created"), (2, "updated"), (4, "deleted")]  # it superseded grew
