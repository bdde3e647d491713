"""Reliability under faults: a full disk, readers that stop reading (a socket never
read, a reader process stopped with SIGSTOP, a half-open WebSocket), fsync discipline."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from streamer.core import keys
from streamer.core.models import NewEvent
from streamer.server.run import build_server
from streamer.server.settings import Settings
from streamer.storage.sqlite import SQLiteStorage

from ..support.live import LiveServer, free_socket
from ..support.procs import ServerProcess


@pytest.fixture
def small_disk(tmp_path: Path) -> AsyncIterator[Path]:
    """A 4 MiB tmpfs of our own: a disk that really fills up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_full_disk_fails_appends_cleanly_and_recovers_without_restart(
    small_disk: Path,
) -> None:
    server = LiveServer(Settings(db=str(small_disk / "s.db")))
    await server.start()
    try:
        server.key = await server.new_user("owner")
        client = server.client()
        job = await server.create_job(client)
        filler = small_disk / "filler"
        free = shutil.disk_usage(small_disk).free
        filler.write_bytes(b"\0" * (free - 700_000))  # leave ~700 kB
        reader = asyncio.create_task(server.sse(job).collect())
        stored_ok: list[int] = []
        statuses: list[int] = []
        line = "x" * 16_000 + "\n"
        for _ in range(200):
            r = await client.post(f"/api/v1/jobs/{job}/events", json={"data": line})
            statuses.append(r.status_code)
            if r.status_code == 201:
                stored_ok.append(r.json()["first_index"])
            elif len(statuses) > 5 and statuses[-3:].count(r.status_code) == 3:
                break
        failures = [s for s in statuses if s != 201]
        assert failures, "the disk never filled"
        assert set(failures) <= {503, 507}, failures
        assert r.headers["content-type"] == "application/problem+json"
        page = (await client.get(f"/api/v1/jobs/{job}/events")).json()
        assert [e["index"] for e in page["events"]] == stored_ok, "earlier events stay readable"

        filler.unlink()  # space is back: appends work again, no restart
        r = await client.post(f"/api/v1/jobs/{job}/events", json={"data": "after\n"})
        assert r.status_code == 201 and r.json()["first_index"] == len(stored_ok)
        r = await client.post(
            f"/api/v1/jobs/{job}/events", json={"type": "complete", "success": True}
        )
        assert r.status_code == 201
        delivered = [int(m.id or -1) for m in await asyncio.wait_for(reader, 20)]
        assert delivered == list(range(len(stored_ok) + 2)), "nothing that failed was delivered"
        with sqlite3.connect(small_disk / "s.db") as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        for c in server.clients:
            await c.aclose()
        await server.stop()


async def test_a_reader_that_stops_reading_is_closed_and_others_keep_up(
    settings: Settings,
) -> None:
    """A WebSocket that never reads and an SSE client whose socket is never read are
    bounded by the buffer and the send timeout: closed, their memory released, while
    healthy readers get every event."""
    server = LiveServer(settings.replace(send_timeout_seconds=1.0, subscriber_buffer=64))
    await server.start()
    try:
        server.key = await server.new_user("owner")
        client = server.client()
        job = await server.create_job(client)
        healthy = [asyncio.create_task(server.sse(job).collect()) for _ in range(20)]
        # Raw sockets that send a request and never read a byte (a client library
        # would read ahead into its own queue and hide the stall).
        path = f"/api/v1/jobs/{job}/events"
        auth = f"Authorization: Bearer {server.key}\r\nHost: 127.0.0.1\r\n"
        requests = [
            f"GET {path}/stream HTTP/1.1\r\n{auth}\r\n",
            f"GET {path}/ws HTTP/1.1\r\n{auth}Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        ]
        stalled = []
        for request in requests:
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(request.encode())
            stalled.append(sock)
        try:
            while server.resources.hub.subscriber_count < 22:
                await asyncio.sleep(0.01)
            chunk = "y" * 60_000 + "\n"
            total = 150  # ~9 MB: far more than socket buffers hold
            for _ in range(0, total, 10):
                events = [{"data": chunk}] * 10
                r = await client.post(f"/api/v1/jobs/{job}/events", json={"events": events})
                assert r.status_code == 201
            r = await client.post(
                f"/api/v1/jobs/{job}/events", json={"type": "complete", "success": True}
            )
            assert r.status_code == 201
            for task in healthy:
                messages = await asyncio.wait_for(task, 30)
                assert [int(m.id or -1) for m in messages] == list(range(total + 1))

            async def stalled_ones_closed() -> None:
                while server.resources.streams.open_streams:
                    await asyncio.sleep(0.05)

            # Closed by the send timeout (1 s here), well within 10 s.
            await asyncio.wait_for(stalled_ones_closed(), 10)
            assert server.resources.hub.subscriber_count == 0, "their buffers were released"
        finally:
            for sock in stalled:
                sock.close()
    finally:
        for c in server.clients:
            await c.aclose()
        await server.stop()


async def test_timestamps_never_go_back_even_if_the_clock_does(tmp_path: Path) -> None:
    storage = SQLiteStorage(str(tmp_path / "t.db"))
    await storage.open()
    try:
        user = await storage.identity.create_user("u", "u@x")
        job = await storage.jobs.create_job(user.id, None, {})
        future = "2999-01-01T00:00:00.000000Z"  # as if the clock had been far ahead
        with sqlite3.connect(tmp_path / "t.db") as conn:
            conn.execute("UPDATE jobs SET last_timestamp = ? WHERE id = ?", (future, job.id))
        [event] = await storage.jobs.append(user.id, job.id, [NewEvent("log", "x", None)])
        assert event.decode()["timestamp"] == future
    finally:
        await storage.close()


FSYNC_SCRIPT = """
import asyncio, sys
from streamer.core.models import NewEvent
from streamer.storage.sqlite import SQLiteStorage

async def main():
    storage = SQLiteStorage(sys.argv[1], sync=sys.argv[2])
    await storage.open()
    user = await storage.identity.create_user("u", "u@x")
    job = await storage.jobs.create_job(user.id, None, {})
    for i in range(int(sys.argv[3])):  # one at a time: one commit group each
        await storage.jobs.append(user.id, job.id, [NewEvent("log", str(i), None)])
    await storage.close()

asyncio.run(main())
"""


def count_syncs(tmp_path: Path, sync: str, appends: int) -> int:
    log = tmp_path / f"strace-{sync}-{appends}.log"
    done = subprocess.run(
        [
            "strace",
            "-f",
            "-e",
            "trace=fsync,fdatasync",
            "-o",
            str(log),
            sys.executable,
            "-c",
            FSYNC_SCRIPT,
            str(tmp_path / f"{sync}-{appends}.db"),
            sync,
            str(appends),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    if done.returncode != 0 and "ptrace" in done.stderr:
        pytest.skip(f"strace cannot trace here: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stderr
    return sum(1 for line in log.read_text().splitlines() if "sync(" in line)


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_sync_full_fsyncs_every_commit_group_and_normal_does_not(tmp_path: Path) -> None:
    """WAL + synchronous=FULL syncs the WAL at every commit (survives power loss);
    NORMAL syncs only at checkpoints (survives a crash of the process, not of the OS).
    Counted as the difference between 10 and 50 appends, so start-up and close cancel."""
    full = count_syncs(tmp_path, "full", 50) - count_syncs(tmp_path, "full", 10)
    normal = count_syncs(tmp_path, "normal", 50) - count_syncs(tmp_path, "normal", 10)
    assert full >= 40, full
    assert normal <= 2, normal


# A reader process: asks for the stream with a 4 KiB receive buffer (so a few MB fill
# the path to it; curl's autotuned buffer would take tens), says "ready" once the
# stream has started, then reads until the end. The test stops it with SIGSTOP.
STOPPABLE_READER = """
import os, socket, sys
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
sock.connect(("127.0.0.1", int(sys.argv[1])))
sock.sendall(("GET " + sys.argv[2] + " HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n"
              "Authorization: Bearer " + os.environ["READER_KEY"] + "\\r\\n\\r\\n").encode())
sock.recv(1024)
print("ready", flush=True)
while sock.recv(65536):
    pass
"""


async def sse_ids(port: int, path: str, key: str) -> list[int]:
    """Every SSE event id of one stream, until the server ends it. Scans raw bytes for
    the ``id:`` lines (no per-line Python work): 100 of these read hundreds of MB."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    ids: list[int] = []
    tail = b""
    try:
        while chunk := await reader.read(1 << 18):
            data, start = tail + chunk, 0
            while (i := data.find(b"\nid: ", start)) >= 0:
                end = data.find(b"\n", i + 5)
                if end < 0:
                    break
                ids.append(int(data[i + 5 : end]))
                start = end
            tail = data[max(start, len(data) - 64) :] if i < 0 else data[i:]
    finally:
        writer.close()
    return ids


def live_sse_readers(metrics: str) -> int:
    line = next(
        x for x in metrics.splitlines() if x.startswith('streamer_live_readers{transport="sse"}')
    )
    return int(float(line.rsplit(" ", 1)[1]))


async def test_a_stopped_reader_process_is_closed_while_100_others_get_everything(
    tmp_path: Path,
) -> None:
    """An SSE reader process stopped with SIGSTOP while a producer appends MBs: the
    server closes it (send timeout, 1 s here) within 10 s of the stop, it leaves the
    live readers in /metrics (its buffer and task are released), and 100 healthy
    readers of the same job receive every event, in order, meanwhile."""
    server = ServerProcess(
        tmp_path / "s.db",
        env={
            "STREAMER_SEND_TIMEOUT_SECONDS": "1",
            "STREAMER_SUBSCRIBER_BUFFER": "64",
            "STREAMER_MAX_STREAMS_PER_USER": "200",
        },
    )
    await asyncio.to_thread(server.start)
    stopped: subprocess.Popen[bytes] | None = None
    try:
        headers = {"Authorization": f"Bearer {server.key}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as client:
            job = (await client.post("/api/v1/jobs", json={})).json()["id"]
            path = f"/api/v1/jobs/{job}/events/stream"
            healthy = [
                asyncio.create_task(sse_ids(server.port, path, server.key)) for _ in range(100)
            ]
            stopped = subprocess.Popen(
                [sys.executable, "-c", STOPPABLE_READER, str(server.port), path],
                env={**os.environ, "READER_KEY": server.key},
                stdout=subprocess.PIPE,
            )
            assert stopped.stdout is not None
            assert await asyncio.to_thread(stopped.stdout.readline) == b"ready\n"
            async with asyncio.timeout(20):
                while live_sse_readers((await client.get("/metrics")).text) < 101:
                    await asyncio.sleep(0.05)
            stopped.send_signal(signal.SIGSTOP)
            stopped_at = time.monotonic()
            batch = {"events": [{"data": "p" * 20_000 + "\n"}] * 10}  # 200 kB a request
            appended, closed_after = 0, None
            while appended < 1500:  # 30 MB at most; a few MB fill the stopped path
                r = await client.post(f"/api/v1/jobs/{job}/events", json=batch)
                assert r.status_code == 201
                appended += 10
                if live_sse_readers((await client.get("/metrics")).text) == 100:
                    closed_after = time.monotonic() - stopped_at
                    break
            async with asyncio.timeout(max(1.0, 10 - (time.monotonic() - stopped_at))):
                while closed_after is None:
                    await asyncio.sleep(0.05)
                    if live_sse_readers((await client.get("/metrics")).text) == 100:
                        closed_after = time.monotonic() - stopped_at
            assert closed_after < 10, closed_after
            metrics = (await client.get("/metrics")).text
            assert 'streamer_slow_reader_closes_total{transport="sse"} 1.0' in metrics
            done = await client.post(
                f"/api/v1/jobs/{job}/events", json={"type": "complete", "success": True}
            )
            assert done.status_code == 201
            results = await asyncio.wait_for(asyncio.gather(*healthy), 60)
        expected = list(range(appended + 1))
        assert all(ids == expected for ids in results), "every event, in order, to all 100"
        print(f"stopped reader closed {closed_after:.2f} s after SIGSTOP; {appended} events")
    finally:
        if stopped is not None:
            stopped.kill()  # SIGKILL ends a stopped process too
            stopped.wait(10)
            if stopped.stdout is not None:
                stopped.stdout.close()
        server.kill()


async def test_a_half_open_websocket_is_closed_by_the_ping_timeout(settings: Settings) -> None:
    """A peer that completed the handshake and then never reads and never answers a
    ping (a vanished laptop, a dead NAT entry): nothing is written to it, so no send
    timeout can fire; the server's ping does, within ping interval + ping timeout.

    server.py pings every ``keepalive_seconds`` and waits ``min(20, 2 * keepalive)``
    for the pong: 1 s and 2 s here."""
    sock = free_socket()
    port = sock.getsockname()[1]
    server = build_server(settings.replace(port=port, keepalive_seconds=1.0), log_level="warning")
    task = asyncio.create_task(server.serve(sockets=[sock]))
    peer = None
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        res = server.app.state.resources
        _, key = await keys.create_user_with_key(res.storage.identity, "owner", "owner@x")
        user = await keys.verify_key(res.storage.identity, key)
        job = (await res.storage.jobs.create_job(user.id, None, {})).id
        peer = socket.create_connection(("127.0.0.1", port))
        peer.sendall(
            f"GET /api/v1/jobs/{job}/events/ws HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {key}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        peer.settimeout(10)
        answer = await asyncio.to_thread(peer.recv, 1024)  # the server runs in this loop
        assert answer.startswith(b"HTTP/1.1 101")  # then: silence, no pongs
        opened = time.monotonic()
        while not res.streams.open_streams:
            await asyncio.sleep(0.01)
        [stream] = res.streams.open_streams
        bound = 1.0 + min(20.0, 2 * 1.0)  # a ping each keepalive (1 s), its pong due in 2 s
        async with asyncio.timeout(bound + 3):
            while res.streams.open_streams:
                await asyncio.sleep(0.05)
        took = time.monotonic() - opened
        assert bound - 0.5 <= took <= bound + 3, (took, bound)
        assert stream.closed == "disconnect" and res.hub.subscriber_count == 0
        print(f"half-open WebSocket closed after {took:.2f} s (interval + timeout {bound} s)")
    finally:
        if peer is not None:
            peer.close()
        server.should_exit = True
        await task
