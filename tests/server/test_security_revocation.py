"""Revoking a key or deactivating a user ends its access everywhere, streams included.

The next request is a 401 on every node, and every open SSE, WebSocket and text
stream opened with that key (or with a stream token the key minted) ends within
5 s: the SSE and text responses end, the WebSocket closes with 4401, and their
reconnects are refused. ``last_used_at`` costs one write a minute per key, not one
per request. ``streamer users list`` / ``users deactivate`` work from another
process, against the database the server uses.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streamer.core import keys
from streamer.server.settings import Settings

from ..support.clients import ws_events, ws_refused
from ..support.live import LiveServer
from ..support.postgres import pg_database
from ..support.rest_helpers import JOBS, assert_problem

CLOSE_WITHIN = 5.0


@dataclass
class RawStream:
    """An SSE or text-log response over a bare connection (``Connection: close``), so
    "the response ended" is simply end of file."""

    status: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def wait_for(self, marker: bytes) -> None:
        await asyncio.wait_for(self.reader.readuntil(marker), 10)

    async def ended(self, timeout: float = CLOSE_WITHIN) -> bytes:
        try:
            return await asyncio.wait_for(self.reader.read(), timeout)
        finally:
            await self.close()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass  # the server reset it first: closed either way


async def raw_status(port: int, path: str, key: str | None = None) -> int:
    stream = await raw_get(port, path, key)
    await stream.close()
    return stream.status


async def raw_get(port: int, path: str, key: str | None = None) -> RawStream:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth_line = f"Authorization: Bearer {key}\r\n" if key else ""
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth_line}Connection: close\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return RawStream(int(head.split()[1]), reader, writer)


@dataclass
class Streams:
    """One key's open streams on one job, each already past its first event."""

    sse: list[RawStream]
    text: list[RawStream]
    ws: list[Any]
    contexts: list[Any]

    async def all_end(self) -> list[int]:
        """Wait (at most 5 s) for every stream to end; the WebSocket close codes."""
        await asyncio.gather(*(s.ended() for s in self.sse + self.text))
        await asyncio.wait_for(asyncio.gather(*(ws.wait_closed() for ws in self.ws)), CLOSE_WITHIN)
        return [ws.close_code for ws in self.ws]

    async def close(self) -> None:
        for s in self.sse + self.text:
            await s.close()
        for context in self.contexts:
            await context.__aexit__(None, None, None)


async def open_streams(
    server: LiveServer, job: str, key: str = "", token: str = "", n: int = 2
) -> Streams:
    """``n`` SSE, ``n`` WebSocket and one text stream with ``key`` or ``token``."""
    query = f"?token={token}" if token else ""
    base = f"/api/v1/jobs/{job}"
    sse = [await raw_get(server.port, f"{base}/events/stream{query}", key) for _ in range(n)]
    text = [await raw_get(server.port, f"{base}/log?follow=true{query and '&' + query[1:]}", key)]
    for stream in sse + text:
        assert stream.status == 200
    for stream in sse:
        await stream.wait_for(b"id: 0")
    for stream in text:
        await stream.wait_for(b"first\n")
    contexts = [
        ws_events(server.ws_url, job, key, {"token": token} if token else {}) for _ in range(n)
    ]
    sockets = [await context.__aenter__() for context in contexts]
    for ws in sockets:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["index"] == 0
    return Streams(sse, text, sockets, contexts)


async def key_id(server: LiveServer, user_id: int, name: str) -> int:
    return next(
        k.id for k in await server.resources.storage.identity.list_keys(user_id) if k.name == name
    )


async def mint(server: LiveServer, key: str, job: str) -> str:
    r = await server.client(key).post(f"{JOBS}/{job}/stream-tokens")
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


async def refused_everywhere(server: LiveServer, job: str, key: str, token: str) -> None:
    """The key is a 401 on REST, SSE and the WebSocket handshake; so is its token."""
    assert_problem(await server.client(key).get(JOBS), 401)
    assert await raw_status(server.port, f"/api/v1/jobs/{job}/events/stream", key) == 401
    assert await raw_status(server.port, f"/api/v1/jobs/{job}/events/stream?token={token}") == 401
    for credentials in ({"key": key, "params": {}}, {"key": "", "params": {"token": token}}):
        assert (await ws_refused(server.ws_url, job, **credentials))[0] == 401


async def test_revoking_a_key_closes_its_streams_within_5_s(live_server: LiveServer) -> None:
    """Streams of the revoked key (and of a token it minted) end; the other key's live on."""
    server = live_server
    storage = server.resources.storage
    user = await keys.verify_key(storage.identity, server.key)
    doomed = await keys.issue_key(storage.identity, user.id, "doomed")
    job = await server.create_job()
    assert (await server.client().post(f"{JOBS}/{job}/events", json={"data": "first\n"})).is_success
    token = await mint(server, doomed, job)
    by_key = await open_streams(server, job, key=doomed)
    by_token = await open_streams(server, job, token=token, n=1)
    survivors = await open_streams(server, job, key=server.key, n=1)
    try:
        assert server.resources.streams.slots.count(user.id) == 5 + 3 + 3
        assert await storage.identity.revoke_key(await key_id(server, user.id, "doomed"))
        codes = await asyncio.gather(by_key.all_end(), by_token.all_end())
        assert codes == [[4401, 4401], [4401]]
        assert server.resources.streams.slots.count(user.id) == 3
        # The other key's streams are untouched and still live.
        r = await server.client().post(f"{JOBS}/{job}/events", json={"data": "second\n"})
        assert r.status_code == 201
        await survivors.sse[0].wait_for(b"id: 1")
        await survivors.text[0].wait_for(b"second\n")
        assert json.loads(await asyncio.wait_for(survivors.ws[0].recv(), 10))["index"] == 1
        await refused_everywhere(server, job, doomed, token)
    finally:
        for streams in (by_key, by_token, survivors):
            await streams.close()


async def test_deactivating_a_user_from_the_cli_closes_every_stream(
    live_server: LiveServer,
) -> None:
    """``streamer users deactivate`` in another process: all of the user's keys and
    tokens stop working, its streams end, other users carry on."""
    server = live_server
    storage = server.resources.storage
    user = await keys.verify_key(storage.identity, server.key)
    second = await keys.issue_key(storage.identity, user.id, "second")
    job = await server.create_job()
    await server.client().post(f"{JOBS}/{job}/events", json={"data": "first\n"})
    token = await mint(server, second, job)
    other_key = await server.new_user("bystander")
    other_job = await server.create_job(server.client(other_key))
    await server.client(other_key).post(f"{JOBS}/{other_job}/events", json={"data": "first\n"})
    mine = [
        await open_streams(server, job, key=server.key, n=1),
        await open_streams(server, job, key=second, n=1),
        await open_streams(server, job, token=token, n=1),
    ]
    theirs = await open_streams(server, other_job, key=other_key, n=1)
    try:
        email = (await storage.identity.get_user(user.id)).email  # type: ignore[union-attr]
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "streamer", "users", "deactivate", "--email", email),
            *("--db", server.settings.db_url),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err
        assert b"deactivated user" in out
        codes = await asyncio.gather(*(streams.all_end() for streams in mine))
        assert codes == [[4401]] * 3
        for key in (server.key, second):
            await refused_everywhere(server, job, key, token)
        assert (await server.client(other_key).get(JOBS)).status_code == 200
        r = await server.client(other_key).post(f"{JOBS}/{other_job}/events", json={"data": "x\n"})
        assert r.status_code == 201
        await theirs.sse[0].wait_for(b"id: 1")
    finally:
        for streams in [*mine, theirs]:
            await streams.close()


async def test_last_used_at_is_written_at_most_once_a_minute(live_server: LiveServer) -> None:
    """Fifty requests on one key: one write of last_used_at, no commit for the rest."""
    server = live_server
    storage = server.resources.storage
    user = await keys.verify_key(storage.identity, server.key)
    client = server.client()
    assert (await client.get(JOBS)).status_code == 200
    (key,) = await storage.identity.list_keys(user.id)
    assert key.last_used_at is not None
    commits = storage.writer_stats()[0]  # type: ignore[attr-defined]
    for _ in range(50):
        assert (await client.get(JOBS)).status_code == 200
    assert storage.writer_stats()[0] == commits  # type: ignore[attr-defined]
    assert (await storage.identity.list_keys(user.id))[0].last_used_at == key.last_used_at
    # A minute later (moved on the throttle's own clock), the next request writes again.
    server.resources.auth.touched[key.id] -= 61
    assert (await client.get(JOBS)).status_code == 200
    (later,) = await storage.identity.list_keys(user.id)
    assert later.last_used_at is not None and later.last_used_at > key.last_used_at


def test_users_list_and_deactivate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from streamer.cli.main import main

    db = str(tmp_path / "users.db")
    for name in ("ann", "bob"):
        assert main(["users", "create", "--name", name, "--email", f"{name}@x", "--db", db]) == 0
    key = capsys.readouterr().out.splitlines()[-1]
    assert main(["users", "list", "--json", "--db", db]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(u["email"], u["active"]) for u in listed] == [("ann@x", True), ("bob@x", True)]
    assert key not in json.dumps(listed)
    assert main(["users", "deactivate", "--email", "ann@x", "--db", db]) == 0
    assert "deactivated user" in capsys.readouterr().out
    assert main(["users", "list", "--db", db]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["ID", "NAME", "EMAIL", "ACTIVE", "CREATED_AT"]
    assert table[1].split()[:4] == ["1", "ann", "ann@x", "False"]
    assert main(["users", "deactivate", "--email", "nobody@x", "--db", db]) == 1
    assert "no user" in capsys.readouterr().err


@pytest.fixture
async def pg_nodes(tmp_path: Path) -> AsyncIterator[tuple[LiveServer, LiveServer]]:
    async with pg_database() as (url, _):
        nodes = [LiveServer(Settings(db=url)) for _ in range(2)]
        for node in nodes:
            await node.start()
        try:
            nodes[0].key = await nodes[0].new_user("owner")
            yield nodes[0], nodes[1]
        finally:
            for node in nodes:
                for client in node.clients:
                    await client.aclose()
                await node.stop()


async def test_revocation_reaches_every_node(pg_nodes: tuple[LiveServer, LiveServer]) -> None:
    """PostgreSQL, two nodes: a key revoked through node B is refused by node A at the
    next request, and node A's streams of it end within 5 s."""
    a, b = pg_nodes
    user = await keys.verify_key(a.resources.storage.identity, a.key)
    doomed = await keys.issue_key(a.resources.storage.identity, user.id, "doomed")
    job = await a.create_job()
    await a.client().post(f"{JOBS}/{job}/events", json={"data": "first\n"})
    token = await mint(a, doomed, job)
    on_a = await open_streams(a, job, key=doomed, n=1)
    by_token = await open_streams(a, job, token=token, n=1)
    try:
        assert (await b.client(doomed).get(JOBS)).status_code == 200
        assert await b.resources.storage.identity.revoke_key(await key_id(b, user.id, "doomed"))
        assert_problem(await a.client(doomed).get(JOBS), 401)
        assert_problem(await b.client(doomed).get(JOBS), 401)
        assert await asyncio.gather(on_a.all_end(), by_token.all_end()) == [[4401], [4401]]
        await refused_everywhere(a, job, doomed, token)
    finally:
        await on_a.close()
        await by_token.close()
