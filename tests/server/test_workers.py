"""`streamer serve --workers N`: a cluster of N nodes on PostgreSQL, refused on SQLite."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import httpx

from streamer.cli.main import main

from ..support.clients import SSEClient
from ..support.cluster import free_port
from ..support.postgres import pg_database
from ..support.procs import STREAMER, cli_user_key, wait_until_up


def test_several_workers_on_sqlite_are_refused_with_a_reason(
    tmp_path: Path, capsys: object
) -> None:
    code = main(["serve", "--db", str(tmp_path / "w.db"), "--workers", "2"])
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert code == 2 and "PostgreSQL" in err


async def test_readers_see_appends_made_through_any_worker(tmp_path: Path) -> None:
    """Two workers share the port; readers and producers land on either, all get all."""
    async with pg_database() as (db_url, _):
        key = cli_user_key(db_url, "w")
        port = free_port()
        log = (tmp_path / "workers.log").open("wb")
        proc = subprocess.Popen(
            [
                STREAMER,
                "serve",
                "--db",
                db_url,
                "--port",
                str(port),
                "--workers",
                "2",
                "--log-level",
                "warning",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            await asyncio.to_thread(wait_until_up, f"{url}/readyz", proc, "workers")
            headers = {"Authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(base_url=url, headers=headers) as client:
                job = (await client.post("/api/v1/jobs", json={})).json()["id"]
            readers = [
                asyncio.create_task(SSEClient(url, job, key, {}).collect()) for _ in range(8)
            ]
            for i in range(40):  # a fresh connection each time: spread over both workers
                async with httpx.AsyncClient(base_url=url, headers=headers) as client:
                    r = await client.post(f"/api/v1/jobs/{job}/events", json={"data": f"{i}\n"})
                    assert r.status_code == 201
            async with httpx.AsyncClient(base_url=url, headers=headers) as client:
                await client.post(
                    f"/api/v1/jobs/{job}/events", json={"type": "complete", "success": True}
                )
            for reader in readers:
                messages = await asyncio.wait_for(reader, 30)
                assert [m.id for m in messages] == [str(i) for i in range(41)]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
            log.close()
