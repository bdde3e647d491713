"""Hostile clients: whatever anyone who can reach the port sends, memory and
connections stay bounded, healthy clients keep being served, nothing acknowledged is
lost, and memory comes back afterwards.

Each attack runs from 127.0.0.2 (a loopback address of its own, as a hostile host
would have) against a real ``streamer serve`` process, at a small size here;
``python -m bench.hostile`` runs the same attacks with 1,000 connections and a
minute's settling and records the figures. The attacks live in ``bench/hostile.py``.
"""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.common import StreamerServer
from bench.hostile import (
    ATTACKER,
    RSS,
    Healthy,
    masked_frame,
    ping_flood,
    pipelining,
    slowloris,
    stalled_readers,
    ws_handshake,
)
from streamer.server.settings import Settings

from ..support.live import serving
from ..support.postgres import pg_database

MIB = 2**20


@pytest.fixture
def server(tmp_path: Path) -> Iterator[StreamerServer]:
    """``streamer serve`` with a descriptor limit of 256 (its soft and hard limit),
    so an attack can ask for more descriptors than the process has."""
    process = StreamerServer(tmp_path, fd_limit=256)
    process.env = {"STREAMER_MAX_STREAMS_PER_USER": "10000", "STREAMER_MEMORY_TRIM_SECONDS": "1"}
    process.start()
    try:
        yield process
    finally:
        process.stop()


async def under_attack(
    server: StreamerServer, seconds: float, attack: Awaitable[Any]
) -> tuple[Healthy, RSS, float, Any]:
    """Healthy clients for ``seconds`` beside the attack, RSS sampled throughout; the
    healthy clients, the samples, idle RSS (MiB) and what the attack returned."""
    job = server.create_job("healthy")
    healthy = Healthy(server.url, server.key, job)
    rss = RSS(server.pid)
    idle = rss.now()
    with rss:
        hostile = asyncio.ensure_future(attack)
        await healthy.run(time.monotonic() + seconds)
        outcome = await hostile
    return healthy, rss, idle, outcome


def assert_healthy(healthy: Healthy) -> None:
    assert healthy.success >= 0.99, (healthy.ok, healthy.failed, healthy.errors[:5])
    assert healthy.exact, "the healthy reader missed or repeated an acknowledged event"
    assert len(healthy.acked) > 5


async def settled(rss: RSS, idle: float, slack_mb: float, seconds: float = 20) -> float:
    """RSS once it is back within ``slack_mb`` of idle (bounded wait); the last value."""
    async with asyncio.timeout(seconds):
        while (now := rss.now()) > idle + slack_mb:
            await asyncio.sleep(0.5)
    return now


async def test_an_unauthenticated_websocket_is_refused_before_any_frame(
    server: StreamerServer,
) -> None:
    stream = server.create_job("target")
    path = f"/api/v1/jobs/{stream}/events/ws"
    flood = ping_flood(server.port, 100, 3, path, None)
    healthy, rss, idle, outcome = await under_attack(server, 3, flood)
    assert_healthy(healthy)
    assert outcome.refused == 100 and outcome.opened == 0, outcome
    assert rss.peak / MIB < idle + 20


async def test_a_ping_flood_closes_the_flooder_and_memory_stays_bounded(
    server: StreamerServer,
) -> None:
    stream = server.create_job("target")
    path = f"/api/v1/jobs/{stream}/events/ws"
    flood = ping_flood(server.port, 100, 4, path, server.key)
    healthy, rss, idle, outcome = await under_attack(server, 4, flood)
    assert_healthy(healthy)
    assert rss.peak / MIB < idle + 100
    assert outcome.closed_by_server == 100, outcome


async def test_a_pipelining_flood_is_paused_and_memory_comes_back(server: StreamerServer) -> None:
    flood = pipelining(server.port, 20, 4, 100_000)
    healthy, rss, idle, _ = await under_attack(server, 4, flood)
    assert_healthy(healthy)
    assert rss.peak / MIB < idle + 100
    await settled(rss, idle, slack_mb=max(10, idle * 0.2))


async def test_slowloris_beyond_the_descriptor_limit_does_not_stop_service(
    server: StreamerServer,
) -> None:
    """300 connections sending one header byte a second, against a process allowed 256
    descriptors: the oldest idle ones make room, health checks and streams go on."""
    healthy, rss, idle, outcome = await under_attack(server, 7, slowloris(server.port, 300, 7))
    assert_healthy(healthy)
    assert rss.peak / MIB < idle + 100
    assert outcome.closed_by_server > 0, outcome  # the header timeout, or room made
    metrics = httpx.get(server.url + "/metrics", timeout=5).text
    assert re.search(r"^process_open_fds \d", metrics, re.M)


async def test_stalled_readers_cost_bounded_memory_that_comes_back(server: StreamerServer) -> None:
    stream = server.create_job("burst")
    path = f"/api/v1/jobs/{stream}/events/stream"

    async def attack() -> None:
        stalled = asyncio.ensure_future(stalled_readers(server.port, 50, 5, path, server.key))
        await asyncio.sleep(1)
        burst = [{"data": "x" * 1000}] * 1000
        for _ in range(20):
            await asyncio.to_thread(server.append, stream, burst)
        await stalled

    healthy, rss, idle, _ = await under_attack(server, 5, attack())
    assert_healthy(healthy)
    assert rss.peak / MIB < idle + 100
    await settled(rss, idle, slack_mb=max(15, idle * 0.3))


async def test_a_client_that_leaves_mid_body_is_one_quiet_line(
    server: StreamerServer,
) -> None:
    job = server.create_job("upload")
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(
                f"POST /api/v1/jobs/{job}/events HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {server.key}\r\nContent-Length: 100000\r\n\r\n".encode()
                + b'{"data": "'
                + b"x" * 1000
            )
    r = httpx.get(
        f"{server.url}/api/v1/jobs/{job}", headers={"Authorization": f"Bearer {server.key}"}
    )
    assert r.json()["event_count"] == 0
    log = server.log_tail()
    assert "Traceback" not in log and " 500 " not in log


async def test_an_invalid_utf8_frame_closes_1007_without_a_traceback(
    server: StreamerServer,
) -> None:
    job = server.create_job("frames")
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.port, local_addr=(ATTACKER, 0)
    )
    writer.write(ws_handshake(f"/api/v1/jobs/{job}/events/ws", server.key))
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    writer.write(masked_frame(0x1, b"\xff\xfe not utf-8"))
    data = await asyncio.wait_for(reader.read(), 10)
    assert data[:1] == b"\x88" and int.from_bytes(data[2:4], "big") == 1007
    writer.close()
    assert "Traceback" not in server.log_tail()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_text_no_database_can_hold_is_a_4xx_naming_the_field(
    tmp_path: Path, backend: str
) -> None:
    """NUL in a name, a runner field, a job id in the path or a list cursor: a 4xx
    naming the field on both backends, never "database unavailable"."""
    if backend == "postgres":
        async with pg_database() as (url, _):
            await _refusals(Settings(db=url))
    else:
        await _refusals(Settings(db=str(tmp_path / "s.db")))


async def _refusals(settings: Settings) -> None:
    async with serving(settings) as live:
        client = live.client()
        job = await live.create_job(client)
        r = await client.post("/api/v1/jobs", json={"name": "a\x00b"})
        assert (r.status_code, r.json().get("field")) == (422, "name")
        r = await client.patch(f"/api/v1/jobs/{job}", json={"container_id": "c\x00"})
        assert (r.status_code, r.json().get("field")) == (422, "container_id")
        for path in (f"/api/v1/jobs/{job}%00", "/api/v1/jobs/%00/events", "/api/v1/jobs/a%00b/log"):
            assert (await client.get(path)).status_code == 404, path
        cursor = base64.urlsafe_b64encode(b"2026-01-01T00:00:00.000000Z|a\x00b").decode()
        r = await client.get("/api/v1/jobs", params={"cursor": cursor})
        assert (r.status_code, r.json().get("field")) == (400, "cursor")
        r = await client.post(
            f"/api/v1/jobs/{job}/events",
            content=b'{"data": "lone \\ud800", "type": "log", "x": 1.5}',
        )
        assert r.status_code in (400, 422) and r.json()["status"] == r.status_code
        assert (await client.get(f"/api/v1/jobs/{job}")).json()["event_count"] == 0
