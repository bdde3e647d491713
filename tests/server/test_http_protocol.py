"""streamer's own HTTP/1.1 server (streamer/server/http/), over raw sockets: what it
reads, what it answers, and the bounds it holds for any client."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator

import pytest

from streamer.server.settings import Settings

from ..support.live import LiveServer, serving, wait_until


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[LiveServer]:
    tight = settings.replace(
        header_timeout_seconds=0.5,
        request_timeout_seconds=0.5,
        keepalive_timeout_seconds=0.5,
        max_pipelined_requests=4,
        max_request_head_bytes=2048,
        max_body_bytes=10_000,
    )
    async with serving(tight) as live:
        yield live


async def exchange(port: int, data: bytes, *, read_for: float = 3.0) -> bytes:
    """Send ``data``; everything the server answers until it closes (or ``read_for``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    out = b""
    try:
        async with asyncio.timeout(read_for):
            while chunk := await reader.read(65536):
                out += chunk
    except TimeoutError:
        pass
    writer.close()
    return out


def statuses(answer: bytes) -> list[int]:
    """The status of every response in ``answer`` (a body may run into the next head)."""
    return [int(s) for s in re.findall(rb"HTTP/1\.[01] (\d{3}) ", answer)]


async def test_keep_alive_and_pipelined_requests_are_answered_in_order(server: LiveServer) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = await exchange(server.port, request * 3 + b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    assert statuses(answer) == [200, 200, 200, 404]


async def test_a_slow_request_head_is_a_408_and_closed(server: LiveServer) -> None:
    answer = await exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost:", read_for=5)
    assert statuses(answer) == [408]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["status"] == 408


async def test_an_idle_keep_alive_connection_is_closed(server: LiveServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await reader.readuntil(b'{"status":"ok"}')
    async with asyncio.timeout(5):
        assert await reader.read() == b""  # closed by the server, with nothing more
    writer.close()


async def test_a_head_over_its_bound_is_a_431(server: LiveServer) -> None:
    big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n"
    assert statuses(await exchange(server.port, big)) == [431]


async def test_a_declared_body_over_its_bound_is_a_413_the_client_can_read(
    server: LiveServer,
) -> None:
    head = (
        f"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.key}\r\n"
        "Content-Length: 50000\r\n\r\n"
    ).encode()
    answer = await exchange(server.port, head + b"x" * 50000)
    assert statuses(answer) == [413]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["limit"] == 10_000


async def test_a_chunked_body_and_expect_continue_are_read(server: LiveServer) -> None:
    body = json.dumps({"name": "chunked"}).encode()
    chunks = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    request = (
        f"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.key}\r\n"
        "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    ).encode()
    answer = await exchange(server.port, request + chunks)
    assert statuses(answer) == [100, 201]
    assert json.loads(answer.rsplit(b"\r\n\r\n", 1)[1])["name"] == "chunked"


async def test_http_1_0_gets_its_answer_and_the_connection_closes(server: LiveServer) -> None:
    answer = await exchange(server.port, b"GET /healthz HTTP/1.0\r\n\r\n", read_for=5)
    assert statuses(answer) == [200] and b"connection: close" in answer.lower()


async def test_pipelined_requests_wait_in_a_bounded_queue(server: LiveServer) -> None:
    """A client that pipelines a flood of requests and reads none of the answers: the
    server buffers at most its write bound of answers, queues at most max_pipelined
    requests, then stops reading the connection (the rest waits in the kernel)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # answers back up at once
    sock.connect(("127.0.0.1", server.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    conns = server.server.http.connections  # type: ignore[union-attr]
    high = server.settings.write_high_water_bytes
    deepest, buffered, paused = 0, 0, False
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    for _ in range(40):
        writer.write(request * 5000)
        await asyncio.sleep(0.02)
        for conn in conns:
            deepest = max(deepest, len(conn.queue))
            buffered = max(buffered, conn.transport.get_write_buffer_size())
            paused = paused or not conn.reading
    assert deepest <= 4 and paused, (deepest, paused)
    assert buffered <= high + 4096, buffered  # the bound, plus at most one answer past it
    writer.transport.abort()
    await wait_until(lambda: not conns)


async def test_an_unknown_websocket_path_is_a_404_at_the_handshake(server: LiveServer) -> None:
    handshake = (
        b"GET /nowhere HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert statuses(await exchange(server.port, handshake)) == [404]


async def test_head_on_a_framework_route_has_no_body(server: LiveServer) -> None:
    answer = await exchange(
        server.port,
        f"HEAD /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.key}\r\n"
        "Connection: close\r\n\r\n".encode(),
    )
    assert statuses(answer) == [200] and answer.endswith(b"\r\n\r\n")
