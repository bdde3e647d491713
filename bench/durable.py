"""Scenario: Durable Streams, streamer against the protocol's Node reference server.

Side by side in one run, over the protocol only (``/v1/stream/...``): ``streamer
serve`` (durable: SQLite or PostgreSQL), and ``@durable-streams/server`` 0.3.7 (Node)
in memory and with its file-backed store, installed by this scenario from
``bench/durable/package-lock.json`` (``npm ci``; never by the test suite).

- append, one message per request: 32 producers, one JSON stream each, as fast as
  acknowledged; messages/s and append→ack p50/p95/p99;
- append, batched: 4 producers, JSON arrays of 100 messages;
- catch-up read of a 100,000-message stream: one reader following
  ``Stream-Next-Offset`` until up to date; messages/s;
- SSE live fan-out: 100 readers at ``offset=now``, one producer appending 2,000
  messages at 500/s; delivered messages/s and append→receive p50/p95/p99.

Every message is ``{"p": producer, "s": seq, "t": monotonic ns}``: each stream is
read back (or each reader checks what it got) for count, order, no duplicate and no
gap, so a row's ``verified`` is about deliveries, not only speed. A
``durable.compare`` line per workload gives the ratios (streamer ÷ peer; for
latency, lower is better).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from .common import BENCH, Server, StreamerServer, Suite, latency_ms, ratio
from .loadgen import HTTPConnection, request_head

NODE_DIR = BENCH / "durable"
PRODUCERS_SINGLE, PRODUCERS_BATCH, BATCH, READERS = 32, 4, 100, 100


def npm_install() -> str | None:
    """``npm ci`` in ``bench/durable`` when its install is missing or stale; why not, or None."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node and npm are not installed"
    marker = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    if marker.exists() and marker.stat().st_mtime >= lock.stat().st_mtime:
        return None
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return None if done.returncode == 0 else f"npm ci failed: {done.stderr[-500:]}"


class NodeServer(Server):
    """The reference server (``bench/durable/serve.mjs``), in memory or file-backed."""

    def __init__(self, workdir: Path, file_backed: bool) -> None:
        super().__init__(workdir)
        self.file_backed = file_backed
        self.name = "ds-node-file" if file_backed else "ds-node-memory"
        self.log = workdir / f"{self.name}-{self.port}.log"

    def start(self) -> None:
        args = ["node", "serve.mjs", str(self.port)]
        if self.file_backed:
            data = self.workdir / f"{self.name}-{self.port}-data"
            data.mkdir()
            args.append(str(data))
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(args, cwd=NODE_DIR, stdout=out, stderr=out)
        self._wait_ready("/v1/stream/__ready")

    def stop(self) -> None:
        self.terminate()

    def log_tail(self) -> str:
        try:
            return self.log.read_text()[-2000:]
        except OSError:
            return ""


def auth(server: Server) -> dict[str, str]:
    if isinstance(server, StreamerServer):
        return {"Authorization": f"Bearer {server.key}"}
    return {}


def message(producer: int, seq: int) -> bytes:
    return b'{"p":%d,"s":%d,"t":%d}' % (producer, seq, time.monotonic_ns())


def request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    extra = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return request_head(method, path, headers, extra) + body


async def create(server: Server, path: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers=auth(server)) as client:
        made = await client.put(path, headers={"Content-Type": "application/json"})
        if made.status_code != 201:
            raise RuntimeError(f"create {path}: {made.status_code} {made.text[:200]}")


async def read_stream(server: Server, path: str) -> tuple[list[dict[str, int]], float]:
    """Every message from the start, in catch-up reads; and the seconds it took."""
    messages: list[dict[str, int]] = []
    conn = await HTTPConnection.open(server.port)
    offset = "-1"
    began = time.monotonic()
    try:
        while True:
            status, body = await conn.request(
                request("GET", f"{path}?offset={offset}", auth(server))
            )
            if status != 200:
                raise RuntimeError(f"read {path}: {status} {body[:200]!r}")
            try:
                page = json.loads(body)
            except ValueError as exc:
                raise RuntimeError(f"read {path}: not JSON: {body[:300]!r}") from exc
            messages += page
            offset = conn.header("stream-next-offset") or ""
            if conn.header("stream-up-to-date") == "true" and not page:
                break
    finally:
        conn.close()
    return messages, time.monotonic() - began


def in_order(messages: list[dict[str, int]], producer: int, count: int) -> bool:
    return [(m["p"], m["s"]) for m in messages] == [(producer, s) for s in range(count)]


async def append(server: Server, producers: int, per: int, batch: int) -> dict[str, Any]:
    """``producers`` writers, each to its own stream, ``per`` messages in ``batch``es."""
    paths = [f"/v1/stream/bench/append-{batch}-{p}-{time.monotonic_ns()}" for p in range(producers)]
    for path in paths:
        await create(server, path)
    acks: list[int] = []
    errors: list[str] = []

    async def produce(p: int) -> None:
        conn = await HTTPConnection.open(server.port)
        try:
            for first in range(0, per, batch):
                parts = [message(p, s) for s in range(first, min(per, first + batch))]
                body = parts[0] if batch == 1 else b"[" + b",".join(parts) + b"]"
                sent = time.monotonic_ns()
                status, reply = await conn.request(request("POST", paths[p], auth(server), body))
                acks.append(time.monotonic_ns() - sent)
                if status >= 300:
                    errors.append(f"{status} {reply[:200]!r}")
        finally:
            conn.close()

    cpu = server.cpu()
    began = time.monotonic()
    await asyncio.gather(*(produce(p) for p in range(producers)))
    seconds = time.monotonic() - began
    cpu = server.cpu() - cpu
    wrong = 0
    for p, path in enumerate(paths):
        stored, _ = await read_stream(server, path)
        wrong += not in_order(stored, p, per)
    total = producers * per
    return {
        "messages": total,
        "messages_per_s": round(total / seconds),
        "server_cpu_s": round(cpu, 2),
        "errors": len(errors),
        "streams_wrong": wrong,
        "verified": not errors and not wrong,
        **latency_ms(acks),
    }


async def catch_up(server: Server, total: int) -> dict[str, Any]:
    path = f"/v1/stream/bench/catchup-{time.monotonic_ns()}"
    await create(server, path)
    conn = await HTTPConnection.open(server.port)
    try:
        for first in range(0, total, 1000):
            body = b"[" + b",".join(message(0, s) for s in range(first, first + 1000)) + b"]"
            status, reply = await conn.request(request("POST", path, auth(server), body))
            if status >= 300:
                raise RuntimeError(f"fill: {status} {reply[:200]!r}")
    finally:
        conn.close()
    cpu = server.cpu()
    stored, seconds = await read_stream(server, path)
    return {
        "messages": total,
        "messages_per_s": round(total / seconds),
        "seconds": round(seconds, 3),
        "server_cpu_s": round(server.cpu() - cpu, 2),
        "verified": in_order(stored, 0, total),
    }


class SSEReader(asyncio.Protocol):
    """One SSE reader: de-chunks, parses ``data`` events, checks every message."""

    def __init__(self, expect: int) -> None:
        loop = asyncio.get_running_loop()
        self.expect = expect
        self.done: asyncio.Future[None] = loop.create_future()
        self.headed: asyncio.Future[None] = loop.create_future()
        self.buf = bytearray()
        self.chunks = bytearray()
        self.head = False
        self.next = 0
        self.bad = 0
        self.latencies: list[int] = []
        self.event = b""
        self.data: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        self.buf += data
        if not self.head:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            del self.buf[: end + 4]
            self.head = True
            self.headed.set_result(None)
        while True:  # de-chunk
            line = self.buf.find(b"\r\n")
            if line < 0:
                break
            size = int(self.buf[:line], 16)
            if len(self.buf) < line + 2 + size + 2:
                break
            self.chunks += self.buf[line + 2 : line + 2 + size]
            del self.buf[: line + 2 + size + 2]
        while (end := self.chunks.find(b"\n")) >= 0:
            text = bytes(self.chunks[:end])
            del self.chunks[: end + 1]
            if text.startswith(b"event:"):
                self.event = text[6:].strip()
            elif text.startswith(b"data:"):
                self.data.append(text[5:])
            elif not text:
                if self.event == b"data":
                    for m in json.loads(b"\n".join(self.data)):
                        self.bad += m["s"] != self.next
                        self.next = m["s"] + 1
                        self.latencies.append(now - m["t"])
                self.event, self.data = b"", []
        if self.next >= self.expect and not self.done.done():
            self.done.set_result(None)


async def fanout(server: Server, count: int, rate: float) -> dict[str, Any]:
    path = f"/v1/stream/bench/fanout-{time.monotonic_ns()}"
    await create(server, path)
    loop = asyncio.get_running_loop()
    readers: list[SSEReader] = []
    for _ in range(READERS):
        transport, reader = await loop.create_connection(
            lambda: SSEReader(count), "127.0.0.1", server.port
        )
        transport.write(request_head("GET", f"{path}?offset=now&live=sse", auth(server)))
        readers.append(reader)
    # Once a response has begun, its reader is subscribed: what is appended reaches it.
    await asyncio.wait_for(asyncio.gather(*(r.headed for r in readers)), 30)
    conn = await HTTPConnection.open(server.port)
    cpu = server.cpu()
    began = time.monotonic()
    for s in range(count):
        due = began + s / rate
        if (delay := due - time.monotonic()) > 0:
            await asyncio.sleep(delay)
        await conn.request(request("POST", path, auth(server), message(0, s)))
    conn.close()
    try:
        await asyncio.wait_for(asyncio.gather(*(r.done for r in readers)), 60)
    except TimeoutError:
        pass
    seconds = time.monotonic() - began
    for reader in readers:
        if reader.transport is not None:
            reader.transport.close()
    delivered = sum(len(r.latencies) for r in readers)
    complete = all(r.next == count and not r.bad for r in readers)
    return {
        "readers": READERS,
        "messages": count,
        "rate": rate,
        "delivered_per_s": round(delivered / seconds),
        "server_cpu_s": round(server.cpu() - cpu, 2),
        "server_us_per_delivery": round((server.cpu() - cpu) * 1e6 / max(1, delivered), 1),
        "verified": complete and delivered == READERS * count,
        **latency_ms([x for r in readers for x in r.latencies]),
    }


async def run(suite: Suite) -> None:
    quick = suite.quick
    sizes = {
        "single": 50 if quick else 1000,  # per producer
        "batch": 1000 if quick else 25_000,  # per producer
        "catchup": 5000 if quick else 100_000,
        "fanout": 200 if quick else 2000,
    }
    servers: list[Server] = [suite.server("streamer")]
    if suite.peers:
        why = npm_install()
        if why is None:
            servers += [NodeServer(suite.workdir, False), NodeServer(suite.workdir, True)]
        else:
            print(f"# durable: the Node reference server is skipped: {why}", flush=True)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for server in servers:
        with server:
            name = server.name
            for workload, work in (
                ("append_single", append(server, PRODUCERS_SINGLE, sizes["single"], 1)),
                ("append_batch", append(server, PRODUCERS_BATCH, sizes["batch"], BATCH)),
                ("catchup", catch_up(server, sizes["catchup"])),
                ("fanout", fanout(server, sizes["fanout"], 500.0)),
            ):
                numbers = await work
                results.setdefault(workload, {})[name] = numbers
                suite.recorder.write(f"durable.{workload}", server=name, **numbers)
    if suite.peers:
        suite.shared["durable"] = results
    peers = suite.shared.get("durable", results)
    for workload, by_server in results.items():
        ours = by_server.get("streamer")
        for peer in ("ds-node-memory", "ds-node-file"):
            theirs = peers.get(workload, {}).get(peer)
            if ours is None or theirs is None:
                continue
            rate = "delivered_per_s" if workload == "fanout" else "messages_per_s"
            suite.recorder.write(
                "durable.compare",
                server="compare",
                workload=workload,
                peer=peer,
                db=suite.db,
                rate_ratio=ratio(ours[rate], theirs[rate]),
                p99_ratio=ratio(ours["p99_ms"], theirs["p99_ms"]) if "p99_ms" in ours else None,
                verified=bool(ours["verified"] and theirs["verified"]),
            )
