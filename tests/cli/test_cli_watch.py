"""``streamer follow ID1 ID2 ...`` and ``streamer jobs watch`` against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import re
from typing import Any

import httpx
import pytest

from ..support.live import LiveServer
from ..support.procs import STREAMER
from .test_cli_follow import Capsys, cli

PREFIX = re.compile(r"^(?P<name>\S+) *\| (?P<text>.*)$")


async def append(server: LiveServer, job: str, *events: dict[str, Any]) -> None:
    body = {"events": list(events)}
    r = await server.client().post(f"/api/v1/jobs/{job}/events", json=body)
    assert r.status_code == 201, r.text


def by_job(out: str) -> dict[str, list[str]]:
    lines: dict[str, list[str]] = {}
    for line in out.splitlines():
        match = PREFIX.match(line)
        assert match, f"a line without its prefix: {line!r}"
        lines.setdefault(match["name"], []).append(match["text"])
    return lines


async def test_follow_several_jobs_prefixes_each_line_and_exits_with_the_worst(
    live_server: LiveServer, capsys: Capsys
) -> None:
    """Two jobs written while followed, lines split across events: each line whole,
    once, in order, behind its job's name; one job failed, so the exit status is 1."""
    build = await live_server.create_job(name="build")
    test = await live_server.create_job(name="test")
    await append(live_server, build, {"data": "compiling "}, {"data": "a.c\n"})

    async def produce() -> None:
        for i in range(30):
            await append(live_server, build, {"data": f"b{i}\n"})
            await append(live_server, test, {"data": f"t{i}"}, {"data": " ok\n"})
        await append(live_server, build, {"type": "complete", "success": True})
        await append(live_server, test, {"type": "complete", "success": False})

    producer = asyncio.create_task(produce())
    code, out, err = await cli(capsys, live_server, "follow", build, test, "--color", "never")
    await producer
    assert code == 1, err
    lines = by_job(out)
    assert lines["build"] == ["compiling a.c", *(f"b{i}" for i in range(30))]
    assert lines["test"] == [f"t{i} ok" for i in range(30)]
    code, out, _ = await cli(capsys, live_server, "follow", build, build, "--json")
    assert code == 0 and len(out.splitlines()) == 33  # the same job twice is one job
    assert {json.loads(line)["job_id"] for line in out.splitlines()} == {build}


async def test_follow_several_jobs_with_a_missing_one(
    live_server: LiveServer, capsys: Capsys
) -> None:
    job = await live_server.create_job(name="fine")
    await append(live_server, job, {"data": "x\n"}, {"type": "complete", "success": True})
    code, out, err = await cli(
        capsys, live_server, "follow", job, "nosuchjob12345", "--tail", "5", "--color", "never"
    )
    assert code == 1 and "nosuchjob12345" in err and "not found" in err  # refused: 1
    assert by_job(out) == {"fine": ["x"]}


async def test_follow_several_jobs_resumes_each_exactly_across_a_restart(
    live_server: LiveServer, capsys: Capsys
) -> None:
    jobs = [await live_server.create_job(name=f"j{i}") for i in range(3)]
    up = asyncio.Event()
    up.set()
    halfway = asyncio.Event()

    async def produce() -> None:
        headers = {"Authorization": f"Bearer {live_server.key}"}
        async with httpx.AsyncClient(base_url=live_server.url, headers=headers) as http:
            for job in jobs:
                i = 0
                while i <= 200:
                    event = (
                        {"data": f"{job} {i}\n"}
                        if i < 200
                        else {"type": "complete", "success": True}
                    )
                    try:
                        r = await http.post(
                            f"/api/v1/jobs/{job}/events", params={"expected_index": i}, json=event
                        )
                    except httpx.TransportError:
                        await up.wait()
                        continue
                    assert r.status_code in (201, 409, 503), r.text
                    i = i + 1 if r.status_code in (201, 409) else i
                    if i == 100:
                        halfway.set()

    producer = asyncio.create_task(produce())
    follower = asyncio.create_task(cli(capsys, live_server, "follow", *jobs, "--color", "never"))
    await halfway.wait()
    up.clear()
    await live_server.restart()
    up.set()
    code, out, _ = await follower
    await producer
    assert code == 0
    assert by_job(out) == {
        f"j{i}": [f"{job} {n}" for n in range(200)] for i, job in enumerate(jobs)
    }


async def test_jobs_watch_prints_changes_as_they_happen(live_server: LiveServer) -> None:
    """A real ``streamer jobs watch --json`` process: the list first, then each change."""
    first = await live_server.create_job(name="before")
    env = {**os.environ, "STREAMER_URL": live_server.url, "STREAMER_API_KEY": live_server.key}
    proc = await asyncio.create_subprocess_exec(
        STREAMER, "jobs", "watch", "--json", "--snapshot", env=env, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(20):
            snapshot = json.loads(await proc.stdout.readline())
            assert snapshot["type"] == "snapshot" and [j["id"] for j in snapshot["jobs"]] == [first]
            second = await live_server.create_job(name="after")
            await live_server.client().patch(f"/api/v1/jobs/{second}", json={"status": "cancelled"})
            await live_server.client().delete(f"/api/v1/jobs/{first}")
            seen = [json.loads(await proc.stdout.readline()) for _ in range(3)]
    finally:
        proc.terminate()
        await proc.wait()
    assert [(c["type"], c["job"]["id"]) for c in seen] == [
        ("created", second),
        ("updated", second),
        ("deleted", first),
    ]
    assert [c["seq"] for c in seen] == [2, 3, 4]


@pytest.mark.parametrize("flag", [[], ["--after", "0"]])
async def test_jobs_watch_prints_a_line_per_change(
    live_server: LiveServer, flag: list[str]
) -> None:
    env = {**os.environ, "STREAMER_URL": live_server.url, "STREAMER_API_KEY": live_server.key}
    proc = await asyncio.create_subprocess_exec(
        STREAMER, "jobs", "watch", *flag, env=env, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(20):
            if not flag:  # from now: wait until the feed is open before the change
                while not live_server.resources.streams.open_streams:
                    await asyncio.sleep(0.01)
            job = await live_server.create_job(name="shown \x1b[2J")
            line = (await proc.stdout.readline()).decode()
    finally:
        proc.terminate()
        await proc.wait()
    assert line.split()[:3] == ["created", job, "queued"]
    assert "\\x1b[2J" in line and "\x1b" not in line  # remote text cannot drive the terminal
