"""The storage contract for what ingest indexes (guarantees 9 and 10 of ``ports.py``), on
every backend: the section index under concurrent appends from several processes,
line numbers, search over stored texts, and redaction with sealed secrets."""

from __future__ import annotations

import asyncio
import random

import pytest

from streamer.core import redact
from streamer.core.models import NewEvent
from streamer.core.search import Query
from streamer.core.text import plain_text
from streamer.storage import Storage

from ..support.backends import Backend, new_user

SECRET = "s3cr3t-Value/for+tests"
KEY = b"\x07" * 32


def logs(*data: str) -> list[NewEvent]:
    return [NewEvent("log", d, None) for d in data]


async def test_sections_are_indexed_exactly_under_concurrent_appends_from_two_nodes(
    backend: Backend,
) -> None:
    """Two processes append GitHub groups (open, line, close: one batch each, or one
    event per append) at the same time: every group is indexed, none overlaps, every
    event that opens or closes one says so, and the index survives a reopen."""
    a, b = await backend.instance(), await backend.instance()
    user = await new_user(a)
    job = await a.jobs.create_job(user, "ci", {})

    async def producer(store: Storage, name: str, batched: bool) -> None:
        for i in range(10):
            group = logs(f"::group::{name}{i}\n", f"{name} work {i}\n", "::endgroup::\n")
            if batched:
                await store.jobs.append(user, job.id, group)
            else:
                for event in group:  # other appends interleave: groups then nest
                    await store.jobs.append(user, job.id, [event])

    await asyncio.gather(producer(a, "a", True), producer(b, "b", True))
    sections = await b.jobs.sections(job.id)
    assert sorted(s.title for s in sections) == sorted(
        [f"a{i}" for i in range(10)] + [f"b{i}" for i in range(10)]
    )
    assert [s.id for s in sections] == list(range(20))
    events = await a.jobs.read_events(job.id, 0, 1000)
    for s in sections:
        assert s.depth == 0 and s.end_index == s.start_index + 2
        assert events[s.start_index].decode()["section"]["opened"][0]["id"] == s.id
        assert events[s.end_index].decode()["section"]["closed"][0]["id"] == s.id
        assert s.start_line == s.start_index + 1 and s.end_line == s.end_index + 1

    await asyncio.gather(producer(a, "c", False), producer(b, "d", False))
    await a.jobs.append(user, job.id, [NewEvent("complete", None, True)])
    await backend.close(a)
    c = await backend.instance()
    every = await c.jobs.sections(job.id)
    assert len(every) == 40 and all(s.end_index is not None for s in every)
    last = (await c.jobs.get_job(user, job.id)).event_count - 1
    # whatever the interleaving, a section contains the ones opened inside it
    for s in every:
        assert s.start_index <= s.end_index <= last  # type: ignore[operator]
        for inner in every:
            if inner.depth > s.depth and s.start_index < inner.start_index <= s.end_index:  # type: ignore[operator]
                assert inner.end_index <= s.end_index  # type: ignore[operator]


async def test_line_numbers_and_line_lookups(storage: Storage) -> None:
    user = await new_user(storage)
    job = await storage.jobs.create_job(user, "lines", {})
    await storage.jobs.append(user, job.id, logs("a\nb\n", "c", "d\n", "e\nf\ng\n"))
    assert [await storage.jobs.line_of(job.id, i) for i in range(5)] == [1, 3, 3, 4, 7]
    assert await storage.jobs.index_of_line(job.id, 2) == (0, 1)
    assert await storage.jobs.index_of_line(job.id, 3) == (2, 3)
    assert await storage.jobs.index_of_line(job.id, 6) == (3, 4)
    assert await storage.jobs.index_of_line(job.id, 99) == (3, 4)


async def test_search_reads_stored_texts_in_order_and_pages(storage: Storage) -> None:
    """Against a reference on a random log with colours; chunks and pages on the way."""
    user = await new_user(storage)
    job = await storage.jobs.create_job(user, "search", {})
    rng = random.Random(5)
    data = []
    for i in range(3000):
        word = rng.choice(["needle", "hay", "\x1b[31mnee\x1b[0mdle", "stack"])
        data.append(f"{i} {word}\n" + ("second needle\n" if i % 97 == 0 else ""))
    for start in range(0, len(data), 1000):
        await storage.jobs.append(user, job.id, logs(*data[start : start + 1000]))
    expected = []
    for index, text in enumerate(data):
        for k, line in enumerate(plain_text(text).split("\n")):
            if "needle" in line:
                expected.append((index, k, line))
    matcher = Query("NEEDLE").compile()
    found, starts, stop = await storage.jobs.search(job.id, matcher, 0, 3000, 100_000)
    assert stop is None
    assert [(f.index, f.line, f.text) for f in found] == expected
    first_lines, line = [], 1
    for text in data:
        first_lines.append(line)
        line += text.count("\n")
    assert all(starts[f.index] == first_lines[f.index] for f in found)
    got, start = [], 0
    while True:
        page, _, stop = await storage.jobs.search(job.id, matcher, start, 3000, 7)
        got.extend((f.index, f.line, f.text) for f in page)
        if stop is None:
            break
        start = stop
    assert got == expected


async def test_secrets_are_redacted_stored_sealed_and_dropped_when_the_job_ends(
    storage: Storage,
) -> None:
    rules = redact.Rules.from_setting("default", KEY)
    user = await new_user(storage)
    job = await storage.jobs.create_job(
        user, f"deploy {SECRET}", {"token": SECRET}, secrets=[SECRET], rules=rules
    )
    assert job.name == "deploy [REDACTED]" and job.metadata == {"token": "[REDACTED]"}
    assert job.redactions == 2
    stored = await storage.jobs.append(
        user, job.id, logs(f"using {SECRET}\n", "ghp_" + "x" * 36 + "\n", "clean\n"), rules=rules
    )
    assert [e.decode()["data"] for e in stored] == [
        "using [REDACTED]\n",
        "[REDACTED]\n",
        "clean\n",
    ]
    assert (await storage.jobs.get_job(user, job.id)).redactions == 4
    matcher = Query(SECRET[:6]).compile()
    assert (await storage.jobs.search(job.id, matcher, 0, 3, 10))[0] == []
    db = storage.db  # type: ignore[attr-defined]
    sealed = (await db.fetch("SELECT secrets FROM jobs WHERE id = ?", (job.id,)))[0][0]
    assert sealed is not None and SECRET.encode() not in bytes(sealed)
    await storage.jobs.append(user, job.id, [NewEvent("complete", None, True)], rules=rules)
    assert (await db.fetch("SELECT secrets FROM jobs WHERE id = ?", (job.id,)))[0][0] is None
    # a new process (another node, a restart) unseals with the same server key
    other = await storage.jobs.create_job(user, "other", {}, secrets=[SECRET], rules=rules)
    fresh = redact.Rules.from_setting("default", KEY)
    again = await storage.jobs.append(user, other.id, logs(f"{SECRET}\n"), rules=fresh)
    assert again[0].decode()["data"] == "[REDACTED]\n"


@pytest.mark.parametrize("size", [1, 40])
async def test_a_batch_is_redacted_whole(storage: Storage, size: int) -> None:
    rules = redact.Rules.from_setting("none", KEY)
    user = await new_user(storage)
    job = await storage.jobs.create_job(user, "b", {}, secrets=[SECRET], rules=rules)
    events = logs(*[f"{i} {SECRET if i % 3 == 0 else 'x'}\n" for i in range(size)])
    stored = await storage.jobs.append(user, job.id, events, rules=rules)
    assert all(SECRET not in e.line.decode() for e in stored)
    assert (await storage.jobs.get_job(user, job.id)).redactions == len(range(0, size, 3))
