"""/metrics: Prometheus text, counters that move with the traffic, no job ids as labels."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from streamer.server.settings import Settings
from streamer.storage.sqlite.writer import GROUP_SIZE_BUCKETS

from ..support.clients import ws_collect
from ..support.live import LiveServer, serving


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
    while live_server.resources.hub.subscriber_count == 0:
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


def buckets(text: str, name: str) -> dict[str, float]:
    """A histogram's cumulative buckets, ``{"0.005": 3.0, ..., "+Inf": 7.0}``."""
    prefix = name + '_bucket{le="'
    return {
        line[len(prefix) :].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix)
    }


def stalled_socket(port: int, request: str) -> socket.socket:
    """A client that sends ``request`` and never reads: a tiny receive buffer, so the
    server's writes back up after a few MB (kernel buffers) instead of tens."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(request.encode())
    return sock


def stream_request(server: LiveServer, job: str, transport: str) -> str:
    path = f"/api/v1/jobs/{job}/events"
    head = f"Authorization: Bearer {server.key}\r\nHost: 127.0.0.1\r\n"
    if transport == "sse":
        return f"GET {path}/stream HTTP/1.1\r\n{head}\r\n"
    return (
        f"GET {path}/ws HTTP/1.1\r\n{head}Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )


async def wait_for_metric(
    client: httpx.AsyncClient, name: str, value: float, timeout: float = 10
) -> str:
    """Scrape until ``name`` reads ``value``; the last scrape."""
    async with asyncio.timeout(timeout):
        while True:
            text = (await client.get("/metrics")).text
            if sample(text, name) == value:
                return text
            await asyncio.sleep(0.05)


BIG = "z" * 100_000 + "\n"  # 8 of them per request: under the 1 MiB body limit


async def append_bytes(client: httpx.AsyncClient, job: str, megabytes: int) -> None:
    for _ in range(megabytes * 10 // 8 + 1):
        r = await client.post(f"/api/v1/jobs/{job}/events", json={"events": [{"data": BIG}] * 8})
        assert r.status_code == 201


async def test_append_latency_histogram_counts_each_acknowledged_append(
    live_server: LiveServer,
) -> None:
    client = live_server.client()
    job = await live_server.create_job()
    url = f"/api/v1/jobs/{job}/events"
    for i in range(7):
        assert (await client.post(url, json={"data": f"{i}\n"})).status_code == 201
    r = await client.post(url, params={"expected_index": 0}, json={"data": "late\n"})
    assert r.status_code == 409  # refused: not an acknowledged append, not observed
    assert (await client.post(url, content=b'{"data": ')).status_code == 400
    text = (await client.get("/metrics")).text
    assert sample(text, "streamer_append_latency_seconds_count") == 7
    assert 0 < sample(text, "streamer_append_latency_seconds_sum") < 7 * 10
    counts = list(buckets(text, "streamer_append_latency_seconds").values())
    assert counts == sorted(counts) and counts[-1] == 7, "cumulative, +Inf holds all"
    assert len(counts) == 14, "bounded: 13 fixed buckets and +Inf"


async def test_commit_group_size_histogram_matches_the_writer(live_server: LiveServer) -> None:
    """Concurrent appends share commit groups; the histogram counts every group once
    with its size, so its sum is the operations committed and its count the groups."""
    client = live_server.client()
    job = await live_server.create_job()
    url = f"/api/v1/jobs/{job}/events"
    for _ in range(5):  # until a group of more than one was seen (at once, in practice)
        rs = await asyncio.gather(*(client.post(url, json={"data": "x\n"}) for _ in range(40)))
        assert all(r.status_code == 201 for r in rs)
        text = (await client.get("/metrics")).text
        sizes = buckets(text, "streamer_commit_group_size")
        if sizes["1.0"] < sizes["+Inf"]:
            break
    assert sizes["1.0"] < sizes["+Inf"], "40 concurrent appends never shared a commit"
    assert sample(text, "streamer_commit_group_size_count") == sample(
        text, "streamer_commit_groups_total"
    )
    assert sample(text, "streamer_commit_group_size_sum") == sample(
        text, "streamer_commit_group_operations_total"
    )
    assert list(sizes) == [*(f"{float(b)}" for b in GROUP_SIZE_BUCKETS), "+Inf"]


async def test_readers_catching_up_and_slow_reader_closes(settings: Settings) -> None:
    """An SSE reader that stops reading in the middle of its replay is "catching up"
    while its write is stuck, then closed by the send timeout: one slow-reader close,
    and it leaves the live readers."""
    # Pages of 4 events (400 kB): the replay takes many writes, and one of them blocks.
    changes = {"send_timeout_seconds": 2.0, "max_page_events": 4}
    async with serving(settings.replace(**changes)) as server:
        client = server.client()
        job = await server.create_job(client)
        await append_bytes(client, job, 6)  # more than the kernel buffers hold
        sock = stalled_socket(server.port, stream_request(server, job, "sse"))
        try:
            text = await wait_for_metric(client, 'streamer_readers_catching_up{transport="sse"}', 1)
            assert sample(text, 'streamer_live_readers{transport="sse"}') == 1
            text = await wait_for_metric(
                client, 'streamer_slow_reader_closes_total{transport="sse"}', 1
            )
            assert sample(text, 'streamer_readers_catching_up{transport="sse"}') == 0
            assert sample(text, 'streamer_live_readers{transport="sse"}') == 0
            assert sample(text, 'streamer_slow_reader_closes_total{transport="ws"}') == 0
        finally:
            sock.close()


async def test_a_slow_live_websocket_reader_close_is_counted(settings: Settings) -> None:
    async with serving(settings.replace(send_timeout_seconds=1.0)) as server:
        client = server.client()
        job = await server.create_job(client)
        sock = stalled_socket(server.port, stream_request(server, job, "ws"))
        try:
            await wait_for_metric(client, 'streamer_live_readers{transport="ws"}', 1)
            await append_bytes(client, job, 6)  # live: the reader falls behind, then stalls
            text = await wait_for_metric(
                client, 'streamer_slow_reader_closes_total{transport="ws"}', 1
            )
            assert sample(text, 'streamer_live_readers{transport="ws"}') == 0
            assert sample(text, 'streamer_streams_total{transport="ws"}') == 1
        finally:
            sock.close()


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "asgi"])
async def test_task_gauge_and_open_streams(settings: Settings, lean: bool) -> None:
    """``streamer_tasks`` counts the loop's tasks (the soak test relies on it): on the
    lean path an open stream holds none (it is state the hub pumps), on the ASGI path
    each holds its response coroutine; either way none is left when they end."""
    async with serving(settings, lean=lean) as live_server:
        await _task_gauge(live_server, lean)


async def _task_gauge(live_server: LiveServer, lean: bool) -> None:
    client = live_server.client()
    job = await live_server.create_job()
    before = sample((await client.get("/metrics")).text, "streamer_tasks")
    socks = [stalled_socket(live_server.port, stream_request(live_server, job, "sse"))]
    socks += [stalled_socket(live_server.port, stream_request(live_server, job, "ws"))]
    socks += [stalled_socket(live_server.port, stream_request(live_server, job, "sse"))]
    try:
        text = await wait_for_metric(client, 'streamer_live_readers{transport="sse"}', 2)
        await wait_for_metric(client, 'streamer_live_readers{transport="ws"}', 1)
        during = sample((await client.get("/metrics")).text, "streamer_tasks")
        if lean:
            assert during == before, (before, during, text)
        else:
            assert during >= before + 3, (before, during, text)
    finally:
        for sock in socks:
            sock.close()
    await wait_for_metric(client, 'streamer_live_readers{transport="sse"}', 0)
    await wait_for_metric(client, 'streamer_live_readers{transport="ws"}', 0)
    await wait_for_metric(client, "streamer_tasks", before)
    text = (await client.get("/metrics")).text
    assert sample(text, "process_open_fds") > 0 and sample(text, "process_resident_memory_bytes")
