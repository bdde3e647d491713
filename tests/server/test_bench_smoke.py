"""The benchmark suite runs end to end at tiny sizes and verifies what it delivered.

One subprocess runs ``python -m bench.run --quick --no-nchan --db sqlite --only ingest
--only replay`` against a real ``streamer serve``; every JSON line it appends must
parse and say its deliveries were checked (counts, order, no duplicate, no gap). A
second runs the cross-node scenario on PostgreSQL (two nodes on one database), and
is skipped, naming why, when no PostgreSQL server answers. Nginx is never needed:
``--no-nchan`` keeps the Nchan side out.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ..support import REPO


def test_quick_ingest_and_replay_verify_their_deliveries(tmp_path: Path) -> None:
    records = quick_bench(tmp_path, "ingest", "replay")
    by_scenario: dict[str, list[dict[str, object]]] = {}
    for record in records:
        assert record["quick"] is True
        assert record["rev"]
        assert record["db"] == (
            "sqlite" if record.get("server", "streamer") == "streamer" else None
        )
        by_scenario.setdefault(str(record["scenario"]), []).append(record)
    assert not any(name.endswith(".error") for name in by_scenario), by_scenario

    ingest = {r["mode"] if "mode" in r else r["scenario"]: r for r in records}
    assert ingest["executemany"]["verified"] is True
    for mode in ("ingest.single", "ingest.batch100", "ingest.batch1000"):
        (record,) = [r for r in by_scenario[mode] if r["server"] == "streamer"]
        assert record["verified"] is True
        assert record["errors"] == 0 and record["jobs_wrong"] == 0
        assert isinstance(record["events_per_s"], int) and record["events_per_s"] > 0

    single = [r for r in by_scenario["replay.single"] if r["server"] == "streamer"]
    assert {r["transport"] for r in single} == {"sse", "ws"}
    for record in single:
        assert record["verified"] is True
        assert record["delivered"] == record["job_events"] == record["events_each"]
        assert record["dups"] == 0 and record["gaps"] == 0
    storm = [r for r in by_scenario["replay.storm"] if r["server"] == "streamer"]
    assert len(storm) == 2
    for record in storm:
        assert record["verified"] is True
        assert record["complete"] == record["readers"]
        assert record["delivered"] == record["readers"] * record["events_each"]


def test_quick_crossnode_on_postgres_verifies_every_delivery(tmp_path: Path) -> None:
    """Two nodes on one fresh PostgreSQL database: subscribers on A, the publisher on B
    (and on A beside it); every subscriber gets every event once, in order."""
    from bench.common import postgres_admin_url

    admin, why = postgres_admin_url()
    if admin is None:
        pytest.skip(why)
    results = tmp_path / "results.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--no-nchan", "--db", "postgres"]
        + ["--only", "crossnode", "--results", str(results)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert records and all(r["db"] == "postgres" and r["quick"] is True for r in records)
    runs = [r for r in records if r["scenario"] == "crossnode"]
    assert sorted((r["transport"], r["path"]) for r in runs) == [
        ("sse", "cross"),
        ("sse", "same"),
        ("ws", "cross"),
        ("ws", "same"),
    ]
    for record in runs:
        assert record["verified"] is True, record
        assert record["complete"] == record["subscribers"] > 0
        assert record["delivered"] == record["subscribers"] * record["events"]
        assert record["dups"] == 0 and record["gaps"] == 0
        assert record["job_event_count"] == record["events"]
        assert record["latency"]["p99_ms"] > 0
    compare = [r for r in records if r["scenario"] == "crossnode.compare"]
    assert len(compare) == 2 and all(r["verified"] is True for r in compare)
    made = {r["pg_database"] for r in runs}
    assert len(made) == 1
    assert not bench_databases(admin) & made, f"bench database left behind: {made}"


def bench_databases(admin: str) -> set[str]:
    """Databases named like the bench's (``streamer_bench_*``) on the server now.

    Only the names a run recorded are checked against this: another run going on at
    the same time (the machine is shared) has databases of its own."""
    import asyncio

    import asyncpg  # type: ignore[import-untyped]

    async def names() -> set[str]:
        conn = await asyncpg.connect(admin, timeout=5)
        try:
            rows = await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE 'streamer_bench_%'"
            )
            return {row[0] for row in rows}
        finally:
            await conn.close()

    return asyncio.run(names())


def test_quick_multi_and_feed_verify_their_deliveries(tmp_path: Path) -> None:
    """One connection for many jobs vs one each, and the change feed, at tiny sizes."""
    records = quick_bench(tmp_path, "multi", "feed")
    multi = [r for r in records if r["scenario"] == "multi"]
    assert {(r["mode"], r["transport"]) for r in multi} == {
        (mode, transport) for mode in ("one", "each") for transport in ("sse", "ws")
    }
    for record in multi:
        assert record["verified"] is True and record["dups"] == record["gaps"] == 0
        assert record["delivered"] == record["jobs"] * record["events_per_job"]
    (feed,) = [r for r in records if r["scenario"] == "feed"]
    assert feed["verified"] is True
    assert (
        feed["delivered"]
        == feed["dashboards"] * feed["changes"]
        == feed["dashboards"] * feed["head_moved"]
    )


def quick_bench(tmp_path: Path, *scenarios: str) -> list[dict[str, object]]:
    """``bench.run --quick --no-nchan --db sqlite`` of ``scenarios``: its JSON lines."""
    results = tmp_path / "results.jsonl"
    only = [arg for name in scenarios for arg in ("--only", name)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--no-nchan", "--db", "sqlite", *only]
        + ["--results", str(results)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in results.read_text().splitlines()]
