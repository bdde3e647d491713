"""The storage contract (``streamer/core/ports.py``), checked on every backend.

No HTTP: each test drives ``Storage`` directly, through the ``storage`` fixture (one
instance) or ``backend.instance()`` (several processes' worth of instances on one
database). SQLite runs on a temporary file; PostgreSQL on a fresh database created
for the test on ``STREAMER_TEST_PG`` and dropped after it. When PostgreSQL cannot be
reached, its cases are reported as skipped, with the reason, never silently absent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import Sequence

import orjson
import pytest

from streamer.core.changes import feed_user
from streamer.core.errors import Conflict, NotFound, PayloadTooLarge, Unprocessable
from streamer.core.journal import COMPLETE_DATA_ALLOWANCE
from streamer.core.models import Event, NewEvent, utcnow
from streamer.storage import Storage

from ..support.backends import Backend, new_user

# --- helpers ----------------------------------------------------------------------------


# 1,000 rounds on every backend. Appends to one job are serialised (its row lock, and
# on PostgreSQL a per-job lock in the process too), and PostgreSQL pays a durable
# commit (~3-5 ms) for each: one round after another, 1,000 took ~80 s there. So
# ROUNDS_AT_ONCE rounds run at the same time, each on its own job with its own 8
# appenders and reader: every round is still the whole interleaving it was, and
# PostgreSQL can group the commits of different jobs into one flush.
INTERLEAVINGS = int(os.environ.get("STREAMER_INTERLEAVINGS", "1000"))
ROUNDS_AT_ONCE = int(os.environ.get("STREAMER_ROUNDS_AT_ONCE", "8"))


def logs(n: int, text: str = "line") -> list[NewEvent]:
    return [NewEvent("log", f"{text} {i}\n", None) for i in range(n)]


COMPLETE_OK = NewEvent("complete", None, True)
COMPLETE_FAILED = NewEvent("complete", None, False)


class Commits:
    """An ``on_commit`` that records every call and wakes readers.

    ``wake`` is set by every commit; ``wake_for(job)`` only by that job's, so readers
    of jobs appended to at the same time do not wake each other for nothing. The
    change feed's publications (keys ``user:<id>``) are left to its own tests
    (``test_change_feed.py``).
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int]]] = []
        self.wake = asyncio.Event()
        self._by_job: dict[str, list[list[int]]] = {}
        self._wakes: dict[str, asyncio.Event] = {}

    def __call__(self, job_id: str, events: Sequence[Event]) -> None:
        if feed_user(job_id) is not None:
            return
        indexes = [e.index for e in events]
        self.calls.append((job_id, indexes))
        self._by_job.setdefault(job_id, []).append(indexes)
        self.wake.set()
        if job_id in self._wakes:
            self._wakes[job_id].set()

    def wake_for(self, job_id: str) -> asyncio.Event:
        return self._wakes.setdefault(job_id, asyncio.Event())

    def of(self, job_id: str) -> list[list[int]]:
        return list(self._by_job.get(job_id, []))


async def read_all(storage: Storage, job_id: str, total: int, wake: asyncio.Event) -> list[int]:
    """A live reader: read storage from where it is, sleep until the next commit.

    Asserts on every page that what storage shows is a contiguous run from where
    the reader is: a commit visible before an earlier one would show up as a gap.
    """
    got: list[int] = []
    while len(got) < total:
        wake.clear()  # before the read: a commit during the read is not missed
        page = await storage.jobs.read_events(job_id, len(got), 37)
        indexes = [e.index for e in page]
        assert indexes == list(range(len(got), len(got) + len(page))), "gap or reorder"
        got.extend(indexes)
        if not page:
            await wake.wait()
    return got


# --- schema and migrations --------------------------------------------------------------


async def test_open_migrates_idempotently_and_keeps_data(backend: Backend) -> None:
    """Opening again (a restart) runs no migration twice and loses nothing."""
    first = await backend.instance()
    user = await first.identity.create_user("ann", "ann@example.com")
    await backend.close(first)
    second = await backend.instance()
    third = await backend.instance()
    assert await second.identity.get_user_by_email("ann@example.com") == user
    assert await third.identity.count_users() == 1


# --- users and keys ---------------------------------------------------------------------


async def test_users_and_keys(storage: Storage) -> None:
    user = await storage.identity.create_user("ann", "ann@example.com")
    assert user.active and user.name == "ann"
    with pytest.raises(Conflict):
        await storage.identity.create_user("other", "ann@example.com")
    assert await storage.identity.get_user(user.id) == user
    assert await storage.identity.get_user_by_email("nobody@example.com") is None
    assert await storage.identity.count_users() == 1
    key = await storage.identity.create_key(user.id, "ci", "stk_abcd", "hash-1")
    other = await storage.identity.create_key(user.id, "laptop", "stk_abcd", "hash-2")
    assert [k.id for k in await storage.identity.list_keys(user.id)] == [key.id, other.id]
    candidates = await storage.identity.key_candidates("stk_abcd")
    assert sorted((h, k) for h, k, _ in candidates) == [("hash-1", key.id), ("hash-2", other.id)]
    assert all(owner == user for _, _, owner in candidates)
    assert await storage.identity.get_key(key.id) == key
    assert await storage.identity.revoke_key(key.id) is True
    assert await storage.identity.revoke_key(key.id) is False
    assert await storage.identity.revoke_key(key.id + 1000) is False
    revoked = await storage.identity.get_key(key.id)
    assert revoked is not None and not revoked.active and revoked.name == "ci"
    assert await storage.identity.get_key(key.id + 1000) is None
    assert [h for h, _, _ in await storage.identity.key_candidates("stk_abcd")] == ["hash-2"]
    assert [k.active for k in await storage.identity.list_keys(user.id)] == [False, True]


async def test_revoked_keys_and_deactivated_users_stop_counting_everywhere(
    backend: Backend,
) -> None:
    """``active_keys`` and ``key_candidates`` see another process's revocation or
    deactivation at once; ``deactivate_user`` is idempotent; ``list_users`` lists all."""
    a, b = await backend.instance(), await backend.instance()
    ann = await a.identity.create_user("ann", "ann@example.com")
    bob = await a.identity.create_user("bob", "bob@example.com")
    k1 = await a.identity.create_key(ann.id, "one", "stk_aaaa", "h1")
    k2 = await a.identity.create_key(ann.id, "two", "stk_aaaa", "h2")
    k3 = await a.identity.create_key(bob.id, "bob", "stk_bbbb", "h3")
    assert await b.identity.active_keys([]) == set()
    assert await b.identity.active_keys([k1.id, k2.id, k3.id, k3.id + 1000]) == {
        k1.id,
        k2.id,
        k3.id,
    }
    assert await a.identity.revoke_key(k1.id)
    assert await b.identity.active_keys([k1.id, k2.id, k3.id]) == {k2.id, k3.id}
    gone = await a.identity.deactivate_user("ann@example.com")
    assert gone is not None and gone.id == ann.id and not gone.active
    assert await a.identity.deactivate_user("ann@example.com") == gone
    assert await a.identity.deactivate_user("nobody@example.com") is None
    assert await b.identity.active_keys([k1.id, k2.id, k3.id]) == {k3.id}
    assert await b.identity.key_candidates("stk_aaaa") == []
    assert await b.identity.get_user(ann.id) == gone
    assert [(u.email, u.active) for u in await b.identity.list_users()] == [
        ("ann@example.com", False),
        ("bob@example.com", True),
    ]
    # Any number of ids in one query (SQLite caps bound parameters; one JSON array here).
    assert await b.identity.active_keys(list(range(-40_000, 40_000))) == {k3.id}


async def test_touch_key_records_last_use(storage: Storage) -> None:
    uid = await new_user(storage)
    key = await storage.identity.create_key(uid, "k", "stk_cccc", "hc")
    assert [k.last_used_at for k in await storage.identity.list_keys(uid)] == [None]
    await storage.identity.touch_key(key.id, "2026-01-02T03:04:05.000006Z")
    assert [k.last_used_at for k in await storage.identity.list_keys(uid)] == [
        "2026-01-02T03:04:05.000006Z"
    ]


async def test_server_secret_is_one_per_database(backend: Backend) -> None:
    """Every process on the database gets the same bytes: tokens work on every node."""
    a, b = await backend.instance(), await backend.instance()
    one, two = await asyncio.gather(
        a.identity.server_secret("stream"), b.identity.server_secret("stream")
    )
    assert one == two and len(one) == 32
    assert await a.identity.server_secret("other") != one
    await backend.close(a)
    c = await backend.instance()
    assert await c.identity.server_secret("stream") == one


# --- appends ----------------------------------------------------------------------------


async def test_append_assigns_contiguous_indexes(storage: Storage) -> None:
    commits = Commits()
    storage.on_commit = commits
    uid = await new_user(storage)
    job = await storage.jobs.create_job(uid, "build", {"b": 1, "a": [2]})
    assert (job.status, job.event_count) == ("queued", 0)
    assert [e.index for e in await storage.jobs.append(uid, job.id, logs(1))] == [0]
    batch = await storage.jobs.append(uid, job.id, logs(3, "batch"))
    assert [e.index for e in batch] == [1, 2, 3]
    stored = await storage.jobs.read_events(job.id, 0, 100)
    assert [e.index for e in stored] == [0, 1, 2, 3]
    assert stored[1:] == batch  # the very bytes that were published are the stored ones
    assert [e.index for e in await storage.jobs.read_events(job.id, 2, 1)] == [2]
    assert await storage.jobs.read_events(job.id, 4, 10) == []
    event = orjson.loads(stored[1].line)
    assert event["index"] == 1 and event["type"] == "log" and event["data"] == "batch 0\n"
    assert event["success"] is None and event["timestamp"].endswith("Z")
    assert commits.calls == [(job.id, [0]), (job.id, [1, 2, 3])]
    job = await storage.jobs.get_job(uid, job.id)
    assert (job.status, job.event_count, job.metadata) == ("running", 4, {"b": 1, "a": [2]})
    assert job.started_at is not None
    timestamps = [orjson.loads(e.line)["timestamp"] for e in stored]
    assert timestamps == sorted(timestamps)


async def test_concurrent_appenders_leave_no_gap(storage: Storage) -> None:
    """8 appenders and a live reader, over 1,000 interleavings: 0..n-1, nothing skipped.

    The reader follows through ``read_events`` woken by ``on_commit``; every batch is
    one commit, ``on_commit`` runs once per commit, in index order. Each round has its
    own job, plan and seeds; ``ROUNDS_AT_ONCE`` rounds run concurrently (see above).
    """
    commits = Commits()
    storage.on_commit = commits
    uid = await new_user(storage)
    slots = asyncio.Semaphore(ROUNDS_AT_ONCE)

    async def appender(job_id: str, sizes: list[int], rng: random.Random) -> list[list[int]]:
        done = []
        for size in sizes:
            for _ in range(rng.randint(0, 2)):
                await asyncio.sleep(0)  # vary the interleaving, not a wait
            stored = await storage.jobs.append(uid, job_id, logs(size))
            done.append([e.index for e in stored])
        return done

    async def one_round(seed: int) -> None:
        rng = random.Random(seed)
        plan = [[rng.randint(1, 3) for _ in range(rng.randint(1, 4))] for _ in range(8)]
        total = sum(map(sum, plan))
        async with slots, asyncio.timeout(30):
            job = await storage.jobs.create_job(uid, f"round {seed}", {})
            wake = commits.wake_for(job.id)
            reader = asyncio.create_task(read_all(storage, job.id, total, wake))
            results = await asyncio.gather(
                *(
                    appender(job.id, sizes, random.Random(seed * 100 + i))
                    for i, sizes in enumerate(plan)
                )
            )
            assert await reader == list(range(total)), f"round {seed}"
        published = commits.of(job.id)
        assert [i for indexes in published for i in indexes] == list(range(total)), seed
        assert sorted(published) == sorted(r for rs in results for r in rs), seed
        for sizes, done in zip(plan, results, strict=True):
            assert [len(indexes) for indexes in done] == sizes, seed

    async with asyncio.TaskGroup() as rounds:  # the first failure cancels the rest
        for seed in range(INTERLEAVINGS):
            rounds.create_task(one_round(seed))


async def test_processes_share_one_counter(backend: Backend) -> None:
    """Two storages on one database (two nodes) appending to one job: still 0..n-1.

    Each process's ``on_commit`` publishes in strictly increasing index order, never
    an index twice; together they cover every index. (On PostgreSQL a process also
    publishes the other's indexes that sit between its own, so its hub has no gap.)
    """
    a, b = await backend.instance(), await backend.instance()
    uid = await new_user(a)
    job = await a.jobs.create_job(uid, None, {})
    wake = asyncio.Event()
    per_node = {"a": Commits(), "b": Commits()}
    for name, node in (("a", a), ("b", b)):

        def on_commit(job_id: str, events: Sequence[Event], name: str = name) -> None:
            per_node[name](job_id, events)
            wake.set()

        node.on_commit = on_commit

    async def appender(node: Storage, seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(12):
            await node.jobs.append(uid, job.id, logs(rng.randint(1, 3)))
            if rng.random() < 0.5:
                await asyncio.sleep(0)

    async with asyncio.timeout(30):
        tasks = [appender(node, i) for i, node in enumerate([a, b] * 4)]
        await asyncio.gather(*tasks)
        total = (await a.jobs.get_job(uid, job.id)).event_count
        assert await read_all(b, job.id, total, wake) == list(range(total))
    covered: set[int] = set()
    for commits in per_node.values():
        flat = [i for indexes in commits.of(job.id) for i in indexes]
        assert flat == sorted(set(flat)), "on_commit out of order or repeated"
        covered.update(flat)
    assert sorted(covered) == list(range(total))

    # expected_index racing across processes: exactly one append wins
    outcomes = await asyncio.gather(
        *(node.jobs.append(uid, job.id, logs(1), expected_index=total) for node in [a, b] * 3),
        return_exceptions=True,
    )
    wins = [o for o in outcomes if isinstance(o, list)]
    assert len(wins) == 1 and wins[0][0].index == total
    assert all(
        isinstance(o, Conflict) and o.extra["next_index"] == total + 1
        for o in outcomes
        if o not in wins
    )


async def test_a_batch_is_stored_whole_or_not_at_all(storage: Storage) -> None:
    """A reader never sees part of a batch; each batch is one ``on_commit`` call."""
    commits = Commits()
    storage.on_commit = commits
    uid = await new_user(storage)
    job = await storage.jobs.create_job(uid, None, {})
    done = False
    observed: list[int] = []

    async def watcher() -> None:
        while not done:
            observed.append(len(await storage.jobs.read_events(job.id, 0, 10_000)))

    async with asyncio.timeout(30):
        task = asyncio.create_task(watcher())
        await asyncio.gather(*(storage.jobs.append(uid, job.id, logs(50)) for _ in range(12)))
        done = True
        await task
    assert all(count % 50 == 0 for count in observed), observed
    assert [len(indexes) for indexes in commits.of(job.id)] == [50] * 12


async def test_expected_index_is_exactly_once(storage: Storage) -> None:
    """A wrong ``expected_index`` stores nothing, publishes nothing, names the next index."""
    commits = Commits()
    storage.on_commit = commits
    uid = await new_user(storage)
    job = await storage.jobs.create_job(uid, None, {})
    await storage.jobs.append(uid, job.id, logs(2), expected_index=0)
    for wrong in (0, 1, 3, 1000):
        with pytest.raises(Conflict) as raised:
            await storage.jobs.append(uid, job.id, logs(5), expected_index=wrong)
        assert raised.value.extra["next_index"] == 2
    assert [e.index for e in await storage.jobs.read_events(job.id, 0, 100)] == [0, 1]
    assert commits.calls == [(job.id, [0, 1])]
    assert (await storage.jobs.get_job(uid, job.id)).event_count == 2
    outcomes = await asyncio.gather(
        *(storage.jobs.append(uid, job.id, logs(1), expected_index=2) for _ in range(6)),
        return_exceptions=True,
    )
    assert sum(isinstance(o, list) for o in outcomes) == 1
    assert sum(isinstance(o, Conflict) for o in outcomes) == 5


async def test_nothing_is_appended_after_complete(storage: Storage) -> None:
    commits = Commits()
    storage.on_commit = commits
    uid = await new_user(storage)
    job = await storage.jobs.create_job(uid, None, {})
    await storage.jobs.append(uid, job.id, [*logs(1), COMPLETE_OK])
    finished = await storage.jobs.get_job(uid, job.id)
    assert (finished.status, finished.event_count) == ("completed", 2)
    assert finished.finished_at is not None
    for attempt in (logs(1), [COMPLETE_OK], [COMPLETE_FAILED]):
        with pytest.raises(Conflict) as raised:
            await storage.jobs.append(uid, job.id, attempt)
        assert raised.value.extra["next_index"] == 2
    with pytest.raises(Conflict):
        await storage.jobs.append(uid, job.id, logs(1), expected_index=2)
    for status in ("running", "failed", "completed", "cancelled"):
        with pytest.raises(Conflict):
            await storage.jobs.update_job(uid, job.id, {"status": status})
    assert len(await storage.jobs.read_events(job.id, 0, 100)) == 2
    assert commits.calls == [(job.id, [0, 1])]
    failed = await storage.jobs.create_job(uid, None, {})
    await storage.jobs.append(uid, failed.id, [COMPLETE_FAILED])
    assert (await storage.jobs.get_job(uid, failed.id)).status == "failed"


async def test_job_bytes_are_counted_and_capped_exactly(storage: Storage) -> None:
    """byte_count is the stored lines' bytes; byte_limit refuses (nothing stored, nothing
    published) past it and accepts up to it exactly; a short complete always fits."""
    commits = Commits()
    storage.on_commit = commits
    uid = await new_user(storage)
    job = await storage.jobs.create_job(uid, None, {})
    assert await storage.jobs.job_bytes(uid, job.id) == 0
    total = sum(len(e.line) for e in await storage.jobs.append(uid, job.id, logs(3)))
    assert await storage.jobs.job_bytes(uid, job.id) == total
    nxt = NewEvent("log", "next line\n", None)
    size = len(nxt.encode(3, utcnow()).line)  # timestamps have a fixed width
    with pytest.raises(PayloadTooLarge) as raised:
        await storage.jobs.append(uid, job.id, [nxt], byte_limit=total + size - 1)
    assert raised.value.extra["limit"] == total + size - 1
    assert await storage.jobs.job_bytes(uid, job.id) == total
    assert (await storage.jobs.get_job(uid, job.id)).event_count == 3
    await storage.jobs.append(uid, job.id, [nxt], byte_limit=total + size)  # exactly the cap
    total += size
    assert await storage.jobs.job_bytes(uid, job.id) == total
    for refused in (logs(1), [NewEvent("complete", "x" * (COMPLETE_DATA_ALLOWANCE + 1), True)]):
        with pytest.raises(PayloadTooLarge):
            await storage.jobs.append(uid, job.id, refused, byte_limit=total)
    closing = NewEvent("complete", "y" * COMPLETE_DATA_ALLOWANCE, True)
    done = await storage.jobs.append(uid, job.id, [closing], byte_limit=total)
    assert (await storage.jobs.get_job(uid, job.id)).status == "completed"
    assert await storage.jobs.job_bytes(uid, job.id) == total + len(done[0].line)
    assert commits.of(job.id) == [[0, 1, 2], [3], [4]]
    with pytest.raises(NotFound):
        await storage.jobs.job_bytes(uid + 1000, job.id)
    # The complete event the server appends on cancel is counted too.
    other = await storage.jobs.create_job(uid, None, {})
    await storage.jobs.update_job(uid, other.id, {"status": "cancelled"})
    closed = await storage.jobs.read_events(other.id, 0, 10)
    assert await storage.jobs.job_bytes(uid, other.id) == len(closed[0].line)


async def test_on_commit_runs_after_commit_in_index_order(backend: Backend) -> None:
    """When ``on_commit`` runs, another process can already read those very events."""
    writer, other = await backend.instance(), await backend.instance()
    uid = await new_user(writer)
    job = await writer.jobs.create_job(uid, None, {})
    checks: list[asyncio.Task[None]] = []
    order: list[int] = []

    async def visible_elsewhere(job_id: str, events: list[Event]) -> None:
        assert await other.jobs.read_events(job_id, events[0].index, len(events)) == events

    def on_commit(job_id: str, events: Sequence[Event]) -> None:
        if feed_user(job_id) is not None:
            return
        order.extend(e.index for e in events)
        checks.append(asyncio.create_task(visible_elsewhere(job_id, list(events))))

    writer.on_commit = on_commit
    async with asyncio.timeout(30):
        await asyncio.gather(*(writer.jobs.append(uid, job.id, logs(i % 3 + 1)) for i in range(20)))
        await writer.jobs.update_job(uid, job.id, {"status": "cancelled"})
        await asyncio.gather(*checks)
    assert order == list(range(40))  # 39 log events, then the complete event


# --- jobs -------------------------------------------------------------------------------


async def test_every_read_is_scoped_by_user(storage: Storage) -> None:
    """Another user's job behaves exactly as a missing one."""
    alice, bob = await new_user(storage, "alice"), await new_user(storage, "bob")
    job = await storage.jobs.create_job(alice, None, {})
    await storage.jobs.append(alice, job.id, logs(1))
    for attempt in (
        storage.jobs.get_job(bob, job.id),
        storage.jobs.append(bob, job.id, logs(1)),
        storage.jobs.update_job(bob, job.id, {"status": "cancelled"}),
        storage.jobs.delete_job(bob, job.id),
        storage.jobs.get_job(alice, "no-such-job"),
        storage.jobs.append(alice, "no-such-job", logs(1)),
    ):
        with pytest.raises(NotFound):
            await attempt
    assert await storage.jobs.list_jobs(bob, None, 10, None) == []
    assert await storage.jobs.claim_job(bob) is None
    mine = await storage.jobs.get_job(alice, job.id)
    assert (mine.status, mine.event_count) == ("running", 1)


async def test_list_jobs_newest_first_with_cursor_and_status(storage: Storage) -> None:
    uid = await new_user(storage)
    created = [await storage.jobs.create_job(uid, f"job {i}", {}) for i in range(5)]
    await storage.jobs.update_job(uid, created[1].id, {"status": "running"})
    page = await storage.jobs.list_jobs(uid, None, 2, None)
    assert [j.id for j in page] == [created[4].id, created[3].id]
    rest = await storage.jobs.list_jobs(uid, None, 10, (page[-1].created_at, page[-1].id))
    assert [j.id for j in rest] == [created[2].id, created[1].id, created[0].id]
    running = await storage.jobs.list_jobs(uid, "running", 10, None)
    assert [j.id for j in running] == [created[1].id]


async def test_update_job_transitions_and_server_appended_complete(storage: Storage) -> None:
    """Final statuses append the ``complete`` event in the same transaction."""
    commits = Commits()
    storage.on_commit = commits
    uid = await new_user(storage)
    job = await storage.jobs.create_job(uid, None, {})
    running = await storage.jobs.update_job(uid, job.id, {"status": "running"})
    assert running.status == "running" and running.started_at is not None
    assert commits.calls == []
    with pytest.raises(Conflict) as raised:
        await storage.jobs.update_job(uid, job.id, {"status": "queued"})
    assert raised.value.extra["job_status"] == "running"
    fields = await storage.jobs.update_job(uid, job.id, {"runner": "r-1", "container_id": "c-9"})
    assert (fields.runner, fields.container_id, fields.status) == ("r-1", "c-9", "running")
    await storage.jobs.append(uid, job.id, logs(2))
    cancelled = await storage.jobs.update_job(uid, job.id, {"status": "cancelled"})
    assert (cancelled.status, cancelled.event_count) == ("cancelled", 3)
    assert cancelled.finished_at is not None
    stored = await storage.jobs.get_job(uid, job.id)
    assert (stored.status, stored.runner, stored.container_id) == ("cancelled", "r-1", "c-9")
    last = (await storage.jobs.read_events(job.id, 0, 100))[-1]
    assert (last.index, last.type, orjson.loads(last.line)["success"]) == (2, "complete", False)
    assert commits.of(job.id) == [[0, 1], [2]]
    with pytest.raises(Conflict):
        await storage.jobs.update_job(uid, job.id, {"status": "cancelled"})

    cases = [
        ("queued", "cancelled", False),
        ("running", "completed", True),
        ("running", "failed", False),
    ]
    for start, final, success in cases:
        other = await storage.jobs.create_job(uid, None, {})
        if start == "running":
            await storage.jobs.update_job(uid, other.id, {"status": "running"})
        done = await storage.jobs.update_job(uid, other.id, {"status": final})
        assert (done.status, done.event_count) == (final, 1)
        (event,) = await storage.jobs.read_events(other.id, 0, 10)
        assert event.type == "complete" and orjson.loads(event.line)["success"] is success
        assert commits.of(other.id) == [[0]]


async def test_claim_hands_each_job_out_exactly_once(backend: Backend) -> None:
    """Concurrent claims from two processes: every queued job once, oldest first."""
    a, b = await backend.instance(), await backend.instance()
    uid, other = await new_user(a), await new_user(a, "other")
    jobs = [await a.jobs.create_job(uid, f"job {i}", {}) for i in range(12)]
    theirs = await a.jobs.create_job(other, None, {})
    async with asyncio.timeout(30):
        claims = await asyncio.gather(*(node.jobs.claim_job(uid) for node in [a, b] * 8))
    claimed = [job for job in claims if job is not None]
    assert len(claimed) == 12 and claims.count(None) == 4
    assert sorted(j.id for j in claimed) == sorted(j.id for j in jobs)
    assert all(j.status == "running" and j.started_at is not None for j in claimed)
    assert (await a.jobs.get_job(other, theirs.id)).status == "queued"
    first, second = await a.jobs.create_job(uid, None, {}), await a.jobs.create_job(uid, None, {})
    assert (await b.jobs.claim_job(uid)).id == first.id  # type: ignore[union-attr]
    assert (await a.jobs.claim_job(uid)).id == second.id  # type: ignore[union-attr]


async def test_delete_removes_the_job_and_its_events(storage: Storage) -> None:
    uid = await new_user(storage)
    job = await storage.jobs.create_job(uid, None, {})
    await storage.jobs.append(uid, job.id, logs(30))
    keep = await storage.jobs.create_job(uid, None, {})
    await storage.jobs.append(uid, keep.id, logs(2))
    await storage.jobs.delete_job(uid, job.id)
    assert await storage.jobs.read_events(job.id, 0, 100) == []
    for attempt in (
        storage.jobs.get_job(uid, job.id),
        storage.jobs.append(uid, job.id, logs(1)),
        storage.jobs.delete_job(uid, job.id),
    ):
        with pytest.raises(NotFound):
            await attempt
    assert len(await storage.jobs.read_events(keep.id, 0, 100)) == 2
    assert [j.id for j in await storage.jobs.list_jobs(uid, None, 10, None)] == [keep.id]


# --- cross-process delivery -------------------------------------------------------------


async def test_watch_yields_other_processes_events_only(backend: Backend) -> None:
    """PostgreSQL: one node's ``watch()`` yields what another node committed, in order,
    and never its own commits. SQLite has one process, so it yields nothing."""
    a, b = await backend.instance(), await backend.instance()
    if backend.name == "sqlite":
        async with asyncio.timeout(5):
            assert [item async for item in a.watch()] == []
        return
    uid = await new_user(a)
    theirs, mine = await a.jobs.create_job(uid, None, {}), await a.jobs.create_job(uid, None, {})
    yielded: dict[str, list[list[int]]] = {}
    finished = asyncio.Event()

    async def consume() -> None:
        async for job_id, events in a.watch():
            yielded.setdefault(job_id, []).append([e.index for e in events])
            if job_id == theirs.id and events[-1].is_complete:
                finished.set()

    task = asyncio.create_task(consume())
    try:
        async with asyncio.timeout(30):
            await a.listening.wait()  # type: ignore[attr-defined]
            for i in range(20):
                await b.jobs.append(uid, theirs.id, logs(i % 3 + 1))
                await a.jobs.append(uid, mine.id, logs(1))
            await b.jobs.append(uid, theirs.id, [COMPLETE_OK])
            await finished.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert mine.id not in yielded
    delivered: list[int] = []
    for indexes in yielded[theirs.id]:
        assert indexes == list(range(indexes[0], indexes[0] + len(indexes)))
        delivered += [i for i in indexes if i >= len(delivered)]  # follow() dedupes
    assert delivered == list(range(40))  # 39 log events, then the complete event


async def test_retention_deletes_only_finished_jobs_before_the_cutoff(storage: Storage) -> None:
    user = await new_user(storage)
    done = await storage.jobs.create_job(user, "done", {})
    await storage.jobs.append(user, done.id, [*logs(3), NewEvent("complete", None, True)])
    cancelled = await storage.jobs.create_job(user, "cancelled", {})
    await storage.jobs.update_job(user, cancelled.id, {"status": "cancelled"})
    running = await storage.jobs.create_job(user, "running", {})
    await storage.jobs.append(user, running.id, logs(2))
    assert await storage.jobs.delete_finished_jobs("2000-01-01T00:00:00.000000Z", 10) == 0
    assert await storage.jobs.delete_finished_jobs("9999-01-01T00:00:00.000000Z", 1) == 1
    assert await storage.jobs.delete_finished_jobs("9999-01-01T00:00:00.000000Z", 10) == 1
    assert await storage.jobs.delete_finished_jobs("9999-01-01T00:00:00.000000Z", 10) == 0
    assert await storage.jobs.read_events(done.id, 0, 10) == []
    assert len(await storage.jobs.read_events(running.id, 0, 10)) == 2
    assert (await storage.jobs.get_job(user, running.id)).status == "running"


HOSTILE = ["nul\x00inside", "lone \ud800 surrogate", "\udfff"]


@pytest.mark.parametrize("text", HOSTILE, ids=["nul", "surrogate", "low-surrogate"])
async def test_hostile_strings_are_refused_or_found_missing_never_an_outage(
    storage: Storage, text: str
) -> None:
    """Text no column can hold is a 422 naming the field (or, in a lookup, nothing
    found) on every backend: never "database unavailable", never stored."""
    uid = await new_user(storage)
    job = await storage.jobs.create_job(uid, "fine", {})
    for call, name in (
        (storage.identity.create_user(text, "x@example.com"), "name"),
        (storage.identity.create_user("x", text), "email"),
        (storage.identity.create_key(uid, text, "stk_aaaa", "h"), "name"),
        (storage.jobs.create_job(uid, text, {}), "name"),
        (storage.jobs.update_job(uid, job.id, {"container_id": text}), "container_id"),
    ):
        with pytest.raises(Unprocessable) as refused:
            await call
        assert refused.value.extra["field"] == name
    for lookup in (
        storage.jobs.get_job(uid, text),
        storage.jobs.append(uid, text, logs(1)),
        storage.jobs.delete_job(uid, text),
    ):
        with pytest.raises(NotFound):
            await lookup
    assert await storage.identity.get_user_by_email(text) is None
    assert await storage.identity.deactivate_user(text) is None
    assert await storage.jobs.list_jobs(uid, text, 10, None) == []
    assert await storage.jobs.list_jobs(uid, None, 10, (text, job.id)) == []
    assert (await storage.jobs.get_job(uid, job.id)).event_count == 0  # nothing stored
    # An event's data is JSON inside the stored line: a NUL is escaped there and kept
    # exactly; a lone surrogate is not text at all.
    if "\x00" in text:
        [stored] = await storage.jobs.append(uid, job.id, [NewEvent("log", text, None)])
        assert stored.decode()["data"] == text
    else:
        with pytest.raises(Unprocessable):
            await storage.jobs.append(uid, job.id, [NewEvent("log", text, None)])


async def test_positions_beyond_64_bits_read_nothing_instead_of_failing(storage: Storage) -> None:
    uid = await new_user(storage)
    job = await storage.jobs.create_job(uid, None, {})
    await storage.jobs.append(uid, job.id, logs(3))
    assert await storage.jobs.read_events(job.id, 2**70, 10) == []
    assert len(await storage.jobs.read_events(job.id, 0, 2**70)) == 3
