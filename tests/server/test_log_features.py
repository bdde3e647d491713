"""Sections, search and redaction through a real server: every route and stream, and
the bytes of the database, its WAL and the server's own log."""

from __future__ import annotations

import asyncio
import base64
import random
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from streamer.core.text import plain_text

from ..support.clients import ws_collect
from ..support.live import LiveServer
from ..support.procs import ServerProcess

JOBS = "/api/v1/jobs"
E = "\x1b["
CI_LOG = [
    "::group::Install\n",
    "npm ci\n",
    "::endgroup::\n",
    f"{E}0Ksection_start:1700000000:test[collapsed=true]\r{E}0K{E}1mRun tests{E}0m\n",
    "::group::unit\n",
    "ok\n",
    "::endgroup::\n",
    f"{E}0Ksection_end:1700000005:test\r{E}0K\n",
    "--- Deploy\n",
    "pushed\n",
]


async def append(client: httpx.AsyncClient, job: str, *events: dict[str, Any]) -> None:
    r = await client.post(f"{JOBS}/{job}/events", json={"events": list(events)})
    assert r.status_code == 201, r.text


async def test_sections_reach_the_index_and_every_reader_with_their_events(
    live_server: LiveServer,
) -> None:
    client = live_server.client()
    job = await live_server.create_job(client, name="ci")
    sse = live_server.sse(job)
    live = asyncio.create_task(sse.collect())  # a live reader from index 0
    for data in CI_LOG:
        await append(client, job, {"data": data})
    await append(client, job, {"type": "complete", "success": True})
    messages = await asyncio.wait_for(live, 10)

    sections = (await client.get(f"{JOBS}/{job}/sections")).json()["sections"]
    brief = [(s["title"], s["start_index"], s["end_index"], s["depth"]) for s in sections]
    assert brief == [
        ("Install", 0, 2, 0),
        ("Run tests", 3, 7, 0),
        ("unit", 4, 6, 1),
        ("Deploy", 8, 10, 0),
    ]
    assert sections[1]["collapsed"] is True and sections[0]["collapsed"] is True
    assert all(s["duration_seconds"] >= 0 and s["finished_at"] for s in sections)
    assert [s["start_line"] for s in sections] == [1, 4, 5, 9]

    page = (await client.get(f"{JOBS}/{job}/events")).json()["events"]
    replay = await live_server.sse(job).collect()
    async with live_server.ws(job) as ws:
        frames = await ws_collect(ws)
    for reader in ([m.json() for m in messages], [m.json() for m in replay], frames):
        assert reader == page
    marked = {e["index"]: e["section"] for e in page if "section" in e}
    assert sorted(marked) == [0, 2, 3, 4, 6, 7, 8, 10]
    assert [s["title"] for s in marked[10]["closed"]] == ["Deploy"]  # closed by complete
    assert [e["data"] for e in page[:-1]] == CI_LOG  # markers stay, byte-exact
    log = await client.get(f"{JOBS}/{job}/log")
    assert log.text == "".join(CI_LOG)


def reference(data: list[str], needle: str) -> list[tuple[int, str]]:
    found = []
    for index, text in enumerate(data):
        for line in plain_text(text).split("\n"):
            if line and needle.lower() in line.lower():
                found.append((index, line))
    return found


async def test_search_pages_through_the_whole_log_and_refuses_what_it_cannot_run(
    live_server: LiveServer,
) -> None:
    client = live_server.client()
    job = await live_server.create_job(client, name="search")
    rng = random.Random(3)
    data = [
        f"{i} " + rng.choice(["build ok", f"{E}31mER{E}1mROR{E}0m: boom", "warn: x"]) + "\n"
        for i in range(2500)
    ]
    for start in range(0, 2500, 1000):
        await append(client, job, *[{"data": d} for d in data[start : start + 1000]])
    expected = reference(data, "error")

    got, start = [], 0
    while True:
        r = await client.get(f"{JOBS}/{job}/search", params={"q": "Error", "from_index": start})
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["matches"]) <= 100 and body["complete"] is False
        got.extend((m["index"], m["text"]) for m in body["matches"])
        assert all(m["line"] == m["index"] + 1 for m in body["matches"])
        if not body["matches"]:
            assert body["next_index"] == 2500
            break
        start = body["next_index"]
    assert got == expected

    r = await client.get(f"{JOBS}/{job}/search", params={"q": r"^\d+ warn", "regex": "true"})
    assert len(r.json()["matches"]) == 100
    counted = await client.get(
        f"{JOBS}/{job}/search", params={"q": "error", "count": "true", "no_text": "true"}
    )
    assert counted.json()["total"] == len(expected)
    assert [(m["index"], set(m)) for m in counted.json()["matches"]] == [
        (i, {"index", "line"}) for i, _ in expected[:100]
    ]
    r = await client.get(f"{JOBS}/{job}/search", params={"q": "ERROR", "case": "sensitive"})
    assert r.json()["matches"][0]["text"].endswith("ERROR: boom")
    assert (
        await client.get(f"{JOBS}/{job}/search", params={"q": "error", "case": "sensitive"})
    ).json()["matches"] == []

    for params, status, field in [
        ({"q": r"(a)\1", "regex": "true"}, 400, "q"),
        ({"q": "(", "regex": "true"}, 400, "q"),
        ({"q": ""}, 400, "q"),
        ({"q": "x", "case": "upper"}, 400, "case"),
        ({"q": "x", "regex": "maybe"}, 400, "regex"),
        ({"q": "x", "limit": "0"}, 400, "limit"),
        ({"q": "x", "from_index": "2501"}, 416, "from_index"),
    ]:
        r = await client.get(f"{JOBS}/{job}/search", params=params)
        assert (r.status_code, r.json().get("field")) == (status, field), (params, r.text)

    await append(client, job, {"type": "complete", "success": False})
    body = (await client.get(f"{JOBS}/{job}/search", params={"q": " ", "limit": 5000})).json()
    assert body["complete"] is False and len(body["matches"]) == 1000  # the setting's cap
    assert body["next_index"] == 1000
    body = (await client.get(f"{JOBS}/{job}/search", params={"q": "boom"})).json()
    assert body["complete"] is False and body["next_index"] < 2500  # a page of 100
    body = (
        await client.get(f"{JOBS}/{job}/search", params={"q": "boom", "from_index": 2400})
    ).json()
    assert body["complete"] is True and body["next_index"] == 2501
    other = live_server.client(await live_server.new_user("other"))
    assert (await other.get(f"{JOBS}/{job}/search", params={"q": "x"})).status_code == 404


async def test_lines_map_events_to_raw_log_lines(live_server: LiveServer) -> None:
    client = live_server.client()
    job = await live_server.create_job(client)
    await append(client, job, {"data": "a\nb\n"}, {"data": "par"}, {"data": "tial\nc\n"})
    got = [(await client.get(f"{JOBS}/{job}/lines", params={"index": i})).json() for i in range(4)]
    assert [g["line"] for g in got] == [1, 3, 3, 5]
    line4 = (await client.get(f"{JOBS}/{job}/lines", params={"line": 4})).json()
    assert line4 == {"index": 2, "line": 3}


SECRET = "pr0d-Deploy/Key+2026=="


def forms_of(secret: str) -> list[str]:
    raw = secret.encode()
    b64 = base64.b64encode(raw).decode()
    return [
        secret,
        b64,
        b64.rstrip("="),
        base64.urlsafe_b64encode(raw).decode(),
        quote(secret, safe=""),
    ]


async def test_a_secret_appears_nowhere_not_in_routes_streams_logs_metrics_or_database_bytes(
    tmp_path: Path,
) -> None:
    """A real ``streamer serve`` at debug log level is given a job with a secret, then
    events printing it in every form; every read route and stream, /metrics, the
    server's log output, the database file and its WAL are searched byte by byte."""
    server = ServerProcess(tmp_path / "streamer.db", log_level="debug")
    await asyncio.to_thread(server.start)
    try:
        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}
        ) as client:
            r = await client.post(
                JOBS,
                json={"name": "deploy", "metadata": {"env": SECRET}, "secrets": [SECRET]},
            )
            assert r.status_code == 201 and "secrets" not in r.json()
            job = r.json()["id"]
            lines = [f"form {i}: {form}\n" for i, form in enumerate(forms_of(SECRET))]
            lines.append(f"::group::deploy with {SECRET}\n")
            await append(client, job, *[{"data": line} for line in lines])
            await append(client, job, {"data": f"one more {SECRET}\n"})
            bodies = [
                (await client.get(f"{JOBS}/{job}")).text,
                (await client.get(JOBS)).text,
                (await client.get(f"{JOBS}/{job}/events")).text,
                (await client.get(f"{JOBS}/{job}/log")).text,
                (await client.get(f"{JOBS}/{job}/sections")).text,
                (await client.get(f"{JOBS}/{job}/search", params={"q": "REDACTED"})).text,
                (await client.get("/metrics")).text,
            ]
            job_json = (await client.get(f"{JOBS}/{job}")).json()
            assert job_json["redactions"] == len(lines) + 1 + 1  # events and metadata
            assert job_json["metadata"] == {"env": "[REDACTED]"}
            search = (await client.get(f"{JOBS}/{job}/search", params={"q": "REDACTED"})).json()
            assert len(search["matches"]) == len(lines) + 1
            # a search for the secret itself: nothing stored can match it
            probe = await client.get(f"{JOBS}/{job}/search", params={"q": SECRET})
            assert probe.json()["matches"] == []
            await append(client, job, {"type": "complete", "success": True})
            sse_url = f"{JOBS}/{job}/events/stream"
            bodies.append((await client.get(sse_url)).text)
        wal = tmp_path / "streamer.db-wal"
        stored = (tmp_path / "streamer.db").read_bytes() + (
            wal.read_bytes() if wal.exists() else b""
        )
    finally:
        await asyncio.to_thread(server.kill)
    logged = server.log.read_bytes()
    assert b"GET /api/v1/jobs" in logged  # the debug log did record the requests
    for form in forms_of(SECRET):
        encoded = form.encode()
        assert not [b for b in bodies if form in b], form
        assert encoded not in stored, form
        assert encoded not in logged, form
    wal_after_kill = wal.read_bytes() if wal.exists() else b""
    assert SECRET.encode() not in wal_after_kill
    assert re.search(rb"\[REDACTED\]", stored)


@pytest.mark.parametrize(
    "bad", [["ab3"], "x-secret-value", [1], ["x" * 70_000], ["s3cr3t-v"] * 101]
)
async def test_bad_secrets_are_refused_without_echoing_them(
    live_server: LiveServer, bad: Any
) -> None:
    r = await live_server.client().post(JOBS, json={"secrets": bad})
    assert r.status_code == 422 and r.json()["field"].startswith("secrets")
    text = bad if isinstance(bad, str) else str(bad[0])
    assert len(text) < 3 or text not in r.text
