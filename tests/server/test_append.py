"""Appends (POST /jobs/{id}/events): indexes, timestamps, expected_index, complete."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio

from ..support.live import LiveServer
from ..support.rest_helpers import JOBS, assert_problem, module_server, with_fresh_user

pytestmark = pytest.mark.asyncio(loop_scope="module")
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    async with module_server(tmp_path_factory) as server:
        yield server


@pytest_asyncio.fixture(loop_scope="module")
async def live_server(shared_server: LiveServer) -> LiveServer:
    """The module's server with a new user: this test's jobs are its own."""
    return await with_fresh_user(shared_server)


async def page(client: httpx.AsyncClient, job: str, **params: Any) -> dict[str, Any]:
    r = await client.get(f"{JOBS}/{job}/events", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def job_state(client: httpx.AsyncClient, job: str) -> tuple[dict[str, Any], Any]:
    """The job and its whole log: what a refused append must leave untouched."""
    fetched = (await client.get(f"{JOBS}/{job}")).json()
    return fetched, (await page(client, job))["events"]


async def test_single_and_batch_appends_get_contiguous_indexes(live_server: LiveServer) -> None:
    client = live_server.client()
    job = await live_server.create_job(client)
    r = await client.post(f"{JOBS}/{job}/events", json={"data": "one\n"})
    assert r.status_code == 201, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"first_index": 0, "last_index": 0}
    batch = [{"data": "two\n"}, {"type": "step", "data": "build"}, {"type": "progress"}]
    r = await client.post(f"{JOBS}/{job}/events", json={"events": batch})
    assert r.json() == {"first_index": 1, "last_index": 3}
    r = await client.post(f"{JOBS}/{job}/events", json={"events": [{"data": "five\n"}]})
    assert r.json() == {"first_index": 4, "last_index": 4}
    events = (await page(client, job))["events"]
    assert [e["index"] for e in events] == [0, 1, 2, 3, 4]
    assert [(e["type"], e["data"], e["success"]) for e in events] == [
        ("log", "one\n", None),
        ("log", "two\n", None),
        ("step", "build", None),
        ("progress", None, None),
        ("log", "five\n", None),
    ]
    plain = {"index", "type", "data", "success", "timestamp"}
    assert all(set(e) == plain for i, e in enumerate(events) if i != 2)
    assert set(events[2]) == plain | {"section"}  # a step opens a section


async def test_timestamps_are_utc_microsecond_z_and_never_go_back(
    live_server: LiveServer,
) -> None:
    client = live_server.client()
    job = await live_server.create_job(client)
    before = datetime.now(UTC)
    for i in range(5):
        r = await client.post(f"{JOBS}/{job}/events", json={"events": [{"data": str(i)}] * 3})
        assert r.status_code == 201
    after = datetime.now(UTC)
    stamps = [e["timestamp"] for e in (await page(client, job))["events"]]
    assert len(stamps) == 15
    assert all(TIMESTAMP.fullmatch(s) for s in stamps), stamps
    assert stamps == sorted(stamps)
    moments = [datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC) for s in stamps]
    slack = timedelta(seconds=1)
    assert before - slack <= moments[0] and moments[-1] <= after + slack


async def test_page_limits_and_next_index(live_server: LiveServer) -> None:
    client = live_server.client()
    job = await live_server.create_job(client)
    await client.post(f"{JOBS}/{job}/events", json={"events": [{"data": "x"}] * 7})
    first = await page(client, job, limit=3)
    assert [e["index"] for e in first["events"]] == [0, 1, 2]
    assert first["next_index"] == 3 and first["complete"] is False
    rest = await page(client, job, from_index=first["next_index"])
    assert [e["index"] for e in rest["events"]] == [3, 4, 5, 6] and rest["next_index"] == 7
    empty = await page(client, job, from_index=7)
    assert empty == {"events": [], "next_index": 7, "complete": False}
    r = await client.get(f"{JOBS}/{job}/events", params={"from_index": 8})
    assert assert_problem(r, 416, "from_index")["next_index"] == 7


async def test_expected_index_appends_only_at_that_index(live_server: LiveServer) -> None:
    client = live_server.client()
    job = await live_server.create_job(client)
    url = f"{JOBS}/{job}/events"
    r = await client.post(url, params={"expected_index": 0}, json={"data": "a"})
    assert r.status_code == 201 and r.json() == {"first_index": 0, "last_index": 0}
    batch = {"events": [{"data": "b"}, {"data": "c"}]}
    r = await client.post(url, params={"expected_index": 1}, json=batch)
    assert r.status_code == 201 and r.json() == {"first_index": 1, "last_index": 2}
    before = await job_state(client, job)
    for stale in (0, 1, 2, 4, 100):  # a retry of an append that did land, or a future one
        r = await client.post(url, params={"expected_index": stale}, json=batch)
        assert assert_problem(r, 409)["next_index"] == 3
    assert await job_state(client, job) == before
    r = await client.post(url, params={"expected_index": 3}, json={"data": "d"})
    assert r.status_code == 201 and r.json()["first_index"] == 3


async def test_concurrent_retries_with_the_same_expected_index_land_once(
    live_server: LiveServer,
) -> None:
    """Exactly-once for retrying agents: of ten identical retries, one is stored."""
    client = live_server.client(limits=httpx.Limits(max_connections=10))
    job = await live_server.create_job(client)
    url = f"{JOBS}/{job}/events"
    responses = await asyncio.gather(
        *(client.post(url, params={"expected_index": 0}, json={"data": "once"}) for _ in range(10))
    )
    assert sorted(r.status_code for r in responses) == [201] + [409] * 9
    assert [e["data"] for e in (await page(client, job))["events"]] == ["once"]


@pytest.mark.parametrize(("success", "status"), [(True, "completed"), (False, "failed")])
async def test_complete_sets_the_final_status_from_success(
    live_server: LiveServer, success: bool, status: str
) -> None:
    client = live_server.client()
    job = await live_server.create_job(client)
    await client.post(f"{JOBS}/{job}/events", json={"data": "work"})
    r = await client.post(f"{JOBS}/{job}/events", json={"type": "complete", "success": success})
    assert r.status_code == 201 and r.json() == {"first_index": 1, "last_index": 1}
    fetched = (await client.get(f"{JOBS}/{job}")).json()
    assert fetched["status"] == status and TIMESTAMP.fullmatch(fetched["finished_at"])
    body = await page(client, job)
    assert body["complete"] is True
    assert body["events"][-1]["type"] == "complete" and body["events"][-1]["success"] is success


async def test_complete_in_a_batch_must_be_last(live_server: LiveServer) -> None:
    client = live_server.client()
    job = await live_server.create_job(client)
    url = f"{JOBS}/{job}/events"
    await client.post(url, json={"data": "a"})
    before = await job_state(client, job)
    misplaced = {"events": [{"type": "complete", "success": True}, {"data": "after"}]}
    assert_problem(await client.post(url, json=misplaced), 422, "events[0].type")
    assert await job_state(client, job) == before
    last = {"events": [{"data": "b"}, {"type": "complete", "success": True}]}
    r = await client.post(url, json=last)
    assert r.status_code == 201 and r.json() == {"first_index": 1, "last_index": 2}
    assert (await client.get(f"{JOBS}/{job}")).json()["status"] == "completed"


@pytest.mark.parametrize(
    "body",
    [
        {"data": "late"},
        {"events": [{"data": "late"}]},
        {"type": "complete", "success": True},
        {"type": "step"},
    ],
)
async def test_append_after_complete_is_409(live_server: LiveServer, body: Any) -> None:
    client = live_server.client()
    job = await live_server.create_job(client)
    url = f"{JOBS}/{job}/events"
    await client.post(url, json={"type": "complete", "success": False})
    before = await job_state(client, job)
    problem = assert_problem(await client.post(url, json=body), 409)
    assert problem["next_index"] == 1
    r = await client.post(url, params={"expected_index": 1}, json=body)
    assert_problem(r, 409)
    assert await job_state(client, job) == before


async def test_append_after_cancel_is_409(live_server: LiveServer) -> None:
    client = live_server.client()
    job = await live_server.create_job(client)
    await client.patch(f"{JOBS}/{job}", json={"status": "cancelled"})
    before = await job_state(client, job)
    assert_problem(await client.post(f"{JOBS}/{job}/events", json={"data": "x"}), 409)
    assert await job_state(client, job) == before


async def test_appending_to_a_queued_job_marks_it_running(live_server: LiveServer) -> None:
    client = live_server.client()
    job = await live_server.create_job(client)
    assert (await client.get(f"{JOBS}/{job}")).json()["started_at"] is None
    await client.post(f"{JOBS}/{job}/events", json={"type": "step", "data": "checkout"})
    fetched = (await client.get(f"{JOBS}/{job}")).json()
    assert fetched["status"] == "running" and TIMESTAMP.fullmatch(fetched["started_at"])
    assert fetched["event_count"] == 1


async def test_data_round_trips_exactly(live_server: LiveServer) -> None:
    """ANSI colours, CR/LF, NUL, tabs, non-BMP characters and JSON look-alikes survive."""
    client = live_server.client()
    job = await live_server.create_job(client)
    texts = [
        "\x1b[31mred\x1b[0m\r\n",
        "nul\x00in\x00the\x00middle",
        "\t\u2028\u2029 é ✓ 🚀 \U0010ffff",
        '{"index": 99, "type": "complete"}',
        "",
        "x" * 100_000,
    ]
    r = await client.post(f"{JOBS}/{job}/events", json={"events": [{"data": t} for t in texts]})
    assert r.status_code == 201, r.text
    assert [e["data"] for e in (await page(client, job))["events"]] == texts
    log = await client.get(f"{JOBS}/{job}/log")
    assert log.content == "".join(texts).encode()


CONTENT_LENGTH = re.compile(rb"(?im)^content-length: *([0-9]+)\r$")


async def raw_producer(
    server: LiveServer, job: str, producer: int, appends: int
) -> list[tuple[int, bytes]]:
    """One keep-alive HTTP/1.1 connection making ``appends`` appends one after another.

    Plain bytes over a socket rather than httpx: httpcore's pool does work
    proportional to connections x queued requests on every request, and with a
    hundred connections that alone took minutes of CPU for 10,000 appends.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head = (
        f"POST {JOBS}/{job}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {server.key}\r\nContent-Type: application/json\r\n"
    ).encode()
    out: list[tuple[int, bytes]] = []
    try:
        for i in range(appends):
            body = orjson.dumps({"data": f"{producer}:{i}"})
            writer.write(b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body))
            response = await reader.readuntil(b"\r\n\r\n")
            length = CONTENT_LENGTH.search(response)
            assert length is not None, response
            out.append((int(response.split(b" ", 2)[1]), await reader.readexactly(int(length[1]))))
    finally:
        writer.close()
        await writer.wait_closed()
    return out


async def test_group_commit_100_producers_x_100_appends(live_server: LiveServer) -> None:
    """Concurrent appends share commits, and still get exactly the indexes 0..9999."""
    producers, appends = 100, 100
    client = live_server.client()
    job = await live_server.create_job(client)
    writer = live_server.resources.storage.db.writer  # type: ignore[attr-defined]
    groups_before = writer.groups
    results = await asyncio.gather(
        *(raw_producer(live_server, job, p, appends) for p in range(producers))
    )
    groups = writer.groups - groups_before
    total = producers * appends
    statuses = [status for result in results for status, _ in result]
    assert statuses == [201] * total
    answers = [orjson.loads(body) for result in results for _, body in result]
    assert all(a["first_index"] == a["last_index"] for a in answers)
    assert sorted(a["first_index"] for a in answers) == list(range(total))
    assert groups < total, f"{groups} commits for {total} appends: no grouping"
    stored: list[dict[str, Any]] = []
    while len(stored) < total:
        body = await page(client, job, from_index=len(stored))
        assert body["events"], "the stored log is shorter than the appends answered"
        stored.extend(body["events"])
    assert [e["index"] for e in stored] == list(range(total))
    stamps = [e["timestamp"] for e in stored]
    assert stamps == sorted(stamps), "timestamps go back within the job"
    # Each producer's appends are stored in the order it made them, at the index it got.
    for p, result in enumerate(results):
        indexes = [orjson.loads(b)["first_index"] for _, b in result]
        assert [stored[i]["data"] for i in indexes] == [f"{p}:{i}" for i in range(appends)]
    assert (await client.get(f"{JOBS}/{job}")).json()["event_count"] == total
