"""No secret reaches a log, an error body, a metric, the database or a backup.

A real ``streamer serve`` subprocess at ``--log-level debug`` (uvicorn's access log
and the app's logs, stdout and stderr, all captured) is given keys and stream
tokens every way a client could misuse them: as query parameters under any name,
in the path (plain and percent-encoded), in headers that are not Authorization, in
JSON bodies, on the WebSocket and SSE URLs, revoked, tampered, for the wrong job;
next to a few hundred ordinary requests. Then every log line, every response body
and ``/metrics`` are searched for every key and token: zero hits. The database, its
WAL and a ``streamer backup`` copy are scanned byte by byte for every key. It runs
twice: with text logs and with JSON logs (``STREAMER_LOG_FORMAT=json``), where every
line after the start-up notices must also parse as one JSON object.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import websockets

from ..support.live import free_socket

JOBS = "/api/v1/jobs"


def cli(db: Path, *argv: str) -> str:
    """Run ``streamer ...`` as its own process; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "streamer", *argv, "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def start_server(
    db: Path, port: int, log: Path, log_format: str = "text", http: str = "builtin"
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "STREAMER_HTTP": http,
        "STREAMER_AUTH_RECHECK_SECONDS": "0.3",
        "STREAMER_KEEPALIVE_SECONDS": "1",  # keepalives and pings get logged at debug too
        "STREAMER_LOG_FORMAT": log_format,
    }
    env.pop("STREAMER_API_KEY", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamer", "serve", "--db", str(db)]
            + ["--port", str(port), "--log-level", "debug"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise TimeoutError(log.read_text())


class Traffic:
    """Sends requests and keeps every response body, to search them afterwards."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = httpx.AsyncClient(base_url=base, timeout=30)
        self.bodies: list[str] = []
        self.count = 0

    async def request(
        self, method: str, url: str, key: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = kwargs.pop("headers", {})
        if key is not None:
            headers = {**headers, "Authorization": f"Bearer {key}"}
        r = await self.http.request(method, url, headers=headers, **kwargs)
        self.count += 1
        self.bodies.append(r.text)
        return r

    async def ws(
        self, path: str, key: str | None = None, query: str = "", origin: str | None = None
    ) -> int | None:
        """Open a WebSocket, read until the server closes; the close code (or the HTTP
        status of a refused handshake)."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        if origin is not None:
            headers["Origin"] = origin
        url = self.base.replace("http", "ws", 1) + path + (f"?{query}" if query else "")
        self.count += 1
        try:
            async with websockets.connect(url, additional_headers=headers, open_timeout=10) as ws:
                with contextlib.suppress(websockets.ConnectionClosed):
                    while True:
                        self.bodies.append(str(await asyncio.wait_for(ws.recv(), 10)))
            return ws.close_code
        except websockets.InvalidStatus as exc:
            return exc.response.status_code


def secrets_in(text: str, secrets: list[str]) -> list[str]:
    """Every secret (or its part after the prefix, in case one was cut) found in text."""
    return [s for s in secrets if s in text or s[4:] in text]


@pytest.mark.parametrize(
    ("log_format", "http"), [("text", "builtin"), ("json", "builtin"), ("text", "uvicorn")]
)
async def test_no_key_or_token_reaches_logs_bodies_metrics_or_the_database(
    tmp_path: Path, log_format: str, http: str
) -> None:
    """Both servers: uvicorn, at debug level, also dumps each WebSocket handshake's
    headers through the websockets library; they must come out redacted too."""
    db = tmp_path / "streamer.db"
    key_a = cli(db, "users", "create", "--name", "A", "--email", "a@x").splitlines()[-1]
    key_b = cli(db, "users", "create", "--name", "B", "--email", "b@x").splitlines()[-1]
    doomed = cli(db, "keys", "create", "--email", "a@x", "--name", "doomed").splitlines()[-1]
    keys = [key_a, key_b, doomed]
    assert all(k.startswith("stk_") for k in keys)
    with free_socket() as sock:
        port = sock.getsockname()[1]
    log = tmp_path / "server.log"
    proc = await asyncio.to_thread(start_server, db, port, log, log_format, http)
    tokens: list[str] = []
    t = Traffic(f"http://127.0.0.1:{port}")
    try:
        jobs = []
        for i in range(3):
            r = await t.request("POST", JOBS, key_a, json={"name": f"job {i}"})
            assert r.status_code == 201
            jobs.append(r.json()["id"])
        job, other, done = jobs
        b_job = (await t.request("POST", JOBS, key_b, json={})).json()["id"]
        await t.request("POST", f"{JOBS}/{done}/events", key_a, json={"data": "line\n"})
        await t.request(
            "POST", f"{JOBS}/{done}/events", key_a, json={"type": "complete", "success": True}
        )
        for owner, target in ((key_a, done), (key_a, job), (doomed, done), (key_b, b_job)):
            r = await t.request("POST", f"{JOBS}/{target}/stream-tokens", owner)
            assert r.status_code == 201
            tokens.append(r.json()["token"])
            t.bodies.pop()  # the one body that carries a token, by design
        token_done, token_job, token_doomed, token_b = tokens
        tampered = token_done[:-3] + ("AAA" if not token_done.endswith("AAA") else "BBB")
        secrets = keys + tokens + [tampered]

        # A stream of a key that gets revoked mid-way (closed by the re-check).
        ws_doomed = asyncio.create_task(t.ws(f"{JOBS}/{job}/events/ws", doomed))

        for round_ in range(12):
            # Ordinary traffic.
            await t.request("GET", JOBS, key_a, params={"limit": 2})
            await t.request("GET", f"{JOBS}/{done}", key_a)
            await t.request("GET", f"{JOBS}/{done}/events", key_a, params={"from_index": 0})
            await t.request("POST", f"{JOBS}/{job}/events", key_a, json={"data": f"r{round_}\n"})
            await t.request("GET", f"{JOBS}/{done}/events/stream", key_a)
            await t.request("GET", f"{JOBS}/{done}/events/stream", params={"token": token_done})
            await t.request("GET", f"{JOBS}/{done}/log", params={"token": token_done})
            await t.request("GET", f"{JOBS}/{done}/log", key_a)
            assert await t.ws(f"{JOBS}/{done}/events/ws", query=f"token={token_done}") == 1000
            assert await t.ws(f"{JOBS}/{done}/events/ws", key_a) == 1000
            # Keys where they do not belong: every one a 401, 404 or 4xx.
            for name in ("token", "api_key", "access_token", "key", "x", "Authorization"):
                r = await t.request("GET", JOBS, params={name: key_a})
                assert r.status_code == 401
            r = await t.request("GET", f"{JOBS}/{done}/events/stream", params={"token": key_a})
            assert r.status_code == 401
            for path in (
                f"{JOBS}/{key_a}",
                f"{JOBS}/{quote(key_b, safe='')}/events",
                f"/x/{key_a}",
            ):
                assert (await t.request("GET", path, key_a)).status_code in (401, 404)
            encoded = "".join(f"%{b:02X}" for b in key_b.encode())
            assert (await t.request("GET", f"{JOBS}/{encoded}", key_a)).status_code == 404
            assert (await t.request("GET", f"{JOBS}?q={encoded}", key_b)).status_code == 401
            for header in ("X-Api-Key", "Api-Key", "Cookie", "Last-Event-ID", "Referer"):
                r = await t.request("GET", f"{JOBS}/{done}/events/stream", headers={header: key_a})
                assert r.status_code == 401
            for scheme in ("Token", "Basic", "bearer  ", "Bearer:"):
                r = await t.request("GET", JOBS, headers={"Authorization": f"{scheme} {key_a}x"})
                assert r.status_code == 401
            r = await t.request(
                "GET",
                JOBS,
                headers=[("Authorization", f"Bearer {key_a}")] * 2,  # type: ignore[arg-type]
            )
            assert r.status_code == 401
            # Keys and tokens in bodies: refused, never stored, never echoed.
            bodies: list[Any] = [
                {"api_key": key_a},
                {"name": "n", "token": token_done},
                {"metadata": {}, "key": key_b},
            ]
            for body in bodies:
                assert (await t.request("POST", JOBS, key_a, json=body)).status_code == 422
            r = await t.request("POST", f"{JOBS}/{job}/events", key_a, json={"type": key_a})
            assert r.status_code == 422
            r = await t.request(
                "POST", f"{JOBS}/{job}/events", key_a, content=f'{{"data": "{key_a}"'.encode()
            )
            assert r.status_code == 400
            r = await t.request("PATCH", f"{JOBS}/{job}", key_a, json={"status": token_done})
            assert r.status_code == 422
            # Tokens where they do not belong, or not valid.
            for token, target in ((tampered, done), (token_done, other), (token_b, done)):
                r = await t.request(
                    "GET", f"{JOBS}/{target}/events/stream", params={"token": token}
                )
                assert r.status_code == 401
                assert await t.ws(f"{JOBS}/{target}/events/ws", query=f"token={token}") == 401
            r = await t.request("GET", f"{JOBS}/{done}", params={"token": token_done})
            assert r.status_code == 401
            assert await t.ws(f"{JOBS}/{done}/events/ws", query=f"token={key_a}") == 401
            assert await t.ws(f"{JOBS}/{done}/events/ws", query=f"api_key={key_a}") == 401
            assert await t.ws(f"{JOBS}/{key_a}/events/ws", key_a) == 404
            evil = "https://evil.example"
            assert (
                await t.ws(f"{JOBS}/{done}/events/ws", query=f"token={token_done}", origin=evil)
                == 403
            )
            if round_ == 5:  # revoke mid-run: its open WebSocket closes, then it is a 401
                listed = await asyncio.to_thread(
                    cli, db, "keys", "list", "--email", "a@x", "--json"
                )
                doomed_id = next(k["id"] for k in json.loads(listed) if k["name"] == "doomed")
                await asyncio.to_thread(cli, db, "keys", "revoke", str(doomed_id))
                assert await asyncio.wait_for(ws_doomed, 5) == 4401
            if round_ > 5:
                assert (await t.request("GET", JOBS, doomed)).status_code == 401
                r = await t.request(
                    "GET", f"{JOBS}/{done}/events/stream", params={"token": token_doomed}
                )
                assert r.status_code == 401
        await t.request("GET", f"{JOBS}/{job}/log", params={"token": token_job})
        metrics = (await t.request("GET", "/metrics")).text
        backup = tmp_path / "backup.db"
        await asyncio.to_thread(cli, db, "backup", str(backup))
        assert t.count > 500
    finally:
        await t.http.aclose()
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise

    logged = log.read_text(errors="replace")
    # The log is not trivially empty: requests, handshakes and redactions are in it.
    if log_format == "json":
        notices = ("streamer: ", "export ")  # serve's plain start-up lines
        lines = [line for line in logged.splitlines() if not line.startswith(notices)]
        records = [json.loads(line) for line in lines if line.strip() and line[:1] != " "]
        assert len(records) == len([line for line in lines if line.strip() and line[0] != " "])
        requests = [r for r in records if r.get("event") == "request"]
        assert any(
            r["method"] == "GET" and r["path"] == "/api/v1/jobs?limit=2" and r["status"] == 200
            for r in requests
        )
        assert any(r.get("event") == "stream_end" and r["reason"] == "revoked" for r in records)
    else:
        assert re.search(r'"GET /api/v1/jobs\?limit=2 HTTP/1.1" 200', logged), logged[-2000:]
    assert re.search(
        r'WebSocket /api/v1/jobs/\S+ 101|"method": "WS", "path": "/api/v1/jobs/', logged
    )
    assert "token=[redacted]" in logged and "stk_[redacted]" in logged
    assert logged.count("\n") > t.count // 2
    assert secrets_in(logged, secrets) == []
    if http == "uvicorn":
        assert "< authorization: [redacted]" in logged  # the debug header dump, redacted
    assert not re.search(r"(?i)authorization:\s*(?!\[redacted\])\S", logged)
    found = re.search(r"(?i)bearer[ \t]+(?!\[redacted\])\S", logged)  # on one line
    assert not found, logged[max(0, found.start() - 300) : found.end() + 200] if found else ""
    assert secrets_in(metrics, secrets) == []
    leaks = [body for body in t.bodies if secrets_in(body, secrets)]
    assert leaks == []

    files = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"), backup]
    scanned = [f for f in files if f.exists()]
    assert db in scanned and backup in scanned
    for path in scanned:
        content = path.read_bytes()
        assert [k for k in keys if k.encode() in content or k[4:].encode() in content] == [], path
        assert [s for s in tokens if s.encode() in content] == [], path
