"""Hostile clients against a real ``streamer serve``, with healthy clients beside them.

``python -m bench.hostile [--connections N] [--only ATTACK] [--settle S] [--exe PATH]``

Each attack opens N connections (default 1,000) from ``127.0.0.2`` (a loopback
address of its own, as a hostile host would have) while healthy clients on
``127.0.0.1`` keep appending, reading and health-checking, and one healthy SSE
reader follows the job. It records, per attack: the healthy requests' success
ratio, whether the healthy stream got every acknowledged event exactly once, the
server's RSS when idle, at its peak during the attack and ``--settle`` seconds
after it (default 60), and what the attack achieved (connections refused, closed).
The server runs with ``RLIMIT_NOFILE`` 1,024 (systemd's default), so the slowloris
attack asks for more descriptors than the process has. ``--exe`` measures another
build (the ``streamer`` of another virtualenv) for a before/after comparison.

The attacks are plain asyncio sockets, bounded in count and time, loopback only;
``tests/server/test_hostile.py`` runs each at a small size and asserts the bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .common import RESULTS, Recorder, StreamerServer, rss_bytes

ATTACKER = "127.0.0.2"
HEALTHY = "127.0.0.1"
ATTACKS = ("ping_flood", "ping_flood_anonymous", "pipelining", "slowloris", "stalled_readers")
MASK = b"\x11\x22\x33\x44"


def ws_handshake(path: str, key: str | None) -> bytes:
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    nonce = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\n"
        f"Sec-WebSocket-Version: 13\r\n{auth}\r\n"
    ).encode()


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (masked, final)."""
    size = len(payload)
    head = bytes((0x80 | opcode, 0x80 | size)) if size < 126 else b""
    data = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return head + MASK + data


@dataclass
class Outcome:
    """What the attacking connections met."""

    opened: int = 0
    refused: int = 0  # not admitted, or answered with an error status
    closed_by_server: int = 0
    still_open: int = 0


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    try:
        return await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, local_addr=(ATTACKER, 0)), 10
        )
    except (OSError, TimeoutError):
        return None


async def _closed(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the server closes the connection within ``seconds`` (reading nothing
    but the end: a client that reads nothing would leave the data in the socket)."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass
        return True
    except (TimeoutError, OSError):
        return False


async def each(n: int, attack: Callable[[int], Awaitable[str]]) -> Outcome:
    results = await asyncio.gather(*(attack(i) for i in range(n)), return_exceptions=True)
    outcome = Outcome()
    for result in results:
        kind = result if isinstance(result, str) else "refused"
        outcome.opened += kind != "refused"
        outcome.refused += kind == "refused"
        outcome.closed_by_server += kind == "closed"
        outcome.still_open += kind == "open"
    return outcome


async def ping_flood(port: int, n: int, seconds: float, path: str, key: str | None) -> Outcome:
    """WebSockets that send pings and never read the pongs (without a key each
    handshake should be refused before any frame)."""

    async def one(_: int) -> str:
        opened = await _open(port)
        if opened is None:
            return "refused"
        reader, writer = opened
        try:
            writer.write(ws_handshake(path, key))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if not head.startswith(b"HTTP/1.1 101"):
                return "refused"
            ping = masked_frame(0x9, b"p" * 125) * 64
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if writer.transport.is_closing() or reader.at_eof():
                    return "closed"
                writer.write(ping)
                try:
                    await asyncio.wait_for(writer.drain(), 0.5)
                except TimeoutError:
                    pass  # the server stopped reading us: fine, keep pushing until closed
            return "closed" if await _closed(reader, 2) else "open"
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            return "closed"
        finally:
            writer.close()

    return await each(n, one)


async def pipelining(port: int, n: int, seconds: float, requests: int) -> Outcome:
    """Connections that pipeline ``requests`` tiny requests each and never read."""
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"

    async def one(_: int) -> str:
        opened = await _open(port)
        if opened is None:
            return "refused"
        reader, writer = opened
        try:
            batch = request * 1000
            deadline = time.monotonic() + seconds
            for _ in range(requests // 1000):
                if time.monotonic() > deadline or writer.transport.is_closing():
                    break
                writer.write(batch)
                try:
                    await asyncio.wait_for(writer.drain(), 0.5)
                except TimeoutError:
                    pass  # the server paused reading: exactly the point
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            return "closed" if reader.at_eof() else "open"
        except OSError:
            return "closed"
        finally:
            writer.close()

    return await each(n, one)


async def slowloris(port: int, n: int, seconds: float) -> Outcome:
    """Connections that send a request head one byte a second, never finishing."""
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 10_000

    async def one(_: int) -> str:
        opened = await _open(port)
        if opened is None:
            return "refused"
        reader, writer = opened
        try:
            deadline = time.monotonic() + seconds
            for byte in head:
                if time.monotonic() > deadline:
                    return "open"
                writer.write(bytes((byte,)))
                await writer.drain()
                if await _closed(reader, 1.0):
                    return "closed"
            return "open"
        except OSError:
            return "closed"
        finally:
            writer.close()

    return await each(n, one)


async def stalled_readers(port: int, n: int, seconds: float, path: str, key: str) -> Outcome:
    """SSE readers that read the response head and then nothing (the events pile up
    in their sockets while healthy producers append)."""

    async def one(_: int) -> str:
        opened = await _open(port)
        if opened is None:
            return "refused"
        reader, writer = opened
        try:
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if not head.startswith(b"HTTP/1.1 200"):
                return "refused"
            await asyncio.sleep(seconds)
            return "open"
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            return "closed"
        finally:
            writer.close()

    return await each(n, one)


@dataclass
class Healthy:
    """Healthy clients during an attack: requests on fresh and kept-alive connections,
    appends whose acknowledgement is checked against a live SSE reader."""

    url: str
    key: str
    job: str
    ok: int = 0
    failed: int = 0
    acked: list[int] = field(default_factory=list)
    seen: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def run(self, until: float) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        transport = httpx.AsyncHTTPTransport(local_address=HEALTHY)
        async with httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=10, transport=transport
        ) as kept:
            reader = asyncio.create_task(self.follow(kept))
            i = 0
            while time.monotonic() < until:
                i += 1
                fresh = httpx.AsyncClient(
                    base_url=self.url,
                    headers=headers,
                    timeout=10,
                    transport=httpx.AsyncHTTPTransport(local_address=HEALTHY),
                )
                async with fresh:
                    await self.request(fresh.get("/healthz"))
                r = await self.request(
                    kept.post(f"/api/v1/jobs/{self.job}/events", json={"data": f"{i}\n"})
                )
                if r is not None and r.status_code == 201:
                    self.acked.append(r.json()["first_index"])
                await self.request(kept.get(f"/api/v1/jobs/{self.job}"))
                await asyncio.sleep(0.02)
            await self.request(
                kept.post(
                    f"/api/v1/jobs/{self.job}/events", json={"type": "complete", "success": True}
                )
            )
            try:
                await asyncio.wait_for(reader, 30)
            except TimeoutError:
                self.errors.append("the healthy SSE reader did not reach the end")

    async def request(self, call: Awaitable[httpx.Response]) -> httpx.Response | None:
        try:
            response = await call
        except httpx.HTTPError as exc:
            self.failed += 1
            self.errors.append(type(exc).__name__)
            return None
        if response.status_code >= 500:
            self.failed += 1
            self.errors.append(str(response.status_code))
        else:
            self.ok += 1
        return response

    async def follow(self, client: httpx.AsyncClient) -> None:
        """Every event of the job, over SSE, resuming on a drop."""
        last = -1
        while True:
            try:
                headers = {"Last-Event-ID": str(last)} if last >= 0 else {}
                async with client.stream(
                    "GET", f"/api/v1/jobs/{self.job}/events/stream", headers=headers, timeout=30
                ) as response:
                    if response.status_code == 204:
                        return
                    async for line in response.aiter_lines():
                        if line.startswith("data: "):
                            event = json.loads(line[6:])
                            self.seen.append(event["index"])
                            last = event["index"]
                            if event["type"] == "complete":
                                return
            except httpx.HTTPError:
                await asyncio.sleep(0.2)

    @property
    def success(self) -> float:
        total = self.ok + self.failed
        return self.ok / total if total else 0.0

    @property
    def exact(self) -> bool:
        """The reader saw 0, 1, 2, ... once each, and every acknowledged append."""
        return self.seen == list(range(len(self.seen))) and set(self.acked) <= set(self.seen)


class RSS:
    """The server's RSS, sampled every 50 ms while an attack runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    def now(self) -> float:
        return rss_bytes([self.pid]) / 2**20

    async def sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_bytes([self.pid]))
            await asyncio.sleep(0.05)

    def __enter__(self) -> RSS:
        self._task = asyncio.get_running_loop().create_task(self.sample())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


async def attack(
    name: str, server: StreamerServer, n: int, seconds: float, settle: float
) -> dict[str, Any]:
    """One attack with healthy traffic beside it; its figures."""
    job = server.create_job(f"healthy during {name}")
    stream_job = server.create_job(f"target of {name}")
    ws_path = f"/api/v1/jobs/{stream_job}/events/ws"
    sse_path = f"/api/v1/jobs/{stream_job}/events/stream"
    await asyncio.sleep(1)
    rss = RSS(server.pid)
    idle = rss.now()
    healthy = Healthy(server.url, server.key, job)
    attacks: dict[str, Callable[[], Awaitable[Outcome]]] = {
        "ping_flood": lambda: ping_flood(server.port, n, seconds, ws_path, server.key),
        "ping_flood_anonymous": lambda: ping_flood(server.port, n, seconds, ws_path, None),
        "pipelining": lambda: pipelining(server.port, n, seconds, 100_000),
        "slowloris": lambda: slowloris(server.port, n, seconds),
        "stalled_readers": lambda: stalled_readers(server.port, n, seconds, sse_path, server.key),
    }
    began = time.monotonic()
    with rss:
        hostile = asyncio.create_task(attacks[name]())
        if name == "stalled_readers":  # a burst for the stalled readers to not read
            burst = [{"data": "x" * 1000}] * 1000
            for _ in range(50):
                server.append(stream_job, burst)
        await healthy.run(time.monotonic() + seconds)
        outcome = await hostile
    took = time.monotonic() - began
    await asyncio.sleep(settle)
    after = rss.now()
    return {
        "scenario": f"hostile.{name}",
        "connections": n,
        "seconds": round(took, 1),
        "healthy_success": round(healthy.success, 4),
        "healthy_requests": healthy.ok + healthy.failed,
        "healthy_errors": sorted(set(healthy.errors))[:5],
        "healthy_stream_exact": healthy.exact,
        "acked_events": len(healthy.acked),
        "rss_idle_mb": round(idle, 1),
        "rss_peak_mb": round(rss.peak / 2**20, 1),
        "rss_after_mb": round(after, 1),
        "settle_s": settle,
        **{f"attack_{k}": v for k, v in vars(outcome).items()},
        # The bounds of issue #17: healthy traffic served, RSS within idle + 100 MiB
        # during the attack and within 20% of idle after it.
        "held": healthy.success >= 0.99 and rss.peak / 2**20 < idle + 100 and after <= idle * 1.2,
        "verified": healthy.exact,
    }


async def run(args: argparse.Namespace) -> int:
    recorder = Recorder(Path(args.results))
    failed = 0
    with tempfile.TemporaryDirectory(prefix="streamer-hostile-") as tmp:
        for name in args.only or ATTACKS:
            server = StreamerServer(
                Path(tmp), fd_limit=args.fd_limit, exe=Path(args.exe) if args.exe else None
            )
            server.env = {"STREAMER_MAX_STREAMS_PER_USER": "100000"}
            with server:
                row = await attack(name, server, args.connections, args.seconds, args.settle)
            scenario = row.pop("scenario")
            recorder.write(scenario, build=args.label, **row)
            failed += not row["verified"]
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0, help="each attack's length")
    parser.add_argument("--settle", type=float, default=60.0, help="wait before RSS after")
    parser.add_argument("--fd-limit", type=int, default=1024)
    parser.add_argument("--only", action="append", choices=ATTACKS)
    parser.add_argument("--exe", help="the streamer command to measure (another build)")
    parser.add_argument("--label", default="this build", help="recorded as the build's name")
    parser.add_argument("--results", default=str(RESULTS.with_name("hostile.jsonl")))
    raise SystemExit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
