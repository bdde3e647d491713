"""Soak: a mixed load on a real ``streamer serve`` process, then back to baseline.

About 100 jobs at any time, each written by one producer with ``expected_index``
(so every acknowledged index is known), finished and replaced by new jobs as they
grow; readers join and leave all the time over SSE, WebSocket and the text log,
from the start or from the middle, and check every event they get (index order, no
gap, no duplicate, the data written at that index). The load runs in rounds; after
each round, with no client connected, the server's RSS, open file descriptors
(``/proc/PID/fd``) and asyncio tasks (``streamer_tasks``) are measured. The WAL
file's size is sampled during the load.

Tolerances, and why:

- **file descriptors**: baseline + 4. Every socket of the load is closed; the
  database files and listening socket are fixed; 4 covers the probe's own
  connection and a socket still in TIME_WAIT teardown.
- **tasks**: baseline + 2: every stream's tasks end with it (the scrape's own task
  is in both counts).
- **RSS**: the first round warms caches that stay (SQLite's page cache, up to 2 MB
  per connection, pymalloc arenas, interned frames); after that, idle RSS must not
  grow: last round <= first round + 10 MB, and <= baseline + 80 MB at the end
  (after reading every job back once more).
- **WAL**: at most 64 MB. SQLite checkpoints at 1,000 pages (~4 MB); the file
  keeps its largest size, and a checkpoint that cannot reset (a reader holding an
  old snapshot) lets it grow; 16 times the threshold means checkpoints keep up.

Always on: ``test_soak_short`` (two rounds of 6 s). Behind ``--run-slow``:
``test_soak``, ``STREAMER_SOAK_SECONDS`` long (default 300), in rounds of 60 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from ..support.clients import ws_events
from ..support.procs import ServerProcess

JOBS = "/api/v1/jobs"
LIVE_JOBS = 100
PRODUCERS = 10
READERS = 30


@dataclass
class Probe:
    rss_mb: float
    fds: int
    sockets: int
    tasks: int

    def __str__(self) -> str:
        return (
            f"RSS {self.rss_mb:.1f} MB, {self.fds} fds ({self.sockets} sockets), {self.tasks} tasks"
        )


@dataclass
class Load:
    server: ServerProcess
    client: httpx.AsyncClient  # a new one each round: its idle keep-alives end with it
    jobs: dict[str, int] = field(default_factory=dict)  # job -> next index acknowledged
    finished: set[str] = field(default_factory=set)
    delivered: dict[str, int] = field(default_factory=lambda: {"sse": 0, "ws": 0, "text": 0})
    reads: int = 0
    appends: int = 0
    errors: list[str] = field(default_factory=list)
    max_wal: int = 0

    def check(self, job: str, start: int, indexes: list[int], data: list[str | None]) -> None:
        """What a reader got: consecutive indexes from ``start``, each with its data."""
        if indexes != list(range(start, start + len(indexes))):
            self.errors.append(f"{job}: from {start} got {indexes[:5]}...{indexes[-5:]}")
        for index, text in zip(indexes, data, strict=True):
            if text is not None and text != f"{job}:{index}\n":
                self.errors.append(f"{job}: index {index} holds {text!r}")
                return


def data(job: str, index: int) -> dict[str, str]:
    return {"data": f"{job}:{index}\n"}


async def producer(load: Load, mine: list[str], until: float) -> None:
    """Appends small batches to its own jobs; finishes a job past a few hundred events
    and starts a new one in its place (so jobs come and go)."""
    while time.monotonic() < until:
        slot = random.randrange(len(mine))
        job = mine[slot]
        first = load.jobs[job]
        batch = [data(job, first + i) for i in range(random.randint(1, 20))]
        r = await load.client.post(
            f"{JOBS}/{job}/events", params={"expected_index": first}, json={"events": batch}
        )
        if r.status_code != 201 or r.json()["first_index"] != first:
            load.errors.append(f"append to {job} at {first}: {r.status_code} {r.text[:200]}")
            return
        load.jobs[job] = first + len(batch)
        load.appends += 1
        if load.jobs[job] > random.randint(200, 400):
            await finish(load, job)
            mine[slot] = await new_job(load)
        await asyncio.sleep(random.uniform(0, 0.02))


async def new_job(load: Load) -> str:
    r = await load.client.post(JOBS, json={"name": "soak"})
    assert r.status_code == 201, r.text
    job: str = r.json()["id"]
    load.jobs[job] = 0
    return job


async def finish(load: Load, job: str) -> None:
    r = await load.client.post(
        f"{JOBS}/{job}/events",
        params={"expected_index": load.jobs[job]},
        json={"type": "complete", "success": True},
    )
    if r.status_code != 201:
        load.errors.append(f"complete {job}: {r.status_code} {r.text[:200]}")
        return
    load.jobs[job] += 1
    load.finished.add(job)


async def read_sse(load: Load, job: str, start: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", load.server.port)
    writer.write(
        f"GET {JOBS}/{job}/events/stream?from_index={start} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {load.server.key}\r\nConnection: close\r\n\r\n".encode()
    )
    indexes: list[int] = []
    texts: list[str | None] = []
    try:
        async for line in reader:
            if line.startswith(b"data: "):
                event = json.loads(line[6:])
                indexes.append(event["index"])
                texts.append(event["data"] if event["type"] == "log" else None)
    finally:
        writer.close()
        load.check(job, start, indexes, texts)
        load.delivered["sse"] += len(indexes)


async def read_ws(load: Load, job: str, start: int) -> None:
    indexes: list[int] = []
    texts: list[str | None] = []
    params = {"from_index": start}
    async with ws_events(load.server.url.replace("http", "ws"), job, load.server.key, params) as ws:
        try:
            async for frame in ws:
                for line in str(frame).split("\n"):
                    event = json.loads(line)
                    indexes.append(event["index"])
                    texts.append(event["data"] if event["type"] == "log" else None)
        except websockets.ConnectionClosedError:
            pass
        finally:
            load.check(job, start, indexes, texts)
            load.delivered["ws"] += len(indexes)


async def read_text(load: Load, job: str, start: int) -> None:
    received = b""
    params = {"follow": "true", "from_index": str(start)}
    try:
        async with load.client.stream("GET", f"{JOBS}/{job}/log", params=params) as r:
            async for chunk in r.aiter_bytes():
                received += chunk
    finally:
        lines = received.decode().split("\n")[:-1]  # whole lines only
        load.check(job, start, [start + i for i in range(len(lines))], [f"{x}\n" for x in lines])
        load.delivered["text"] += len(lines)


async def reader(load: Load, until: float) -> None:
    """Joins a random job (often a finished one) at its start or middle, reads for a
    moment or to the end, leaves; again and again."""
    transports = (read_sse, read_ws, read_text)
    while time.monotonic() < until:
        job = random.choice(list(load.jobs))
        start = random.choice([0, random.randint(0, load.jobs[job])])
        try:
            async with asyncio.timeout(random.uniform(0.1, 1.5)):
                await random.choice(transports)(load, job, start)
        except TimeoutError:
            pass  # the reader leaves in the middle: what it got so far was checked
        load.reads += 1


async def watch_wal(load: Load, until: float) -> None:
    wal = load.server.db.with_name(load.server.db.name + "-wal")
    while time.monotonic() < until:
        with contextlib.suppress(FileNotFoundError):
            load.max_wal = max(load.max_wal, wal.stat().st_size)
        await asyncio.sleep(0.25)


def metric(text: str, name: str) -> float:
    line = next(x for x in text.splitlines() if x.startswith(name + " "))
    return float(line.rsplit(" ", 1)[1])


async def probe(server: ServerProcess) -> Probe:
    """The server at rest (the load's clients closed): wait until no stream is open,
    then read /proc and the task gauge, over one connection of its own."""
    assert server.proc is not None
    pid = server.proc.pid
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        async with asyncio.timeout(15):
            while True:
                text = (await client.get("/metrics")).text
                open_streams = sum(
                    float(x.rsplit(" ", 1)[1])
                    for x in text.splitlines()
                    if x.startswith("streamer_live_readers{")
                )
                if open_streams == 0:
                    break
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # sockets of the finished streams finish closing
        text = (await client.get("/metrics")).text
        status = Path(f"/proc/{pid}/status").read_text()
        rss_kb = int(next(x for x in status.splitlines() if x.startswith("VmRSS:")).split()[1])
        links = []
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(FileNotFoundError):
                links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        sockets = sum(1 for link in links if link.startswith("socket:"))
        return Probe(rss_kb / 1024, len(links), sockets, int(metric(text, "streamer_tasks")))


async def warm_up(load: Load) -> None:
    """Every kind of request once, so lazily imported code and caches are in the baseline."""
    job = await new_job(load)
    for i in range(3):
        await load.client.post(f"{JOBS}/{job}/events", json=data(job, i))
    load.jobs[job] = 3
    await finish(load, job)
    await read_sse(load, job, 0)
    await read_ws(load, job, 0)
    await read_text(load, job, 0)


async def soak(tmp_path: Path, seconds: float, round_seconds: float) -> None:
    server = ServerProcess(
        tmp_path / "soak.db",
        env={"STREAMER_MAX_STREAMS_PER_USER": "1000", "STREAMER_KEEPALIVE_SECONDS": "2"},
    )
    await asyncio.to_thread(server.start)
    headers = {"Authorization": f"Bearer {server.key}"}

    def new_client() -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30)

    try:
        load = Load(server, new_client())
        async with load.client:
            await warm_up(load)
        base = await probe(server)
        rounds: list[Probe] = []
        deadline = time.monotonic() + seconds
        async with new_client() as load.client:
            jobs = [await new_job(load) for _ in range(LIVE_JOBS)]
        shares = [jobs[i::PRODUCERS] for i in range(PRODUCERS)]
        while time.monotonic() < deadline - 1:
            until = min(deadline, time.monotonic() + round_seconds)
            async with new_client() as load.client:
                await asyncio.gather(
                    *(producer(load, mine, until) for mine in shares),
                    *(reader(load, until) for _ in range(READERS)),
                    watch_wal(load, until),
                )
            assert not load.errors, load.errors[:5]
            rounds.append(await probe(server))
            print(f"round {len(rounds)}: {rounds[-1]}")
        async with new_client() as load.client:
            for job in [j for j in load.jobs if j not in load.finished]:
                await finish(load, job)
            await verify_stored(load)
        after = await probe(server)
    finally:
        server.kill()
    print(
        f"soak {seconds:.0f} s: {load.appends} appends to {len(load.jobs)} jobs "
        f"({sum(load.jobs.values())} events), {load.reads} reader sessions, delivered "
        f"{load.delivered}; baseline {base}; after {after}; max WAL "
        f"{load.max_wal / 2**20:.1f} MB"
    )
    assert not load.errors, load.errors[:5]
    # The load really ran: 10 appends/s is a small fraction of what this 2-core
    # machine does under other load (70/s and more measured); far below it, appends
    # are stalling (seconds each), which is a bug the rest would not show.
    assert load.appends >= 10 * seconds, f"only {load.appends} appends in {seconds} s"
    assert load.reads > 50 and all(n > 0 for n in load.delivered.values())
    assert after.fds <= base.fds + 4, (base, after)
    assert after.tasks <= base.tasks + 2, (base, after)
    assert rounds[-1].rss_mb <= rounds[0].rss_mb + 10, rounds
    assert after.rss_mb <= base.rss_mb + 80, (base, after)
    assert load.max_wal <= 64 * 2**20, load.max_wal


async def verify_stored(load: Load) -> None:
    """Every job holds exactly what was acknowledged, in order, and ends complete."""
    for job, count in load.jobs.items():
        got: list[dict[str, Any]] = []
        while len(got) < count:
            r = await load.client.get(f"{JOBS}/{job}/events", params={"from_index": len(got)})
            page = r.json()["events"]
            if not page:
                break
            got += page
        indexes = [e["index"] for e in got]
        assert indexes == list(range(count)), job
        texts = [e["data"] if e["type"] == "log" else None for e in got]
        load.check(job, 0, indexes, texts)
        assert got[-1]["type"] == "complete", job
    assert not load.errors, load.errors[:5]


async def test_soak_short(tmp_path: Path) -> None:
    await soak(tmp_path, 12, 6)


@pytest.mark.slow
async def test_soak(tmp_path: Path) -> None:
    await soak(tmp_path, float(os.environ.get("STREAMER_SOAK_SECONDS", "300")), 60)
