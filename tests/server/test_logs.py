"""Structured logs: one line per request, one per stream start and end, text or JSON.

A real ``streamer serve`` process at the default ``--log-level info`` gets a few
requests and streams (one read to the end, one the client drops, one refused);
then its stderr is parsed: every request has exactly one line (uvicorn's access log
is off, ours replaces it) with its status, duration, bytes and user id; every
stream has a start and an end line with job, user, transport, duration, events sent
and close reason. The JSON variant must be one JSON object per line throughout.
(The secret grep over these logs, both formats, is tests/test_security_logs.py.)
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..support.clients import ws_events
from ..support.live import free_socket, wait_until
from ..support.procs import wait_until_up

JOBS = "/api/v1/jobs"
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (\w+) ([\w.]+): (.*)$")
TEXT_REQUEST = re.compile(
    r'^(?P<client>\S+) "(?:(?P<method>[A-Z]+) (?P<path>\S+) HTTP/1\.1|WebSocket (?P<ws>\S+))" '
    r"(?P<status>\d+|-) (?P<duration_ms>[\d.]+)ms (?P<bytes>\d+)B user=(?P<user_id>\S+)$"
)
KEY_VALUE = re.compile(r"(\w+)=(\S+)")


def start(db: Path, port: int, log: Path, log_format: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "STREAMER_LOG_FORMAT": log_format}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamer", "serve", "--db", str(db), "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_until_up(f"http://127.0.0.1:{port}/readyz", proc, "streamer serve")
    return proc


def parse_text(text: str) -> list[dict[str, Any]]:
    """Our text lines as the same records the JSON format has (the fields we check)."""
    records: list[dict[str, Any]] = []
    for line in text.splitlines():
        found = TEXT_LINE.match(line)
        if found is None:
            continue
        level, logger, message = found.groups()
        record: dict[str, Any] = {"level": level.lower(), "logger": logger, "msg": message}
        if logger == "streamer.access":
            request = TEXT_REQUEST.match(message)
            assert request is not None, message
            record.update(event="request", **request.groupdict())
            if record.pop("ws"):
                record.update(method="WS", path=request["ws"])
            record["status"] = int(record["status"])
            if record.get("user_id") == "-":
                record["user_id"] = None
        elif message.startswith(("stream start ", "stream end ")):
            words = message.split()
            record["event"] = f"stream_{words[1]}"
            record["transport"] = words[2]
            record.update(KEY_VALUE.findall(message))
            record["job_id"] = record.pop("job")
            record["user_id"] = record.pop("user")
            if "sent" in record:
                record["complete"] = record["complete"] == "True"
                record["events_sent"] = int(record.pop("sent"))
                record["duration_s"] = float(record.pop("duration").rstrip("s"))
        records.append(record)
    return records


def parse_json(text: str) -> list[dict[str, Any]]:
    """Every line after serve's plain start-up notices must be one JSON object."""
    records = []
    for line in text.splitlines():
        if line.startswith(("streamer: ", "export ", "    stk_")) or not line.strip():
            continue
        record = json.loads(line)
        assert isinstance(record, dict) and {"ts", "level", "logger"} <= record.keys(), line
        records.append(record)
    return records


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_one_line_per_request_and_per_stream_start_and_end(
    tmp_path: Path, log_format: str
) -> None:
    db, log = tmp_path / "streamer.db", tmp_path / "server.log"
    with free_socket() as sock:
        port = sock.getsockname()[1]
    proc = await asyncio.to_thread(start, db, port, log, log_format)
    try:
        key = re.findall(r"export STREAMER_API_KEY=(stk_\w+)", log.read_text())[0]
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
            job = (await client.post(JOBS, json={"name": "logged"})).json()["id"]
            for i in range(3):
                r = await client.post(f"{JOBS}/{job}/events", json={"data": f"line {i}\n"})
                assert r.status_code == 201
            async with ws_events(base.replace("http", "ws"), job, key, {}) as ws:
                frame = await ws.recv()  # all three stored events, then the client leaves
                assert [json.loads(x)["index"] for x in frame.split("\n")] == [0, 1, 2]
            params = {"follow": "true"}
            async with client.stream("GET", f"{JOBS}/{job}/log", params=params) as text:
                assert await anext(text.aiter_bytes())  # then this client leaves too
            r = await client.post(
                f"{JOBS}/{job}/events", json={"type": "complete", "success": True}
            )
            assert r.status_code == 201
            async with client.stream("GET", f"{JOBS}/{job}/events/stream") as sse:
                body = b"".join([chunk async for chunk in sse.aiter_bytes()])
            assert body.count(b"\nid: ") + body.startswith(b"id: ") >= 4
            assert (await client.get(f"{JOBS}/{job}/log")).text == "line 0\nline 1\nline 2\n"
            async with httpx.AsyncClient(base_url=base) as anonymous:
                assert (await anonymous.get(JOBS)).status_code == 401
        # The WebSocket's end is logged when the server sees the client leave.
        ends = "stream end " if log_format == "text" else '"stream_end"'
        await wait_until(lambda: log.read_text().count(ends) == 4, timeout=10)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 20)

    text = log.read_text()
    records = parse_json(text) if log_format == "json" else parse_text(text)
    assert not re.search(r' - "(GET|POST) ', text), "no uvicorn access lines: ours replace them"
    requests = [r for r in records if r.get("event") == "request"]
    appends = [r for r in requests if r["path"] == f"{JOBS}/{job}/events"]
    assert [(r["method"], r["status"]) for r in appends] == [("POST", 201)] * 4, "one each"
    for r in requests:
        assert float(r["duration_ms"]) >= 0
        assert r["client"].startswith("127.0.0.1:")
    assert all(str(r["user_id"]) == "1" for r in appends)
    [refused] = [r for r in requests if r["path"] == JOBS and r["status"] == 401]
    assert refused["user_id"] is None
    [ws_request] = [r for r in requests if r["method"] == "WS"]
    assert ws_request["status"] == 101 and str(ws_request["user_id"]) == "1"
    [sse_request] = [r for r in requests if r["path"] == f"{JOBS}/{job}/events/stream"]
    assert sse_request["status"] == 200
    assert [int(r["bytes"]) > 0 for r in appends] == [True] * 4

    starts = [r for r in records if r.get("event") == "stream_start"]
    ended = [r for r in records if r.get("event") == "stream_end"]
    assert sorted(r["transport"] for r in starts) == ["sse", "text", "text", "ws"]
    [dropped_text] = [r for r in ended if r["transport"] == "text" and not r["complete"]]
    assert dropped_text["reason"] == "disconnect" and dropped_text["events_sent"] == 3
    ends = {r["transport"]: r for r in ended if r is not dropped_text}
    assert sorted(ends) == ["sse", "text", "ws"]
    for r in [*starts, *ended]:
        assert r["job_id"] == job and str(r["user_id"]) == "1"
    assert ends["sse"]["reason"] == "done" and ends["sse"]["events_sent"] == 4
    assert ends["text"]["reason"] == "done" and ends["text"]["events_sent"] == 4
    assert ends["ws"]["reason"] == "disconnect" and ends["ws"]["events_sent"] == 3
    assert all(0 <= r["duration_s"] < 30 for r in ends.values())
    assert float(sse_request["duration_ms"]) >= ends["sse"]["duration_s"] * 1000 - 1
    if log_format == "json":
        startup = [r for r in records if "listening on" in r.get("msg", "")]
        assert startup and startup[0]["logger"] == "streamer", "the server's own lines too"
