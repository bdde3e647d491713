"""Operations: retention (`streamer gc`, the retention setting) and online backups."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from streamer.cli.main import main
from streamer.server.settings import Settings

from ..support.live import LiveServer

OLD = "2020-01-01T00:00:00.000000Z"


async def finished_job(server: LiveServer, lines: int, status: str = "completed") -> str:
    client = server.client()
    job = await server.create_job(client)
    events = [{"data": "x" * 200 + "\n"} for _ in range(lines)]
    await client.post(f"/api/v1/jobs/{job}/events", json={"events": events})
    if status == "completed":
        await client.post(f"/api/v1/jobs/{job}/events", json={"type": "complete", "success": True})
    elif status != "running":
        await client.patch(f"/api/v1/jobs/{job}", json={"status": status})
    return job


def age(db: str, *jobs: str) -> None:
    """Pretend these jobs finished long ago (nothing else about them changes)."""
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "UPDATE jobs SET finished_at = ?, updated_at = ? WHERE id = ?",
            [(OLD, OLD, job) for job in jobs],
        )


async def test_gc_deletes_only_old_finished_jobs_and_returns_space(
    live_server: LiveServer, capsys: pytest.CaptureFixture[str]
) -> None:
    db = live_server.settings.db
    old = [await finished_job(live_server, 500, s) for s in ("completed", "failed", "cancelled")]
    old_running = await finished_job(live_server, 5, "running")
    recent = await finished_job(live_server, 5)
    age(db, *old, old_running)
    await live_server.stop()
    with sqlite3.connect(db) as conn:
        pages_before = conn.execute("PRAGMA page_count").fetchone()[0]
    assert await asyncio.to_thread(main, ["gc", "--older-than", "30d", "--db", db]) == 0
    assert "deleted 3 finished jobs" in capsys.readouterr().out
    with sqlite3.connect(db) as conn:
        left = {row[0] for row in conn.execute("SELECT id FROM jobs")}
        assert left == {old_running, recent}
        assert conn.execute(
            "SELECT count(*) FROM events WHERE job_id IN (?, ?, ?)", old
        ).fetchone() == (0,)
        assert conn.execute("PRAGMA page_count").fetchone()[0] < pages_before / 2
    await live_server.start()
    client = live_server.client()
    assert (await client.get(f"/api/v1/jobs/{old[0]}")).status_code == 404
    assert (await client.get(f"/api/v1/jobs/{recent}")).status_code == 200


async def test_retention_setting_sweeps_when_the_server_starts(settings: Settings) -> None:
    first = LiveServer(settings)
    await first.start()
    first.key = await first.new_user("owner")
    job = await finished_job(first, 3)
    for c in first.clients:
        await c.aclose()
    await first.stop()
    age(settings.db, job)
    second = LiveServer(settings.replace(retention="30d"))
    await second.start()
    try:
        while True:  # the sweep runs in a background task right after start-up
            with sqlite3.connect(settings.db) as conn:
                if conn.execute("SELECT count(*) FROM jobs").fetchone() == (0,):
                    break
            await asyncio.sleep(0.02)
    finally:
        await second.stop()


def test_gc_refuses_a_bad_duration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gc", "--older-than", "30 days", "--db", str(tmp_path / "x.db")]) == 2
    assert "30d" in capsys.readouterr().err


async def test_backup_under_load_is_consistent_and_restores(
    live_server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = [await live_server.create_job() for _ in range(5)]
    stop = asyncio.Event()

    async def produce(job: str) -> None:
        client = live_server.client()
        while not stop.is_set():
            events = [{"data": f"{i}\n"} for i in range(20)]
            r = await client.post(f"/api/v1/jobs/{job}/events", json={"events": events})
            assert r.status_code == 201

    producers = [asyncio.create_task(produce(job)) for job in jobs]
    while (await live_server.client().get(f"/api/v1/jobs/{jobs[-1]}")).json()["event_count"] < 200:
        await asyncio.sleep(0.01)
    target = str(tmp_path / "backup" / "copy.db")
    assert await asyncio.to_thread(main, ["backup", target, "--db", live_server.settings.db]) == 0
    stop.set()
    await asyncio.gather(*producers)
    assert await asyncio.to_thread(main, ["backup", target, "--db", live_server.settings.db]) == 1
    assert "already exists" in capsys.readouterr().err

    with sqlite3.connect(target) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        for job in jobs:
            count = conn.execute("SELECT event_count FROM jobs WHERE id = ?", (job,)).fetchone()[0]
            idx = [
                r[0]
                for r in conn.execute(
                    "SELECT idx FROM events WHERE job_id = ? ORDER BY idx", (job,)
                )
            ]
            assert idx == list(range(count)), "every job in a backup is a consistent prefix"

    restored = LiveServer(live_server.settings.replace(db=target))
    await restored.start()
    try:
        restored.key = live_server.key  # users and keys come back with the data
        live_log = (await live_server.client().get(f"/api/v1/jobs/{jobs[0]}/log")).text
        copy_log = (await restored.client().get(f"/api/v1/jobs/{jobs[0]}/log")).text
        assert copy_log and live_log.startswith(copy_log)
    finally:
        for c in restored.clients:
            await c.aclose()
        await restored.stop()
