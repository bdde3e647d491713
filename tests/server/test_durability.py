"""Guarantee 1: an append answered 2xx survives a crash of the server (kill -9)."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

import httpx

from ..support.procs import ServerProcess

PRODUCERS = 20


async def hammer(url: str, key: str, job: str, acked: dict[int, str], stop: asyncio.Event) -> None:
    """Append single events until the server dies; remember what was acknowledged."""
    n = 0
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=5
    ) as client:
        while not stop.is_set():
            payload = f"{id(acked)}-{random.random()}\n"
            try:
                r = await client.post(f"/api/v1/jobs/{job}/events", json={"data": payload})
            except httpx.TransportError:
                return  # unknown outcome: the server died mid-request
            if r.status_code == 201:
                acked[r.json()["first_index"]] = payload
            n += 1


async def test_acknowledged_appends_survive_sigkill(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "crash.db")
    server.start()
    try:
        headers = {"Authorization": f"Bearer {server.key}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:
            job = (await client.post("/api/v1/jobs", json={"name": "crash"})).json()["id"]
        acked: dict[int, str] = {}
        for cycle in range(3):
            stop = asyncio.Event()
            tasks = [
                asyncio.create_task(hammer(server.url, server.key, job, acked, stop))
                for _ in range(PRODUCERS)
            ]
            before = len(acked)
            while len(acked) < before + 200 + random.randint(0, 300):
                await asyncio.sleep(0.01)
            server.kill()  # mid-append, at a random moment
            stop.set()
            await asyncio.gather(*tasks)
            server.start()
            async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:
                stored: dict[int, str] = {}
                next_index = 0
                while True:
                    page = (
                        await client.get(
                            f"/api/v1/jobs/{job}/events", params={"from_index": next_index}
                        )
                    ).json()
                    stored.update({e["index"]: e["data"] for e in page["events"]})
                    if not page["events"]:
                        break
                    next_index = page["next_index"]
            assert sorted(stored) == list(range(len(stored))), (
                f"cycle {cycle}: indexes not contiguous"
            )
            lost = {i: p for i, p in acked.items() if stored.get(i) != p}
            assert not lost, f"cycle {cycle}: {len(lost)} acknowledged appends lost or changed"
    finally:
        server.kill()
    with sqlite3.connect(tmp_path / "crash.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def test_everything_is_there_after_a_clean_restart(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "restart.db")
    server.start()
    try:
        headers = {"Authorization": f"Bearer {server.key}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:
            job = (await client.post("/api/v1/jobs", json={"name": "keep"})).json()["id"]
            events = [{"data": f"{i}\n"} for i in range(100)]
            await client.post(f"/api/v1/jobs/{job}/events", json={"events": events})
        assert server.terminate() < 10
        server.start()
        async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:
            log = await client.get(f"/api/v1/jobs/{job}/log")
            assert log.text == "".join(f"{i}\n" for i in range(100))
            assert (await client.get(f"/api/v1/jobs/{job}")).json()["event_count"] == 100
    finally:
        server.kill()
