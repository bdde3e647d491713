"""/metrics: Prometheus text, counters that move with the traffic, no job ids as labels."""

from __future__ import annotations

import asyncio

from .clients import ws_collect
from .conftest import LiveServer


def sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


async def test_metrics_count_appends_streams_and_deliveries(live_server: LiveServer) -> None:
    client = live_server.client()
    job = await live_server.create_job()
    events = [{"data": f"{i}\n"} for i in range(10)]
    await client.post(f"/api/v1/jobs/{job}/events", json={"events": events})
    reader = asyncio.create_task(live_server.sse(job).collect())
    while live_server.ctx.hub.subscriber_count == 0:
        await asyncio.sleep(0.005)
    during = (await client.get("/metrics")).text
    assert sample(during, 'streamer_live_readers{transport="sse"}') == 1
    await client.post(f"/api/v1/jobs/{job}/events", json={"type": "complete", "success": True})
    await reader
    async with live_server.ws(job) as ws:
        await ws_collect(ws)
    response = await client.get("/metrics")  # no auth needed, like /healthz
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert sample(text, "streamer_events_published_total") == 11
    assert sample(text, 'streamer_events_delivered_total{transport="sse"}') == 11
    assert sample(text, 'streamer_events_delivered_total{transport="ws"}') == 11
    assert sample(text, 'streamer_streams_total{transport="ws"}') == 1
    assert sample(text, "streamer_commit_groups_total") >= 1
    assert sample(text, 'streamer_live_readers{transport="sse"}') == 0
    assert job not in text, "no job ids as labels"


async def test_health_and_readiness(live_server: LiveServer) -> None:
    client = live_server.client(key="")
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}
