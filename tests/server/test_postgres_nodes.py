"""Two real ``streamer serve`` processes on one PostgreSQL database: a cluster.

Readers on node A, producers on both nodes: every reader must get exactly
0..n-1, in order, whichever node stored each event. Then the cross-node path is
broken on purpose: the LISTEN connections are killed mid-stream, and later the
database refuses every connection for a while (what a node sees during a
PostgreSQL restart). Requests fail with 503 meanwhile; no reader loses or repeats
an event.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ..support.clients import parse_sse
from ..support.cluster import Cluster, Node, two_nodes
from ..support.postgres import pg_admin


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with two_nodes(tmp_path_factory.mktemp("nodes")) as nodes:
        yield nodes


# --- helpers ----------------------------------------------------------------------------


async def create_job(client: httpx.AsyncClient) -> str:
    response = await client.post("/api/v1/jobs", json={"name": "cluster"})
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


async def append(client: httpx.AsyncClient, job_id: str, events: list[dict[str, Any]]) -> None:
    body: dict[str, Any] = events[0] if len(events) == 1 else {"events": events}
    response = await client.post(f"/api/v1/jobs/{job_id}/events", json=body)
    assert response.status_code == 201, response.text


async def produce(client: httpx.AsyncClient, job_id: str, count: int, tag: str) -> None:
    """``count`` log events, in single appends and batches of random sizes."""
    rng = random.Random(tag)
    sent = 0
    while sent < count:
        size = min(rng.randint(1, 4), count - sent)
        await append(client, job_id, [{"data": f"{tag} {sent + i}\n"} for i in range(size)])
        sent += size


class Readers:
    """``count`` SSE readers of one job on one node, from index 0 until ``complete``.

    They share one HTTP client (one connection each): building a client per reader
    costs more than everything else this test does.
    """

    def __init__(self, cluster: Cluster, node: Node, job_id: str, count: int) -> None:
        self.connected = 0
        self.all_connected = asyncio.Event()
        self.count = count
        self.client = httpx.AsyncClient(
            base_url=node.url,
            headers={"Authorization": f"Bearer {cluster.key}"},
            timeout=httpx.Timeout(30.0),
            limits=httpx.Limits(max_connections=count, max_keepalive_connections=0),
        )
        self.url = f"/api/v1/jobs/{job_id}/events/stream"
        self.tasks = [asyncio.create_task(self._read()) for _ in range(count)]

    async def _read(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        async with self.client.stream("GET", self.url) as response:
            assert response.status_code == 200
            async for item in parse_sse(response.aiter_bytes()):
                if isinstance(item, str):
                    continue  # a keepalive comment
                events.append(item.json())
                if len(events) == 1:  # replay is under way: the hub subscription exists
                    self.connected += 1
                    if self.connected == self.count:
                        self.all_connected.set()
        return events

    async def results(self) -> list[list[dict[str, Any]]]:
        try:
            return list(await asyncio.gather(*self.tasks))
        finally:
            await self.client.aclose()


async def stored(client: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    page = (await client.get(f"/api/v1/jobs/{job_id}/events", params={"limit": 1000})).json()
    assert page["complete"] is True
    events: list[dict[str, Any]] = page["events"]
    return events


def assert_exactly_once(results: list[list[dict[str, Any]]], truth: list[dict[str, Any]]) -> None:
    for events in results:
        assert [e["index"] for e in events] == list(range(len(truth)))
        assert events == truth


async def kill_listeners(cluster: Cluster) -> int:
    rows = await pg_admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = $1 AND application_name LIKE 'streamer-listen-%'",
        cluster.db_name,
    )
    return len(rows)


# --- tests ------------------------------------------------------------------------------


async def test_readers_on_one_node_get_every_event_from_both(cluster: Cluster) -> None:
    """50 SSE readers on node A, producers on A and B: each reader gets 0..n-1 once."""
    a, b = cluster.client(cluster.a), cluster.client(cluster.b)
    async with a, b, asyncio.timeout(60):
        jobs = [await create_job(a), await create_job(b)]
        for job_id in jobs:
            await append(a, job_id, [{"data": "start\n"}])
        readers = [Readers(cluster, cluster.a, job_id, 25) for job_id in jobs]
        await asyncio.gather(*(r.all_connected.wait() for r in readers))
        await asyncio.gather(
            *(produce(a, job_id, 100, f"a-{job_id}") for job_id in jobs),
            *(produce(b, job_id, 100, f"b-{job_id}") for job_id in jobs),
        )
        for job_id in jobs:
            await append(b, job_id, [{"type": "complete", "success": True}])
        for job_id, group in zip(jobs, readers, strict=True):
            truth = await stored(b, job_id)
            assert len(truth) == 202
            assert_exactly_once(await group.results(), truth)


async def test_listen_connection_killed_mid_stream(cluster: Cluster) -> None:
    """Node B's events reach node A's readers only through A's LISTEN connection,
    which is killed mid-stream; what B commits meanwhile is caught up, once."""
    a, b = cluster.client(cluster.a), cluster.client(cluster.b)
    async with a, b, asyncio.timeout(60):
        job_id = await create_job(b)
        await append(b, job_id, [{"data": "start\n"}])
        readers = Readers(cluster, cluster.a, job_id, 50)
        await readers.all_connected.wait()
        await produce(b, job_id, 40, "before")
        assert await kill_listeners(cluster) == 2  # both nodes' LISTEN connections
        await produce(b, job_id, 40, "during")
        await append(
            b,
            job_id,
            [*({"data": f"last {i}\n"} for i in range(5)), {"type": "complete", "success": True}],
        )
        truth = await stored(b, job_id)
        assert len(truth) == 87
        assert_exactly_once(await readers.results(), truth)


async def test_database_outage_is_503_then_streams_resume(cluster: Cluster) -> None:
    """While PostgreSQL refuses connections requests get 503 problems; open streams
    stay up, and after it is back they continue with no gap and no duplicate."""
    a, b = cluster.client(cluster.a), cluster.client(cluster.b)
    async with a, b, asyncio.timeout(60):
        job_id = await create_job(b)
        await append(b, job_id, [{"data": "start\n"}])
        readers = Readers(cluster, cluster.a, job_id, 10)
        await readers.all_connected.wait()
        await produce(b, job_id, 10, "before")
        await pg_admin(f'ALTER DATABASE "{cluster.db_name}" ALLOW_CONNECTIONS false')
        try:
            await pg_admin(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                cluster.db_name,
            )
            for response in (
                await a.get("/readyz"),
                await a.get(f"/api/v1/jobs/{job_id}"),
                await b.post(f"/api/v1/jobs/{job_id}/events", json={"data": "lost?\n"}),
            ):
                assert response.status_code == 503, response.text
                assert response.headers["content-type"] == "application/problem+json"
                assert response.json()["status"] == 503
        finally:
            await pg_admin(f'ALTER DATABASE "{cluster.db_name}" ALLOW_CONNECTIONS true')
        next_index = 11
        for i in range(20):  # an agent retrying with expected_index: exactly once
            next_index = await append_exactly_once(b, job_id, next_index, {"data": f"after {i}\n"})
        await append_exactly_once(b, job_id, next_index, {"type": "complete", "success": True})
        truth = await stored(b, job_id)
        assert len(truth) == 32
        assert_exactly_once(await readers.results(), truth)
        while (await a.get("/readyz")).status_code != 200:
            await asyncio.sleep(0.05)


async def append_exactly_once(
    client: httpx.AsyncClient, job_id: str, expected: int, event: dict[str, Any]
) -> int:
    """Append at ``expected``, retrying 503s; a 409 naming ``expected + 1`` means it landed."""
    while True:
        response = await client.post(
            f"/api/v1/jobs/{job_id}/events", params={"expected_index": expected}, json=event
        )
        if response.status_code == 201:
            return expected + 1
        if response.status_code == 409 and response.json().get("next_index") == expected + 1:
            return expected + 1
        assert response.status_code == 503, response.text
        await asyncio.sleep(0.05)  # back off before retrying, as a real agent would
