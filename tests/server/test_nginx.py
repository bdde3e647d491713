"""deploy/nginx.conf, as documented, in front of two nodes on one PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets

from ..support import REPO
from ..support.clients import parse_sse
from ..support.cluster import free_port
from ..support.postgres import pg_database
from ..support.procs import STREAMER, cli_user_key, wait_until_up

CONFIG = REPO / "deploy" / "nginx.conf"
READ_TIMEOUT = 3  # seconds: short, so an idle period longer than it fits in a test
KEEPALIVE = 1.0

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")


@dataclass
class Front:
    url: str
    key: str


@pytest.fixture
async def front(tmp_path: Path) -> AsyncIterator[Front]:
    async with pg_database() as (db_url, _):
        key = cli_user_key(db_url, "n")
        env = {**os.environ, "STREAMER_KEEPALIVE_SECONDS": str(KEEPALIVE)}
        procs: list[subprocess.Popen[bytes]] = []
        try:
            ports = [free_port(), free_port()]
            for port in ports:
                procs.append(
                    subprocess.Popen(
                        [
                            STREAMER,
                            "serve",
                            "--db",
                            db_url,
                            "--port",
                            str(port),
                            "--log-level",
                            "warning",
                        ],
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
                wait_until_up(f"http://127.0.0.1:{port}/readyz", procs[-1], "node")
            listen = free_port()
            prefix = tmp_path / "nginx"
            prefix.mkdir()
            conf = CONFIG.read_text()
            for name, value in {
                "@LISTEN@": f"127.0.0.1:{listen}",
                "@NODE_A@": f"127.0.0.1:{ports[0]}",
                "@NODE_B@": f"127.0.0.1:{ports[1]}",
                "@PREFIX@": str(prefix),
                "@READ_TIMEOUT@": f"{READ_TIMEOUT}s",
            }.items():
                conf = conf.replace(name, value)
            (prefix / "nginx.conf").write_text(conf)
            procs.append(
                subprocess.Popen(
                    [
                        "nginx",
                        "-p",
                        str(prefix),
                        "-c",
                        str(prefix / "nginx.conf"),
                        "-e",
                        str(prefix / "error.log"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            wait_until_up(f"http://127.0.0.1:{listen}/healthz", procs[-1], "nginx", status=0)
            yield Front(f"http://127.0.0.1:{listen}", key)
        finally:
            for proc in reversed(procs):
                proc.send_signal(signal.SIGTERM)
                proc.wait(15)


async def test_sse_through_nginx_is_unbuffered_and_survives_idle(front: Front) -> None:
    headers = {"Authorization": f"Bearer {front.key}"}
    async with httpx.AsyncClient(base_url=front.url, headers=headers, timeout=30) as client:
        job = (await client.post("/api/v1/jobs", json={})).json()["id"]
        async with client.stream("GET", f"/api/v1/jobs/{job}/events/stream") as response:
            assert response.status_code == 200
            items = parse_sse(response.aiter_bytes())

            async def next_event() -> int:
                while isinstance(item := await anext(items), str):
                    pass
                return int(item.id or -1)

            await client.post(f"/api/v1/jobs/{job}/events", json={"data": "first\n"})
            # One small event, nothing after it: a buffering proxy would hold it back.
            began = time.monotonic()
            assert await asyncio.wait_for(next_event(), 5) == 0
            first_event_seconds = time.monotonic() - began
            await asyncio.sleep(READ_TIMEOUT + 2)  # idle for longer than nginx's timeout
            await client.post(f"/api/v1/jobs/{job}/events", json={"data": "after idle\n"})
            assert await asyncio.wait_for(next_event(), 5) == 1  # same connection
    print(f"first event through nginx after {first_event_seconds * 1000:.1f} ms")


async def test_websocket_through_nginx_survives_idle(front: Front) -> None:
    headers = {"Authorization": f"Bearer {front.key}"}
    async with httpx.AsyncClient(base_url=front.url, headers=headers, timeout=30) as client:
        job = (await client.post("/api/v1/jobs", json={})).json()["id"]
        ws_url = front.url.replace("http", "ws") + f"/api/v1/jobs/{job}/events/ws"
        async with websockets.connect(ws_url, additional_headers=headers) as ws:
            await client.post(f"/api/v1/jobs/{job}/events", json={"data": "first\n"})
            assert '"index":0' in await asyncio.wait_for(ws.recv(), 5)
            await asyncio.sleep(READ_TIMEOUT + 2)
            await client.post(f"/api/v1/jobs/{job}/events", json={"data": "after idle\n"})
            assert '"index":1' in await asyncio.wait_for(ws.recv(), 5)
