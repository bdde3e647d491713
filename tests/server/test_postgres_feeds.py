"""The change feed and multi-job streams on two ``streamer serve`` nodes of one PostgreSQL.

Writers on both nodes; readers that drop and resume on either node. The feed's
sequence comes from the database, so a reader resumes on the other node exactly
where it stopped; a multi-job reader's composite cursor does the same for every job.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ..support.cluster import Cluster, two_nodes
from ..support.feeds import (
    LAST,
    FeedReader,
    MultiReader,
    all_jobs,
    random_writes,
    read_until_done,
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    env = {"STREAMER_FEED_GROWTH_INTERVAL_SECONDS": "0.05"}
    with two_nodes(tmp_path_factory.mktemp("feeds"), env) as nodes:
        yield nodes


async def query(cluster: Cluster, sql: str) -> list[Any]:
    """Rows of the cluster's database, read directly: what storage keeps right now."""
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(cluster.db_url, timeout=5)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def finish_all(client: httpx.AsyncClient) -> None:
    """Cancel every job still open: its last change then carries its final count."""
    for job in (await all_jobs(client)).values():
        if job["status"] in ("queued", "running"):
            r = await client.patch(f"/api/v1/jobs/{job['id']}", json={"status": "cancelled"})
            assert r.status_code in (200, 409), r.text


async def test_feed_readers_resuming_on_either_node_end_with_storage_s_list(
    cluster: Cluster,
) -> None:
    a, b = cluster.client(cluster.a), cluster.client(cluster.b)
    urls = [cluster.a.url, cluster.b.url]
    async with a, b, asyncio.timeout(120):
        readers = [FeedReader(urls, cluster.key, seed) for seed in range(4)]
        tasks = [asyncio.create_task(r.run()) for r in readers]
        await asyncio.gather(*(random_writes(a if s % 2 else b, s, 40) for s in range(4)))
        await finish_all(a)
        r = await b.post("/api/v1/jobs", json={"name": LAST})
        assert r.status_code == 201
        await asyncio.gather(*tasks)
        kept = [row[0] for row in await query(cluster, "SELECT seq FROM job_changes ORDER BY seq")]
        truth = await all_jobs(b)
    for reader in readers:
        reader.check(truth, kept)
    assert len(kept) > 60 and sum(len(r.connections) for r in readers) > 8


async def produce(client: httpx.AsyncClient, job: str, total: int, seed: int) -> None:
    rng, sent = random.Random(seed), 0
    while sent < total:
        n = min(rng.randint(1, 5), total - sent)
        events = [{"data": f"{sent + i}\n"} for i in range(n)]
        r = await client.post(f"/api/v1/jobs/{job}/events", json={"events": events})
        assert r.status_code == 201, r.text
        sent += n


async def test_multi_job_readers_resuming_on_either_node_get_each_job_once(
    cluster: Cluster,
) -> None:
    """8 jobs, each written through both nodes at once; 10 readers of random subsets,
    joining at random cursors and resuming on either node: each job exactly once."""
    a, b = cluster.client(cluster.a), cluster.client(cluster.b)
    urls = [cluster.a.url, cluster.b.url]
    rng = random.Random(1515)
    async with a, b, asyncio.timeout(120):
        jobs = []
        for i in range(8):
            r = await (a if i % 2 else b).post("/api/v1/jobs", json={"name": f"m{i}"})
            jobs.append(r.json()["id"])
        writers = [
            asyncio.create_task(produce(client, job, 60, seed))
            for seed, job in enumerate(jobs)
            for client in (a, b)
        ]
        readers = []
        for _ in range(10):
            subset = rng.sample(jobs, rng.randint(1, 8))
            starts = {}
            for job in subset:
                head = (await a.get(f"/api/v1/jobs/{job}")).json()["event_count"]
                starts[job] = rng.randint(0, head)
            start = ",".join(f"{job}:{index}" for job, index in starts.items())
            reader = MultiReader(urls[0], cluster.key, subset)
            readers.append(
                (
                    reader,
                    starts,
                    asyncio.create_task(read_until_done(reader, start, rng, (5, 60), urls)),
                )
            )
            await asyncio.sleep(rng.random() * 0.05)
        await asyncio.gather(*writers)
        for i, job in enumerate(jobs):
            done = {"type": "complete", "success": True}
            r = await (a if i % 2 else b).post(f"/api/v1/jobs/{job}/events", json=done)
            assert r.status_code == 201, r.text
        await asyncio.gather(*(task for _, _, task in readers))
    for reader, starts, _ in readers:
        for job, begin in starts.items():
            assert reader.got.get(job, []) == list(range(begin, 121)), job
