"""Every limit, enforced exactly: N-1 and N pass, N+1 is refused with its own verdict.

Request body (413, also chunked without Content-Length, cut off at the limit),
event ``data`` (413), batch size (413), WebSocket message size (close 1009),
streams per user (429 with Retry-After; WebSocket 1013), append rate per key (429
with Retry-After; a batch over the burst is 413), stored bytes per job (413
naming the cap; a short ``complete`` still finishes the job), and stream starts
per second on the node (503 with Retry-After; WebSocket 1013). Small limits keep
the payloads small; one test checks the WebSocket default end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import websockets

from streamer.core import keys
from streamer.core.errors import Overloaded, PayloadTooLarge, TooManyRequests
from streamer.core.journal import COMPLETE_DATA_ALLOWANCE
from streamer.core.limits import AppendRate, StreamStartRate
from streamer.core.models import NewEvent, utcnow
from streamer.storage.sqlite import SQLiteStorage
from streamer.storage.sqlite.schema import MIGRATIONS

from ..support.clients import ws_events, ws_refused
from ..support.live import LiveServer, wait_until
from ..support.rest_helpers import JOBS, assert_problem, module_server, with_fresh_user

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAX_BODY = 4096
MAX_EVENT = 1000
MAX_BATCH = 5
MAX_WS = 1000
MAX_STREAMS = 3
LIMITS = {
    "max_body_bytes": MAX_BODY,
    "max_event_bytes": MAX_EVENT,
    "max_batch_events": MAX_BATCH,
    "ws_max_message_bytes": MAX_WS,
    "max_streams_per_user": MAX_STREAMS,
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    async with module_server(tmp_path_factory, **LIMITS) as server:
        yield server


@pytest_asyncio.fixture(loop_scope="module")
async def server(shared_server: LiveServer) -> LiveServer:
    return await with_fresh_user(shared_server)


def new_job_body(size: int) -> bytes:
    """A valid ``POST /jobs`` body of exactly ``size`` bytes."""
    empty = json.dumps({"metadata": {"pad": ""}}).encode()
    return json.dumps({"metadata": {"pad": "x" * (size - len(empty))}}).encode()


# --- request body -------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_body_limit_is_exact(server: LiveServer, chunked: bool) -> None:
    client = server.client()
    for size, status in ((MAX_BODY - 1, 201), (MAX_BODY, 201), (MAX_BODY + 1, 413)):
        body = new_job_body(size)
        assert len(body) == size

        async def chunks(body: bytes = body) -> AsyncIterator[bytes]:
            for i in range(0, len(body), 1000):
                yield body[i : i + 1000]

        r = await client.post(JOBS, content=chunks() if chunked else body)
        assert ("content-length" in r.request.headers) is not chunked
        if status == 413:
            assert_problem(r, 413)
            assert r.json()["limit"] == MAX_BODY
        else:
            assert r.status_code == status, r.text


async def raw_request(port: int, head: str, body: bytes) -> tuple[int, bytes]:
    """Send ``head`` and ``body`` and read the response WITHOUT finishing the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode() + body)
        await writer.drain()
        response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        return int(response.split()[1]), response
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_an_unfinished_chunked_body_is_cut_off_at_the_limit(server: LiveServer) -> None:
    """A chunked body (no Content-Length) is answered 413 as soon as it passes the limit:
    the server does not wait for (or buffer) the rest, which never comes here."""
    head = (
        f"POST {JOBS} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {server.key}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    over = MAX_BODY + 1
    status, _ = await raw_request(server.port, head, b"%x\r\n" % over + b"x" * over + b"\r\n")
    assert status == 413
    # A Content-Length over the limit is refused before a byte of the body is sent.
    head = head.replace("Transfer-Encoding: chunked", f"Content-Length: {100 * MAX_BODY}")
    status, _ = await raw_request(server.port, head, b"")
    assert status == 413


# --- event data and batch size ----------------------------------------------------------


async def test_event_data_and_batch_limits_are_exact(server: LiveServer) -> None:
    client = server.client()
    job = await server.create_job(client)
    url = f"{JOBS}/{job}/events"
    for size, status in ((MAX_EVENT - 1, 201), (MAX_EVENT, 201), (MAX_EVENT + 1, 413)):
        r = await client.post(url, json={"data": "é" * (size // 2) + "x" * (size % 2)})
        assert r.status_code == status, (size, r.text)
    assert_problem(await client.post(url, json={"data": "x" * (MAX_EVENT + 1)}), 413, "data")
    for count, status in ((MAX_BATCH - 1, 201), (MAX_BATCH, 201), (MAX_BATCH + 1, 413)):
        r = await client.post(url, json={"events": [{"data": "x"}] * count})
        assert r.status_code == status, (count, r.text)
    assert (await client.get(f"{JOBS}/{job}")).json()["event_count"] == 2 + 2 * MAX_BATCH - 1


# --- WebSocket message size -----------------------------------------------------------------


async def test_websocket_message_limit_is_exact(server: LiveServer) -> None:
    """N-1 and N bytes are read and ignored; N+1 closes with 1009."""
    client = server.client()
    job = await server.create_job(client)
    await client.post(f"{JOBS}/{job}/events", json={"data": "first\n"})
    async with ws_events(server.ws_url, job, server.key, {}) as ws:
        assert json.loads(await ws.recv())["index"] == 0
        await ws.send("é" * ((MAX_WS - 1) // 2) + "x" * ((MAX_WS - 1) % 2))  # N-1 bytes
        await ws.send(b"x" * MAX_WS)
        await client.post(f"{JOBS}/{job}/events", json={"data": "second\n"})
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["index"] == 1
        await ws.send("x" * (MAX_WS + 1))
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 1009


async def test_websocket_default_limit_is_64_kib(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    async with module_server(tmp_path_factory) as server:
        assert server.settings.ws_max_message_bytes == 64 * 1024
        server.key = await server.new_user("reader")
        job = await server.create_job()
        async with ws_events(server.ws_url, job, server.key, {}) as ws:
            await ws.send("x" * 64 * 1024)
            await ws.send("x" * (64 * 1024 + 1))
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1009


# --- streams per user -----------------------------------------------------------------------


async def test_streams_per_user_limit_is_exact(server: LiveServer) -> None:
    """SSE, WebSocket and text streams share the user's budget of N; the one past it
    is a 429 with Retry-After (at a WebSocket's handshake too); other users are unaffected; a
    closed stream frees its slot."""
    client = server.client()
    job = await server.create_job(client)
    await client.post(f"{JOBS}/{job}/events", json={"data": "first\n"})
    user = await keys.verify_key(server.resources.storage.identity, server.key)
    slots = server.resources.streams.slots
    async with contextlib.AsyncExitStack() as stack:
        sse = await stack.enter_async_context(
            client.stream("GET", f"{JOBS}/{job}/events/stream")
        )  # 1 of N
        assert sse.status_code == 200
        text = await stack.enter_async_context(
            client.stream("GET", f"{JOBS}/{job}/log", params={"follow": "true"})
        )  # N-1
        assert text.status_code == 200
        ws = await stack.enter_async_context(ws_events(server.ws_url, job, server.key, {}))
        assert json.loads(await ws.recv())["index"] == 0  # N: registered
        assert slots.count(user.id) == MAX_STREAMS
        for path, params in (("events/stream", {}), ("log", {"follow": "true"})):
            r = await client.get(f"{JOBS}/{job}/{path}", params=params)
            problem = assert_problem(r, 429)
            assert r.headers["retry-after"] == "5" and problem["retry_after"] == 5
        status, problem = await ws_refused(server.ws_url, job, server.key, {})
        assert status == problem["status"] == 429 and problem["retry_after"] == 5
        assert slots.count(user.id) == MAX_STREAMS
        # Another user has a budget of its own.
        other = server.client(await server.new_user("other"))
        other_job = await server.create_job(other)
        r = await other.get(f"{JOBS}/{other_job}/log")
        assert r.status_code == 200
        await ws.close()
        await wait_until(lambda: slots.count(user.id) == MAX_STREAMS - 1)
        async with client.stream("GET", f"{JOBS}/{job}/events/stream") as again:
            assert again.status_code == 200
    await wait_until(lambda: slots.count(user.id) == 0)


async def test_stream_slots_never_leak(server: LiveServer) -> None:
    """Hundreds of streams opened and dropped in every way: the counters go back to 0."""
    client = server.client()
    job = await server.create_job(client)
    await client.post(f"{JOBS}/{job}/events", json={"data": "x\n"})
    user = await keys.verify_key(server.resources.storage.identity, server.key)

    async def one(i: int) -> None:
        if i % 3 == 0:
            async with client.stream("GET", f"{JOBS}/{job}/events/stream") as r:
                assert r.status_code in (200, 429)
        elif i % 3 == 1:
            with contextlib.suppress(websockets.InvalidStatus):  # 429: too many at once
                async with ws_events(server.ws_url, job, server.key, {}) as ws:
                    with contextlib.suppress(websockets.ConnectionClosed):
                        await ws.recv()
        else:
            r = await client.get(f"{JOBS}/{job}/log")
            assert r.status_code in (200, 429)

    for start in range(0, 300, 30):
        await asyncio.gather(*(one(i) for i in range(start, start + 30)))
    await wait_until(lambda: server.resources.streams.slots.count(user.id) == 0)
    assert not server.resources.streams.credentials


# --- append rate ----------------------------------------------------------------------------


async def test_append_rate_per_key_is_exact(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Burst N: N-1 and N appends pass, N+1 is 429 with Retry-After; a batch larger
    than the burst is 413; another key has its own bucket. (0.05 events/s: nothing
    refills while the test runs, however slow the machine.)"""
    async with module_server(tmp_path_factory, append_rate=0.05, append_burst=5) as server:
        server.key = await server.new_user("producer")
        client = server.client()
        job = await server.create_job(client)
        url = f"{JOBS}/{job}/events"
        assert (await client.post(url, json={"events": [{"data": "x"}] * 3})).status_code == 201
        assert (await client.post(url, json={"data": "N-1"})).status_code == 201
        assert (await client.post(url, json={"data": "N"})).status_code == 201
        r = await client.post(url, json={"data": "N+1"})
        assert_problem(r, 429)
        assert 18 <= int(r.headers["retry-after"]) <= 20  # one event at 0.05/s
        user = await keys.verify_key(server.resources.storage.identity, server.key)
        second = server.client(
            await keys.issue_key(server.resources.storage.identity, user.id, "second")
        )
        assert (await second.post(url, json={"events": [{"data": "x"}] * 5})).status_code == 201
        r = await second.post(url, json={"events": [{"data": "x"}] * 6})
        assert_problem(r, 413, "events")
        assert (await client.get(f"{JOBS}/{job}")).json()["event_count"] == 10


async def test_append_rate_refills_at_the_rate() -> None:
    """The bucket's arithmetic on an explicit clock: refill, Retry-After, off at 0."""
    bucket = AppendRate(rate=10.0, burst=20)
    bucket.take(1, 20, now=100.0)
    with pytest.raises(TooManyRequests) as raised:
        bucket.take(1, 1, now=100.0)
    assert raised.value.headers["Retry-After"] == "1"
    bucket.take(1, 5, now=100.5)  # 0.5 s refilled 5 tokens
    with pytest.raises(TooManyRequests) as raised:
        bucket.take(1, 20, now=100.5)
    assert raised.value.extra["retry_after"] == 2  # 20 tokens at 10/s, rounded up
    bucket.take(1, 20, now=1000.0)  # a long idle refills to the burst, not beyond
    with pytest.raises(TooManyRequests):
        bucket.take(1, 1, now=1000.0)
    bucket.take(2, 20, now=1000.0)  # another key, another bucket
    with pytest.raises(PayloadTooLarge):
        bucket.take(3, 21, now=1000.0)
    AppendRate(rate=0.0, burst=1).take(1, 10**6)  # off


# --- stream starts per second (node-wide) ----------------------------------------------


async def test_stream_start_rate_is_exact(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Burst N: N-1 and N stream starts pass (SSE, text, WebSocket share the bucket),
    N+1 is a 503 problem naming the limit with Retry-After, a WebSocket is closed
    with 503 too; other requests are not limited; /metrics counts the refusals. (0.01
    starts/s: nothing refills while the test runs.)"""
    burst = 3
    async with module_server(
        tmp_path_factory, max_stream_starts_per_second=0.01, stream_start_burst=burst
    ) as server:
        server.key = await server.new_user("reader")
        client = server.client()
        job = await server.create_job(client)
        await client.post(f"{JOBS}/{job}/events", json={"data": "first\n"})
        async with client.stream("GET", f"{JOBS}/{job}/events/stream") as sse:  # 1
            assert sse.status_code == 200
        r = await client.get(f"{JOBS}/{job}/log")  # N-1
        assert r.status_code == 200 and r.text == "first\n"
        async with ws_events(server.ws_url, job, server.key, {}) as ws:  # N
            assert json.loads(await ws.recv())["index"] == 0
        for path, params in (("events/stream", {}), ("log", {"follow": "true"})):  # N+1
            r = await client.get(f"{JOBS}/{job}/{path}", params=params)
            problem = assert_problem(r, 503)
            assert "max_stream_starts_per_second" in problem["detail"]
            assert problem["limit"] == 0.01
            assert 90 <= problem["retry_after"] <= 100  # one start at 0.01/s
            assert r.headers["retry-after"] == str(problem["retry_after"])
        status, problem = await ws_refused(server.ws_url, job, server.key, {})
        assert status == 503 and "max_stream_starts_per_second" in problem["detail"]
        assert (await client.get(f"{JOBS}/{job}/events")).status_code == 200  # not a stream
        assert (await client.post(f"{JOBS}/{job}/events", json={"data": "x"})).status_code == 201
        metrics = (await client.get("/metrics")).text
        assert "streamer_stream_starts_refused_total 3.0" in metrics


async def test_stream_start_rate_refills_at_the_rate() -> None:
    """The bucket's arithmetic on an explicit clock; 0 turns it off."""
    bucket = StreamStartRate(rate=2.0, burst=4)
    for _ in range(4):
        bucket.take(now=50.0)
    with pytest.raises(Overloaded) as raised:
        bucket.take(now=50.0)
    assert raised.value.status == 503 and raised.value.ws_code == 1013
    assert raised.value.headers["Retry-After"] == "1"  # half a second, rounded up
    bucket.take(now=50.5)  # one token back after 1/rate seconds
    with pytest.raises(Overloaded):
        bucket.take(now=50.5)
    bucket.take(now=1000.0)  # idle: back to the burst, not beyond
    for _ in range(3):
        bucket.take(now=1000.0)
    with pytest.raises(Overloaded):
        bucket.take(now=1000.0)
    assert bucket.refused == 3
    off = StreamStartRate(rate=0.0, burst=1)
    for _ in range(100):
        off.take()


# --- bytes per job --------------------------------------------------------------------------


def line_bytes(data: str | None, index: int = 0, kind: str = "log") -> int:
    success = True if kind == "complete" else None
    return len(NewEvent(kind, data, success).encode(index, utcnow()).line)


async def test_job_byte_cap_is_exact_and_a_full_job_can_finish(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    cap = 3000
    async with module_server(tmp_path_factory, max_job_bytes=cap) as server:
        server.key = await server.new_user("producer")
        client = server.client()
        base = line_bytes("")
        for total, status in ((cap - 1, 201), (cap, 201), (cap + 1, 413)):
            job = await server.create_job(client)
            r = await client.post(f"{JOBS}/{job}/events", json={"data": "x" * (total - base)})
            assert r.status_code == status, (total, r.text)
            if status == 413:
                problem = assert_problem(r, 413, "events")
                assert problem["limit"] == cap and str(cap) in problem["detail"]
                assert (await client.get(f"{JOBS}/{job}")).json()["event_count"] == 0
            else:
                full = job
        # The job at its cap takes no more log, not even one byte ...
        assert_problem(await client.post(f"{JOBS}/{full}/events", json={"data": "x"}), 413)
        long = {"type": "complete", "success": True, "data": "x" * (COMPLETE_DATA_ALLOWANCE + 1)}
        assert_problem(await client.post(f"{JOBS}/{full}/events", json=long), 413)
        # ... but it can always be finished.
        done = {"type": "complete", "success": False, "data": "out of log space"}
        r = await client.post(f"{JOBS}/{full}/events", json=done)
        assert r.status_code == 201, r.text
        assert (await client.get(f"{JOBS}/{full}")).json()["status"] == "failed"
        # And so can one cancelled at its cap (the server appends the complete event).
        job = await server.create_job(client)
        await client.post(f"{JOBS}/{job}/events", json={"data": "x" * (cap - base)})
        r = await client.patch(f"{JOBS}/{job}", json={"status": "cancelled"})
        assert r.status_code == 200 and r.json()["status"] == "cancelled"


async def test_byte_count_migration_fills_in_existing_jobs(tmp_path: Path) -> None:
    """Opening a database made before the counter existed counts its stored events."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for version, script in enumerate(MIGRATIONS[:2], start=1):
        conn.executescript(script)
        conn.execute("INSERT INTO schema_version VALUES (?)", (version,))
    conn.execute("INSERT INTO users VALUES (1, 'a', 'a@x', 1, 't')")
    conn.execute(
        "INSERT INTO jobs (id, user_id, status, created_at, updated_at, event_count) "
        "VALUES ('j', 1, 'running', 't', 't', 2)"
    )
    lines = [NewEvent("log", "x" * n, None).encode(i, utcnow()).line for i, n in enumerate((3, 70))]
    conn.executemany(
        "INSERT INTO events VALUES ('j', ?, 'log', ?)", [(i, line) for i, line in enumerate(lines)]
    )
    conn.close()
    storage = SQLiteStorage(str(path))
    await storage.open()
    try:
        assert await storage.jobs.job_bytes(1, "j") == sum(len(line) for line in lines)
    finally:
        await storage.close()


async def test_limit_settings_are_validated() -> None:
    from streamer.server.settings import load_settings

    for name, bad in (
        ("STREAMER_MAX_STREAMS_PER_USER", "0"),
        ("STREAMER_APPEND_RATE", "-1"),
        ("STREAMER_CORS_ORIGINS", "*"),
        ("STREAMER_MAX_JOB_BYTES", "0"),
        ("STREAMER_MAX_STREAM_STARTS_PER_SECOND", "-1"),
        ("STREAMER_STREAM_START_BURST", "0"),
        ("STREAMER_LOG_FORMAT", "xml"),
    ):
        with pytest.raises(SystemExit, match="STREAMER_"):
            load_settings({name: bad})
