"""A cheap load generator: raw asyncio protocols on uvloop, spread over processes.

Subscribers (SSE or WebSocket, streamer or Nchan) are ``asyncio.Protocol`` objects
that de-chunk / de-frame by hand and check every event they get: each payload is
``~<seq:010d> <monotonic ns:019d> xxx…`` (``common.payload``), so a subscriber knows
the exact sequence it must see (count, order, no duplicate, no gap) and the publish
time of each event (``time.monotonic_ns`` is one clock for every process of the
machine). Subscribers run in worker processes (``SubscriberPool``), each on its own
uvloop, and report their own CPU; publishers run in the main process.
"""

from __future__ import annotations

import asyncio
import base64
import multiprocessing as mp
import os
import re
import resource
import socket
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, cast

from .common import Target

EVENT = re.compile(rb"~(\d{10}) (\d{19})")
LOOP_FACTORY: Callable[[], asyncio.AbstractEventLoop] | None
try:
    import uvloop

    LOOP_FACTORY = uvloop.new_event_loop
except ImportError:  # pragma: no cover - uvloop is a dependency of uvicorn[standard]
    LOOP_FACTORY = None


def run(coro: Any) -> Any:
    """``asyncio.run`` on uvloop when it is installed."""
    with asyncio.Runner(loop_factory=LOOP_FACTORY) as runner:
        return runner.run(coro)


def rusage_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def request_head(method: str, path: str, headers: dict[str, str], extra: str = "") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


# ---------------------------------------------------------------- subscribers


class Subscriber(asyncio.Protocol):
    """Checks the sequence of events it receives; subclasses undo the framing."""

    def __init__(
        self,
        request: bytes,
        start_seq: int,
        expect: int,
        record: bool,
        on_done: Callable[[Subscriber], None],
        slow: bool = False,
    ) -> None:
        self.request = request
        self.next_seq = start_seq
        self.expect = expect
        self.record = record
        self.on_done = on_done
        self.slow = slow
        self.received = 0
        self.dups = 0
        self.gaps = 0
        self.connect_ns = 0
        self.open_ns = 0
        self.first_ns = 0
        self.last_ns = 0
        self.done = False
        self.eof = False
        self.status = 0
        self.close_code = 0
        self.latencies = array("q")
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._head = b""
        self._in_body = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before the response: {exc}"))
        if not self.ended.done():
            self.ended.set_result(None)
        if self._in_body and not self.done and not self.slow:
            # Ended by the server before it had everything: it will get no more, so it
            # counts as finished (and incomplete) now, not when the run times out.
            self.done = True
            self.on_done(self)

    def data_received(self, data: bytes) -> None:
        if self._in_body:
            self.body(data)
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            return
        head, rest = self._head[:end], self._head[end + 4 :]
        self._head = b""
        self.status = int(head.split(b" ", 2)[1])
        if not self.accept(head):
            if not self.opened.done():
                self.opened.set_exception(ConnectionError(head.split(b"\r\n")[0].decode()))
            assert self.transport is not None
            self.transport.close()
            return
        self._in_body = True
        self.open_ns = time.monotonic_ns()
        if not self.opened.done():
            self.opened.set_result(None)
        if self.slow:
            assert self.transport is not None
            self.transport.pause_reading()
        if rest:
            self.body(rest)

    def accept(self, head: bytes) -> bool:
        raise NotImplementedError

    def body(self, data: bytes) -> None:
        raise NotImplementedError

    def events(self, data: bytes | bytearray) -> None:
        """Check the events in ``data`` (whole messages only)."""
        found = EVENT.findall(data)
        if not found:
            return
        now = time.monotonic_ns()
        if not self.first_ns:
            self.first_ns = now
        self.last_ns = now
        first = self.next_seq
        seqs = [int(s) for s, _ in found]
        if seqs != list(range(first, first + len(seqs))):
            expected = first
            for s in seqs:
                if s < expected:
                    self.dups += 1
                    continue
                if s > expected:
                    self.gaps += s - expected
                expected = s + 1
            self.next_seq = expected
        else:
            self.next_seq = first + len(seqs)
        self.received += len(seqs)
        if self.record:
            self.latencies.extend([now - int(t) for _, t in found])
        if not self.done and self.received >= self.expect:
            self.done = True
            if not self.ended.done():
                self.ended.set_result(None)
            self.on_done(self)

    def pause(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def report(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "dups": self.dups,
            "gaps": self.gaps,
            "connect_ns": self.connect_ns,
            "open_ns": self.open_ns,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "status": self.status,
            "eof": self.eof,
            "close_code": self.close_code,
            "slow": self.slow,
        }


class SSESubscriber(Subscriber):
    """text/event-stream over HTTP/1.1 chunked encoding."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._raw = bytearray()
        self._text = bytearray()
        self._need = 0  # >0: bytes left in this chunk; -2: CRLF after it; 0: size line
        self._chunked = True

    def accept(self, head: bytes) -> bool:
        self._chunked = b"transfer-encoding: chunked" in head.lower()
        return self.status == 200

    def body(self, data: bytes) -> None:
        text = self._text
        if not self._chunked:
            text += data
        else:
            raw = self._raw
            raw += data
            pos, size = 0, len(raw)
            while pos < size:
                need = self._need
                if need > 0:
                    take = min(need, size - pos)
                    text += raw[pos : pos + take]
                    pos += take
                    self._need = need - take or -2
                elif need == -2:
                    if size - pos < 2:
                        break
                    pos += 2
                    self._need = 0
                else:
                    end = raw.find(b"\r\n", pos)
                    if end < 0:
                        break
                    length = int(raw[pos:end].split(b";")[0], 16)
                    pos = end + 2
                    if length == 0:
                        self.eof = True
                        break
                    self._need = length
            del raw[:pos]
        end = text.rfind(b"\n\n")
        if end >= 0:
            self.events(text[: end + 2])
            del text[: end + 2]


class WSSubscriber(Subscriber):
    """RFC 6455 client: unmasked server frames, one or more events per text frame."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._buf = bytearray()

    def accept(self, head: bytes) -> bool:
        return self.status == 101

    def body(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, header = b1 & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, header = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, header = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if size - pos < header + length:
                break
            start = pos + header
            pos = start + length
            opcode = b0 & 0x0F
            if opcode in (0, 1, 2):
                self.events(buf[start:pos])
            elif opcode == 8:
                if length >= 2:
                    self.close_code = int.from_bytes(buf[start : start + 2], "big")
                self.eof = True
                self._send(8, bytes(buf[start : start + 2]))
            elif opcode == 9:
                self._send(10, bytes(buf[start:pos]))
        del buf[:pos]

    def _send(self, opcode: int, payload: bytes) -> None:
        # Masked with a zero key: valid, and the payload stays as it is.
        transport = self.transport
        if transport is not None and not transport.is_closing() and len(payload) < 126:
            transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)


MUX_EVENT = re.compile(rb'"job_id":"([A-Za-z0-9_-]+)"[^~]*~(\d{10}) (\d{19})')


class MuxCheck:
    """For a subscriber of several jobs on one connection (``/streams/events``): each
    job's events must arrive in its own sequence, once each; ``expect`` is the total."""

    def events(self, data: bytes | bytearray) -> None:
        sub: Any = self
        found = MUX_EVENT.findall(data)
        if not found:
            return
        now = time.monotonic_ns()
        if not sub.first_ns:
            sub.first_ns = now
        sub.last_ns = now
        nexts: dict[bytes, int] = sub.__dict__.setdefault("job_next", {})
        for job, seq, sent in found:
            s, expected = int(seq), nexts.get(job, sub.next_seq)
            if s < expected:
                sub.dups += 1
                continue
            sub.gaps += s - expected
            nexts[job] = s + 1
            sub.received += 1
            if sub.record:
                sub.latencies.append(now - int(sent))
        if not sub.done and sub.received >= sub.expect:
            sub.done = True
            if not sub.ended.done():
                sub.ended.set_result(None)
            sub.on_done(sub)


class MuxSSESubscriber(MuxCheck, SSESubscriber):
    pass


class MuxWSSubscriber(MuxCheck, WSSubscriber):
    pass


SUBSCRIBERS: dict[str, type[Subscriber]] = {
    "sse": SSESubscriber,
    "ws": WSSubscriber,
    "mux-sse": MuxSSESubscriber,
    "mux-ws": MuxWSSubscriber,
}


def subscribe_request(target_headers: dict[str, str], path: str, transport: str) -> bytes:
    if transport in ("sse", "mux-sse"):
        return request_head("GET", path, {**target_headers, "Accept": "text/event-stream"})
    key = base64.b64encode(os.urandom(16)).decode()
    extra = (
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    )
    return request_head("GET", path, target_headers, extra)


# ---------------------------------------------------------------- subscriber worker process


@dataclass
class SubSpec:
    """What one worker process opens and what each of its subscribers must receive."""

    port: int
    path: str
    headers: dict[str, str]
    transport: str  # "sse" | "ws"
    count: int
    expect: int
    start_seq: int = 0
    record: bool = True
    slow: int = 0  # how many of ``count`` stop reading after the response head
    slow_rcvbuf: int = 4096
    concurrency: int = 500
    timeout: float = 120.0
    hold_after_done: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)  # one per subscriber, instead of ``path``


async def _worker(conn: Connection, spec: SubSpec) -> None:
    loop = asyncio.get_running_loop()
    recv = lambda: loop.run_in_executor(None, conn.recv)  # noqa: E731
    conn.send(("spawned", os.getpid()))
    await recv()  # "go"
    cpu0, t0 = rusage_cpu(), time.monotonic_ns()
    fast_left = spec.count - spec.slow
    all_fast = loop.create_future()
    if fast_left == 0:
        all_fast.set_result(None)

    def on_done(sub: Subscriber) -> None:
        nonlocal fast_left
        if not sub.slow:
            fast_left -= 1
            if fast_left == 0 and not all_fast.done():
                all_fast.set_result(None)
            if not spec.hold_after_done:
                sub.close()

    cls = SUBSCRIBERS[spec.transport]
    request = subscribe_request(spec.headers, spec.path, spec.transport)
    gate = asyncio.Semaphore(spec.concurrency)
    subs: list[Subscriber] = []
    failures: list[str] = []

    async def open_one(i: int) -> None:
        slow = i < spec.slow
        own = subscribe_request(spec.headers, spec.paths[i], spec.transport) if spec.paths else None
        sub = cls(
            own or request, spec.start_seq, spec.expect, spec.record and not slow, on_done, slow
        )
        subs.append(sub)
        async with gate:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            if slow:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, spec.slow_rcvbuf)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sub.connect_ns = time.monotonic_ns()
            try:
                await loop.sock_connect(sock, ("127.0.0.1", spec.port))
                await loop.create_connection(lambda: sub, sock=sock)
                await asyncio.wait_for(sub.opened, spec.timeout)
            except (OSError, TimeoutError, ConnectionError) as exc:
                sock.close()
                failures.append(repr(exc))
                if not sub.slow and not sub.done:
                    sub.done = True
                    on_done(sub)

    await asyncio.gather(*(open_one(i) for i in range(spec.count)))
    conn.send(("ready", (time.monotonic_ns() - t0) / 1e9, failures[:5], len(failures)))
    try:
        await asyncio.wait_for(all_fast, spec.timeout)
    except TimeoutError:
        pass
    fast_done_ns = time.monotonic_ns()
    conn.send(("fast_done", fast_done_ns))
    await recv()  # "finish": the main process has measured what it wanted meanwhile
    slow_subs = [s for s in subs if s.slow]
    for sub in slow_subs:
        sub.resume()
    if slow_subs:
        # Drain what the server still sends; it ends the stream of a closed reader.
        pending = [s.ended for s in slow_subs if not s.ended.done()]
        if pending:
            await asyncio.wait(pending, timeout=spec.extra.get("slow_drain", 5.0))
    cpu = rusage_cpu() - cpu0
    latencies = array("q")
    reports = [s.report() for s in subs]
    for sub in subs:
        latencies.extend(sub.latencies)
        sub.close()
    await asyncio.sleep(0)
    conn.send(
        (
            "results",
            {
                "cpu": cpu,
                "t0": t0,
                "fast_done_ns": fast_done_ns,
                "subs": reports,
                "failures": failures[:5],
                "latencies": latencies.tobytes(),
            },
        )
    )


def worker_main(conn: Connection, spec: SubSpec) -> None:
    try:
        run(_worker(conn, spec))
    finally:
        conn.close()


class SubscriberPool:
    """Subscriber worker processes, driven step by step from the main process."""

    def __init__(self, specs: Sequence[SubSpec]) -> None:
        ctx = mp.get_context("spawn")
        self.specs = list(specs)
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        for spec in self.specs:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child, spec), daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    async def _recv_all(self, kind: str) -> list[tuple[Any, ...]]:
        async def one(conn: Connection) -> tuple[Any, ...]:
            message: tuple[Any, ...] = await asyncio.to_thread(conn.recv)
            if message[0] != kind:
                raise RuntimeError(f"worker said {message[0]!r}, expected {kind!r}")
            return message

        return list(await asyncio.gather(*(one(c) for c in self.conns)))

    async def spawned(self) -> None:
        await self._recv_all("spawned")

    def send(self, message: str) -> None:
        for conn in self.conns:
            conn.send(message)

    async def ready(self) -> tuple[float, int, list[str]]:
        """After "go": (seconds to open every connection, failures, examples)."""
        got = await self._recv_all("ready")
        return max(m[1] for m in got), sum(m[3] for m in got), [e for m in got for e in m[2]]

    async def fast_done(self) -> int:
        got = await self._recv_all("fast_done")
        return max(m[1] for m in got)

    async def results(self) -> Results:
        got = await self._recv_all("results")
        for proc in self.procs:
            await asyncio.to_thread(proc.join, 10)
            if proc.is_alive():
                proc.kill()  # our own worker, by its handle
        merged = Results()
        for _, data in got:
            merged.cpu += data["cpu"]
            merged.subs += data["subs"]
            merged.failures += data["failures"]
            lat = array("q")
            lat.frombytes(data["latencies"])
            merged.latencies.extend(lat)
        return merged

    def kill(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()


@dataclass
class Results:
    cpu: float = 0.0
    subs: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    latencies: array[int] = field(default_factory=lambda: array("q"))

    def check(self, expect: int, slow: bool = False) -> dict[str, Any]:
        """Delivery verdict over the fast (or slow) subscribers."""
        subs = [s for s in self.subs if s["slow"] == slow]
        complete = sum(1 for s in subs if s["received"] == expect and not s["gaps"])
        dups = sum(s["dups"] for s in subs)
        gaps = sum(s["gaps"] for s in subs)
        out: dict[str, Any] = {
            "subscribers": len(subs),
            "complete": complete,
            "delivered": sum(s["received"] for s in subs),
            "dups": dups,
            "gaps": gaps,
            "verified": complete == len(subs) and dups == 0 and gaps == 0 and len(subs) > 0,
        }
        short = [s for s in subs if s["received"] < expect]
        if short and not slow:
            # What the incomplete ones saw: HTTP status, ended by the server or not
            # (still open at the time limit), WebSocket close code; and how much they got.
            how: dict[str, int] = {}
            for s in short:
                name = f"status {s['status']}, " + (
                    f"ended (close {s['close_code']})" if s["eof"] else "still open"
                )
                how[name] = how.get(name, 0) + 1
            out["incomplete"] = how
            out["incomplete_received_max"] = max(s["received"] for s in short)
        return out


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def sub_specs(
    target: Target,
    channel: str,
    transport: str,
    count: int,
    expect: int,
    *,
    workers: int = 1,
    start_seq: int = 0,
    from_index: int = 0,
    slow: int = 0,
    **kwargs: Any,
) -> list[SubSpec]:
    path = target.sub_path(channel, transport, from_index)
    specs = []
    slow_parts = split(slow, workers)
    for n, s in zip(split(count, workers), slow_parts, strict=True):
        if n:
            specs.append(
                SubSpec(
                    target.port,
                    path,
                    target.headers,
                    transport,
                    n,
                    expect,
                    start_seq=start_seq,
                    slow=s,
                    **kwargs,
                )
            )
    return specs


# ---------------------------------------------------------------- HTTP publishers


class HTTPConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._length = -1
        self._head_end = -1
        self._status = 0
        self._chunked = False
        self.last_head = b""  # the last response's head, lower-cased (``header()``)

    @classmethod
    async def open(cls, port: int) -> HTTPConnection:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(cls, "127.0.0.1", port)
        sock = proto.transport.get_extra_info("socket") if proto.transport else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def request(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self._waiter

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if self._head_end < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self._head_end = end + 4
            head = self.last_head = bytes(buf[:end]).lower()
            self._status = int(head.split(b" ", 2)[1])
            found = re.search(rb"content-length: *(\d+)", head)
            self._length = int(found.group(1)) if found else -1
            self._chunked = b"transfer-encoding: chunked" in head
        if self._chunked:
            found = dechunk(buf, self._head_end)
            if found is None:
                return
            body, rest = found
        else:
            length = max(self._length, 0)
            if len(buf) < self._head_end + length:
                return
            body, rest = (
                bytes(buf[self._head_end : self._head_end + length]),
                (self._head_end + length),
            )
        del buf[:rest]
        self._head_end = -1
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self._status, body))

    def header(self, name: str) -> str | None:
        """A header of the last response (``name`` in lower case)."""
        found = re.search(rb"\r\n" + name.encode() + rb": *([^\r]*)", self.last_head)
        return found.group(1).decode() if found else None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def dechunk(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    """A whole chunked body from ``start``: (its data, where it ends), or None yet."""
    parts, at = [], start
    while True:
        line = buf.find(b"\r\n", at)
        if line < 0:
            return None
        size = int(buf[at:line].split(b";", 1)[0], 16)
        if size == 0:
            return (b"".join(parts), line + 4) if len(buf) >= line + 4 else None
        if len(buf) < line + 2 + size + 2:
            return None
        parts.append(bytes(buf[line + 2 : line + 2 + size]))
        at = line + 2 + size + 2


def post_request(target: Target, path: str, body: bytes) -> bytes:
    ctype = "application/json" if target.name == "streamer" else "text/plain"
    extra = f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
    return request_head("POST", path, target.headers, extra) + body


@dataclass
class PublishStats:
    sent: int = 0
    errors: int = 0
    acks_ns: list[int] = field(default_factory=list)
    start_ns: int = 0
    end_ns: int = 0
    last_error: str = ""

    @property
    def seconds(self) -> float:
        return max(1e-9, (self.end_ns - self.start_ns) / 1e9)


async def publish_events(
    target: Target,
    channel: str,
    count: int,
    *,
    rate: float = 0.0,
    start_seq: int = 0,
    batch: int = 1,
    size: int = 100,
    stats: PublishStats | None = None,
    conn: HTTPConnection | None = None,
) -> PublishStats:
    """One producer, in order: ``count`` events as single POSTs or batches of ``batch``.

    ``rate`` (events/s) paces the sends on a fixed timetable (0 = as fast as acked).
    Each event's payload carries its sequence number and send time.
    """
    from .common import payload

    stats = stats or PublishStats()
    own = conn is None
    conn = conn or await HTTPConnection.open(target.port)
    path = target.pub_path(channel)
    begin = time.monotonic_ns()
    stats.start_ns = stats.start_ns or begin
    seq, end = start_seq, start_seq + count
    try:
        while seq < end:
            if rate > 0:
                due = begin + int((seq - start_seq) * 1e9 / rate)
                delay = (due - time.monotonic_ns()) / 1e9
                if delay > 0:
                    await asyncio.sleep(delay)
            n = min(batch, end - seq)
            if batch == 1:
                body = target.pub_body(payload(seq, size))
            else:
                body = b'{"events":[%s]}' % b",".join(
                    b'{"data":"%s"}' % payload(s, size).encode() for s in range(seq, seq + n)
                )
            sent_ns = time.monotonic_ns()
            status, reply = await conn.request(post_request(target, path, body))
            stats.acks_ns.append(time.monotonic_ns() - sent_ns)
            if status >= 300:
                stats.errors += 1
                stats.last_error = f"{status} {reply[:200]!r}"
            else:
                stats.sent += n
            seq += n
    finally:
        stats.end_ns = time.monotonic_ns()
        if own:
            conn.close()
    return stats
