"""Scenario 1, ingest: 200k events of ~100 bytes into a real server.

(a) single-event POSTs from 32 concurrent producers (one job each), (b) batched
POSTs, each producer in order; events/s and append→ack p50/p99. Side by side: Nchan
single POSTs (it has no batch publish), and the raw ``sqlite3.executemany`` ceiling
into a table shaped like streamer's ``events``, in this process, same run.

On PostgreSQL (``--db postgres``) the ceiling is raw asyncpg instead: the same rows
into a table shaped like streamer's PostgreSQL ``events``, in one ``INSERT … SELECT
unnest($arrays)`` statement (the shape of streamer's own insert), one transaction,
on the server's own fresh database, median of 3.

Verified: every job's ``event_count`` is what its producer sent, and reading the job
back page by page yields its producer's sequence numbers in index order, no gap, no
duplicate (Nchan: each channel's ``messages`` count).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import statistics
import time
from typing import Any

import orjson

from .common import NchanServer, StreamerServer, Suite, latency_ms, payload, ratio, self_cpu
from .loadgen import PublishStats, publish_events

SEQ = re.compile(rb"~(\d{10})")


def ceiling_rows(n: int) -> list[tuple[str, int, str, bytes]]:
    """n pre-encoded rows, shaped like what streamer stores for a ~100-byte event."""
    rows = []
    for i in range(n):
        line = orjson.dumps(
            {
                "index": i,
                "type": "log",
                "data": payload(i),
                "success": None,
                "timestamp": "2026-11-22T10:31:07.123456Z",
            }
        )
        rows.append(("job-ceiling", i, "log", line))
    return rows


async def postgres_ceiling(db_url: str, n: int, repeats: int = 3) -> dict[str, Any]:
    """n rows in one ``INSERT … SELECT unnest(...)`` and one transaction (asyncpg)."""
    import asyncpg  # type: ignore[import-untyped]

    rows = ceiling_rows(n)
    columns = [list(c) for c in zip(*rows, strict=True)]
    conn = await asyncpg.connect(db_url, timeout=10)
    rates = []
    try:
        for r in range(repeats):
            table = f"ceiling_{r}"
            await conn.execute(
                f"CREATE TABLE {table} (job_id TEXT NOT NULL, idx BIGINT NOT NULL,"
                " type TEXT NOT NULL, line BYTEA NOT NULL, PRIMARY KEY (job_id, idx))"
            )
            start = time.perf_counter()
            async with conn.transaction():
                await conn.execute(
                    f"INSERT INTO {table} SELECT * FROM unnest($1::text[], $2::bigint[],"
                    " $3::text[], $4::bytea[])",
                    *columns,
                )
            elapsed = time.perf_counter() - start
            count = tuple(await conn.fetchrow(f"SELECT count(*), min(idx), max(idx) FROM {table}"))
            await conn.execute(f"DROP TABLE {table}")
            if count != (n, 0, n - 1):
                raise AssertionError(f"postgres ceiling stored {count}, expected {(n, 0, n - 1)}")
            rates.append(n / elapsed)
    finally:
        await conn.close()
    return {
        "events_per_s": round(statistics.median(rates)),
        "runs": [round(r) for r in rates],
        "verified": True,
    }


def sqlite_ceiling(suite: Suite, n: int, repeats: int = 3) -> dict[str, Any]:
    """Raw ``executemany`` of n pre-encoded rows in one transaction (WAL, NORMAL)."""
    rows = ceiling_rows(n)
    rates = []
    for r in range(repeats):
        path = suite.workdir / f"ceiling-{r}.db"
        conn = sqlite3.connect(path, isolation_level=None)
        conn.executescript(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
            "CREATE TABLE events (job_id TEXT NOT NULL, idx INTEGER NOT NULL, type TEXT NOT NULL,"
            " line BLOB NOT NULL, PRIMARY KEY (job_id, idx)) WITHOUT ROWID;"
        )
        start = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
        count = conn.execute("SELECT count(*), min(idx), max(idx) FROM events").fetchone()
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        if count != (n, 0, n - 1):
            raise AssertionError(f"sqlite ceiling stored {count}, expected {(n, 0, n - 1)}")
        rates.append(n / elapsed)
    return {
        "events_per_s": round(statistics.median(rates)),
        "runs": [round(r) for r in rates],
        "verified": True,
    }


async def produce(
    server: StreamerServer | NchanServer,
    channels: list[str],
    per_producer: int,
    batch: int,
) -> tuple[list[PublishStats], float, float]:
    target = server.target()
    cpu0, srv0 = self_cpu(), server.cpu()
    stats = await asyncio.gather(
        *(publish_events(target, ch, per_producer, batch=batch) for ch in channels)
    )
    return list(stats), self_cpu() - cpu0, server.cpu() - srv0


def verify_streamer(server: StreamerServer, jobs: list[str], per_job: int) -> dict[str, Any]:
    assert server.client is not None
    bad = 0
    for job in jobs:
        seqs: list[int] = []
        start = 0
        while True:
            page = server.client.get(
                f"/api/v1/jobs/{job}/events", params={"from_index": start, "limit": 1000}
            )
            page.raise_for_status()
            body = page.content
            found = [int(s) for s in SEQ.findall(body)]
            if not found:
                break
            seqs += found
            start = orjson.loads(body)["next_index"]
        if seqs != list(range(per_job)) or server.event_count(job) != per_job:
            bad += 1
    return {"jobs": len(jobs), "jobs_wrong": bad, "verified": bad == 0}


def summarize(stats: list[PublishStats], total: int) -> dict[str, Any]:
    start = min(s.start_ns for s in stats)
    end = max(s.end_ns for s in stats)
    acks = [a for s in stats for a in s.acks_ns]
    seconds = (end - start) / 1e9
    return {
        "events": total,
        "seconds": round(seconds, 3),
        "events_per_s": round(total / seconds),
        "requests": len(acks),
        "errors": sum(s.errors for s in stats),
        "last_error": next((s.last_error for s in stats if s.last_error), ""),
        "ack": latency_ms(acks),
    }


async def run(suite: Suite) -> None:
    n = 5_000 if suite.quick else 200_000
    producers = 32
    per = n // producers
    n = per * producers
    repeats = 1 if suite.quick else 3
    ceiling: dict[str, Any] = {}
    if suite.db == "sqlite":
        ceiling = sqlite_ceiling(suite, n, repeats)
        suite.recorder.write(
            "ingest.sqlite_ceiling", server="sqlite3", mode="executemany", **ceiling
        )

    results: dict[str, dict[str, Any]] = {}
    for name in suite.servers():
        with suite.server(name) as server:
            if isinstance(server, StreamerServer) and server.pg is not None:
                # Before the server's own load, on its database, same size.
                ceiling = await postgres_ceiling(server.pg.url, n, repeats)
                suite.recorder.write(
                    "ingest.pg_ceiling", server="asyncpg", mode="insert unnest", **ceiling
                )
            modes: list[tuple[str, int, int]] = [("single", 1, producers)]
            if isinstance(server, StreamerServer):
                modes += [("batch100", 100, 4), ("batch1000", 1000, 4)]
            for mode, batch, conc in modes:
                per_producer = n // conc
                total = per_producer * conc
                if isinstance(server, StreamerServer):
                    channels = [server.create_job(f"ingest-{mode}-{i}") for i in range(conc)]
                else:
                    channels = [f"ingest{mode}{i}{time.monotonic_ns()}" for i in range(conc)]
                stats, client_cpu, server_cpu = await produce(server, channels, per_producer, batch)
                summary = summarize(stats, total)
                if isinstance(server, StreamerServer):
                    check = verify_streamer(server, channels, per_producer)
                else:
                    wrong = sum(1 for ch in channels if server.messages(ch) != per_producer)
                    check = {"jobs": conc, "jobs_wrong": wrong, "verified": wrong == 0}
                check["verified"] = check["verified"] and summary["errors"] == 0
                results[f"{name}.{mode}"] = summary
                extra: dict[str, Any] = {}
                if mode.startswith("batch") and suite.db == "sqlite":
                    extra["vs_sqlite_ceiling"] = ratio(
                        summary["events_per_s"], ceiling["events_per_s"]
                    )
                    extra["target"] = ">= 0.6x sqlite ceiling"
                elif mode.startswith("batch"):
                    extra["vs_pg_ceiling"] = ratio(summary["events_per_s"], ceiling["events_per_s"])
                if mode == "single" and name == "streamer":
                    extra["target"] = ">= 10000 events/s"
                if mode == "single" and name == "nchan" and "streamer.single" in results:
                    extra["streamer_vs_nchan"] = ratio(
                        results["streamer.single"]["events_per_s"], summary["events_per_s"]
                    )
                suite.recorder.write(
                    f"ingest.{mode}",
                    server=name,
                    producers=conc,
                    batch=batch,
                    client_cpu_s=round(client_cpu, 2),
                    server_cpu_s=round(server_cpu, 2),
                    **summary,
                    **extra,
                    **check,
                )
