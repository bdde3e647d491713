"""Idempotent producers across a crash: kill -9 while they append, restart, retry every
batch that was not acknowledged: each batch is stored exactly once, in each
producer's order (the producer's position commits with the batch, so a retry of a
batch that was committed before the crash is recognised as a duplicate)."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ..support.procs import ServerProcess

PRODUCERS = 8
STREAM = "/v1/stream/crash/producers"


@dataclass
class Producer:
    name: str
    seq: int = 0  # the next batch to send; batches below it were acknowledged
    outcomes: list[int] = field(default_factory=list)

    def batch(self, seq: int) -> bytes:
        return json.dumps(
            [{"p": self.name, "seq": seq, "part": part} for part in range(3)]
        ).encode()

    async def send(self, client: httpx.AsyncClient, seq: int | None = None) -> int:
        """Send the current batch (or batch ``seq`` again); its status, or 0 when the
        server died first."""
        again = seq is not None
        seq = self.seq if seq is None else seq
        headers = {
            "Content-Type": "application/json",
            "Producer-Id": self.name,
            "Producer-Epoch": "0",
            "Producer-Seq": str(seq),
        }
        try:
            response = await client.post(STREAM, content=self.batch(seq), headers=headers)
        except httpx.TransportError:
            return 0
        assert response.status_code in (200, 204), response.text
        self.outcomes.append(response.status_code)
        if not again:
            self.seq += 1
        return response.status_code

    async def run(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not await self.send(client):
                return  # unknown outcome: retried after the restart


async def read_all(client: httpx.AsyncClient) -> list[dict[str, object]]:
    messages: list[dict[str, object]] = []
    offset = "-1"
    while True:
        response = await client.get(STREAM, params={"offset": offset})
        assert response.status_code == 200
        messages += response.json()
        offset = response.headers["Stream-Next-Offset"]
        if response.headers.get("Stream-Up-To-Date") == "true":
            return messages


async def test_retried_batches_after_sigkill_are_stored_exactly_once(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "ds-crash.db")
    server.start()
    producers = [Producer(f"producer-{i}") for i in range(PRODUCERS)]
    headers = {"Authorization": f"Bearer {server.key}"}
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=5) as client:
            created = await client.put(STREAM, headers={"Content-Type": "application/json"})
            assert created.status_code == 201
        for _ in range(3):
            stop = asyncio.Event()
            async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=5) as client:
                tasks = [asyncio.create_task(p.run(client, stop)) for p in producers]
                target = sum(p.seq for p in producers) + 100 + random.randint(0, 200)
                while sum(p.seq for p in producers) < target:
                    await asyncio.sleep(0.01)
                server.kill()  # mid-append, at a random moment
                stop.set()
                await asyncio.gather(*tasks)
            server.start()
            async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=5) as client:
                for producer in producers:
                    if producer.seq:  # acknowledged before the crash (as if its answer were
                        # lost with it): the position survived with the batch
                        assert await producer.send(client, producer.seq - 1) == 204
                    assert await producer.send(client) in (200, 204)  # the one in flight
                    assert await producer.send(client) == 200
                stored = await read_all(client)
            for producer in producers:
                mine = [(m["seq"], m["part"]) for m in stored if m["p"] == producer.name]
                expected = [(s, part) for s in range(producer.seq) for part in range(3)]
                assert mine == expected, f"{producer.name}: duplicated, lost or reordered"
    finally:
        server.kill()
    with sqlite3.connect(tmp_path / "ds-crash.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
