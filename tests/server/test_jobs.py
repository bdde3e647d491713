"""The job routes of API.md: create, get, list, PATCH transitions, claim, delete."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from streamer.core import keys
from streamer.core.models import STATUSES

from ..support.clients import ws_collect, ws_refused
from ..support.live import LiveServer
from ..support.rest_helpers import JOBS, assert_problem, module_server, with_fresh_user

pytestmark = pytest.mark.asyncio(loop_scope="module")
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
LEGAL = [
    ("queued", "running"),
    ("queued", "cancelled"),
    ("running", "completed"),
    ("running", "failed"),
    ("running", "cancelled"),
]
ILLEGAL = [
    (old, new)
    for old in STATUSES
    for new in STATUSES
    if (old, new) not in LEGAL and not (old == new and old in ("queued", "running"))
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    async with module_server(tmp_path_factory) as server:
        yield server


@pytest_asyncio.fixture(loop_scope="module")
async def live_server(shared_server: LiveServer) -> LiveServer:
    """The module's server with a new user: this test sees only its own jobs."""
    return await with_fresh_user(shared_server)


async def job_in(live_server: LiveServer, status: str, client: httpx.AsyncClient) -> str:
    """A new job moved to ``status`` along the legal path."""
    job = await live_server.create_job(client)
    path = {
        "queued": [],
        "running": ["running"],
        "completed": ["running", "completed"],
        "failed": ["running", "failed"],
        "cancelled": ["cancelled"],
    }[status]
    for step in path:
        r = await client.patch(f"{JOBS}/{job}", json={"status": step})
        assert r.status_code == 200, r.text
    return job


async def events_of(client: httpx.AsyncClient, job: str) -> list[dict[str, Any]]:
    r = await client.get(f"{JOBS}/{job}/events")
    assert r.status_code == 200, r.text
    events: list[dict[str, Any]] = r.json()["events"]
    return events


# --- create and get -------------------------------------------------------------------


async def test_create_returns_201_queued_job_with_defaults(live_server: LiveServer) -> None:
    r = await live_server.client().post(JOBS, json={})
    assert r.status_code == 201, r.text
    assert r.headers["content-type"] == "application/json"
    job = r.json()
    assert r.headers["location"] == f"{JOBS}/{job['id']}"
    assert job["status"] == "queued"
    assert job["event_count"] == 0 and job["next_index"] == 0
    assert job["name"] is None and job["metadata"] == {}
    assert job["container_id"] is None and job["runner"] is None
    assert job["started_at"] is None and job["finished_at"] is None
    assert TIMESTAMP.fullmatch(job["created_at"]) and TIMESTAMP.fullmatch(job["updated_at"])


async def test_create_round_trips_name_and_metadata(live_server: LiveServer) -> None:
    client = live_server.client()
    name = "deploy \x1b[32mprod\x1b[0m ✓ 🚀"
    metadata = {
        "repo": "acme/web",
        "sha": "0" * 40,
        "n": -(2**63),
        "big": 2**63 - 1,
        "pi": 3.25,
        "flags": [True, False, None],
        "nested": {"ключ": {"deep": ["x", {"y": ""}]}},
        "": "empty key",
    }
    r = await client.post(JOBS, json={"name": name, "metadata": metadata})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["name"] == name and created["metadata"] == metadata
    fetched = (await client.get(f"{JOBS}/{created['id']}")).json()
    assert fetched == created


async def test_get_counts_events(live_server: LiveServer) -> None:
    client = live_server.client()
    job = await live_server.create_job(client)
    assert (await client.get(f"{JOBS}/{job}")).json()["event_count"] == 0
    r = await client.post(f"{JOBS}/{job}/events", json={"events": [{"data": "a"}] * 5})
    assert r.status_code == 201
    await client.post(f"{JOBS}/{job}/events", json={"data": "b"})
    fetched = (await client.get(f"{JOBS}/{job}")).json()
    assert fetched["event_count"] == 6 and fetched["next_index"] == 6
    assert fetched["status"] == "running"


# --- list -----------------------------------------------------------------------------


async def test_list_shows_only_own_jobs_newest_first(live_server: LiveServer) -> None:
    mine, theirs = live_server.client(), live_server.client(await live_server.new_user("b"))
    own = [await live_server.create_job(mine, name=f"a{i}") for i in range(4)]
    other = [await live_server.create_job(theirs, name=f"b{i}") for i in range(3)]
    r = await mine.get(JOBS)
    assert r.status_code == 200
    body = r.json()
    assert [j["id"] for j in body["jobs"]] == own[::-1]
    assert body["next_cursor"] is None
    assert [j["id"] for j in (await theirs.get(JOBS)).json()["jobs"]] == other[::-1]


async def collect_pages(client: httpx.AsyncClient, **params: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        r = await client.get(JOBS, params=query)
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append([j["id"] for j in body["jobs"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100, "pagination does not end"


async def test_cursor_pagination_visits_every_job_once_in_order(live_server: LiveServer) -> None:
    client = live_server.client(limits=httpx.Limits(max_connections=20))
    # Created concurrently, so several share one commit group (and maybe a timestamp).
    await asyncio.gather(*(live_server.create_job(client) for _ in range(25)))
    everything = [j["id"] for j in (await client.get(JOBS, params={"limit": 200})).json()["jobs"]]
    assert len(everything) == 25
    for limit, sizes in [(7, [7, 7, 7, 4]), (5, [5] * 5), (25, [25]), (24, [24, 1])]:
        pages = await collect_pages(client, limit=limit)
        assert [len(p) for p in pages] == sizes  # and no empty page after a full one
        assert [job for page in pages for job in page] == everything


async def test_list_filters_by_status_across_pages(live_server: LiveServer) -> None:
    client = live_server.client()
    running = [await job_in(live_server, "running", client) for _ in range(5)]
    queued = [await job_in(live_server, "queued", client) for _ in range(2)]
    cancelled = [await job_in(live_server, "cancelled", client)]
    pages = await collect_pages(client, status="running", limit=2)
    assert [job for page in pages for job in page] == running[::-1]
    assert await collect_pages(client, status="queued") == [queued[::-1]]
    assert await collect_pages(client, status="cancelled") == [cancelled]
    assert await collect_pages(client, status="completed") == [[]]


async def test_list_limit_bounds(live_server: LiveServer) -> None:
    client = live_server.client()
    # Setup straight through storage: 205 HTTP creates would cost seconds, not test more.
    user = await keys.verify_key(live_server.resources.storage.identity, live_server.key)
    storage = live_server.resources.storage
    await asyncio.gather(*(storage.jobs.create_job(user.id, None, {}) for _ in range(205)))
    assert len((await client.get(JOBS)).json()["jobs"]) == 50  # the default page
    body = (await client.get(JOBS, params={"limit": 1})).json()
    assert len(body["jobs"]) == 1 and body["next_cursor"] is not None
    body = (await client.get(JOBS, params={"limit": 10_000})).json()
    assert len(body["jobs"]) == 200 and body["next_cursor"] is not None  # capped at 200
    for bad in ("0", "-1"):
        problem = assert_problem(await client.get(JOBS, params={"limit": bad}), 400)
        assert problem["field"] == "limit"


# --- PATCH ----------------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new"), LEGAL)
async def test_legal_transition(live_server: LiveServer, old: str, new: str) -> None:
    client = live_server.client()
    job = await job_in(live_server, old, client)
    r = await client.patch(f"{JOBS}/{job}", json={"status": new})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == new
    assert body == (await client.get(f"{JOBS}/{job}")).json()
    if new == "running":
        assert TIMESTAMP.fullmatch(body["started_at"])
        assert body["finished_at"] is None and body["event_count"] == 0
        return
    assert TIMESTAMP.fullmatch(body["finished_at"])
    events = await events_of(client, job)
    assert [(e["index"], e["type"], e["success"]) for e in events] == [
        (0, "complete", new == "completed")
    ]
    assert body["event_count"] == 1


@pytest.mark.parametrize(("old", "new"), ILLEGAL)
async def test_illegal_transition_is_409_and_changes_nothing(
    live_server: LiveServer, old: str, new: str
) -> None:
    client = live_server.client()
    job = await job_in(live_server, old, client)
    before = (await client.get(f"{JOBS}/{job}")).json()
    events_before = await events_of(client, job)
    problem = assert_problem(await client.patch(f"{JOBS}/{job}", json={"status": new}), 409)
    assert problem["status"] == 409
    assert (await client.get(f"{JOBS}/{job}")).json() == before
    assert await events_of(client, job) == events_before


@pytest.mark.parametrize("status", ["queued", "running"])
async def test_patch_to_the_current_unfinished_status_is_a_no_op(
    live_server: LiveServer, status: str
) -> None:
    client = live_server.client()
    job = await job_in(live_server, status, client)
    before = (await client.get(f"{JOBS}/{job}")).json()
    r = await client.patch(f"{JOBS}/{job}", json={"status": status})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == status and r.json()["event_count"] == before["event_count"]
    assert r.json()["started_at"] == before["started_at"]


async def test_nothing_leaves_a_final_status(live_server: LiveServer) -> None:
    """Every status PATCH on a final job is 409, and its single complete event stays single."""
    client = live_server.client()
    for final in ("completed", "failed", "cancelled"):
        job = await job_in(live_server, final, client)
        for target in STATUSES:
            assert_problem(await client.patch(f"{JOBS}/{job}", json={"status": target}), 409)
        assert (await client.get(f"{JOBS}/{job}")).json()["status"] == final
        assert [e["type"] for e in await events_of(client, job)] == ["complete"]


async def test_runner_fields_are_set_and_cleared(live_server: LiveServer) -> None:
    client = live_server.client()
    job = await live_server.create_job(client)
    r = await client.patch(
        f"{JOBS}/{job}", json={"status": "running", "container_id": "c0ffee", "runner": "r-1"}
    )
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["container_id"], r.json()["runner"]) == (
        "running",
        "c0ffee",
        "r-1",
    )
    r = await client.patch(f"{JOBS}/{job}", json={"container_id": None})
    assert r.status_code == 200, r.text
    fetched = (await client.get(f"{JOBS}/{job}")).json()
    assert fetched["container_id"] is None and fetched["runner"] == "r-1"
    assert fetched["status"] == "running"


@pytest.mark.parametrize(
    ("final", "success"), [("completed", True), ("failed", False), ("cancelled", False)]
)
async def test_patch_to_final_ends_live_readers_with_one_complete_event(
    live_server: LiveServer, final: str, success: bool
) -> None:
    client = live_server.client()
    job = await job_in(live_server, "running", client)
    await client.post(f"{JOBS}/{job}/events", json={"data": "working\n"})
    sse = live_server.sse(job)
    sse_messages = sse.messages()
    first = await anext(sse_messages)  # the reader is subscribed and replaying
    assert first.id == "0"
    async with live_server.ws(job) as ws:
        assert [e["index"] for e in await ws_collect(ws, limit=1)] == [0]
        r = await client.patch(f"{JOBS}/{job}", json={"status": final})
        assert r.status_code == 200, r.text
        ws_rest = await asyncio.wait_for(ws_collect(ws), 10)
        assert ws.close_code == 1000
    sse_rest = [m async for m in sse_messages]  # ends: the server closed the response
    assert [(m.id, m.event) for m in sse_rest] == [("1", "complete")]
    assert sse_rest[0].json()["success"] is success
    assert [(e["index"], e["type"], e["success"]) for e in ws_rest] == [(1, "complete", success)]
    events = await events_of(client, job)
    assert [e["type"] for e in events].count("complete") == 1


async def test_patch_completed_appends_a_successful_complete_event(
    live_server: LiveServer,
) -> None:
    client = live_server.client()
    job = await job_in(live_server, "completed", client)
    events = await events_of(client, job)
    assert [(e["type"], e["success"]) for e in events] == [("complete", True)]
    page = (await client.get(f"{JOBS}/{job}/events")).json()
    assert page["complete"] is True
    log = await client.get(f"{JOBS}/{job}/log", params={"follow": "true"})
    assert log.status_code == 200 and log.text == ""  # ends at once: the job is final


# --- claim ----------------------------------------------------------------------------


async def test_claim_takes_the_oldest_queued_job_then_204(live_server: LiveServer) -> None:
    client = live_server.client()
    other = live_server.client(await live_server.new_user("other"))
    await live_server.create_job(other)  # never claimed by the first user
    await job_in(live_server, "running", client)  # not queued
    jobs = [await live_server.create_job(client) for _ in range(3)]
    for expected in jobs:
        r = await client.post(f"{JOBS}/claim")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["id"] == expected and body["status"] == "running"
        assert TIMESTAMP.fullmatch(body["started_at"])
        assert (await client.get(f"{JOBS}/{expected}")).json()["status"] == "running"
    r = await client.post(f"{JOBS}/claim")
    assert r.status_code == 204 and r.content == b""
    assert (await other.post(f"{JOBS}/claim")).status_code == 200


async def test_concurrent_claims_take_every_job_exactly_once(live_server: LiveServer) -> None:
    client = live_server.client(limits=httpx.Limits(max_connections=20))
    jobs = {await live_server.create_job(client) for _ in range(10)}
    responses = await asyncio.gather(*(client.post(f"{JOBS}/claim") for _ in range(20)))
    assert sorted(r.status_code for r in responses) == [200] * 10 + [204] * 10
    claimed = [r.json()["id"] for r in responses if r.status_code == 200]
    assert sorted(claimed) == sorted(jobs)
    listed = (await client.get(JOBS, params={"status": "running"})).json()["jobs"]
    assert {j["id"] for j in listed} == jobs


# --- delete ---------------------------------------------------------------------------


async def test_delete_removes_the_job_and_its_events_everywhere(live_server: LiveServer) -> None:
    client = live_server.client()
    job = await live_server.create_job(client)
    r = await client.post(f"{JOBS}/{job}/events", json={"events": [{"data": "x"}] * 3})
    assert r.status_code == 201
    r = await client.delete(f"{JOBS}/{job}")
    assert r.status_code == 204 and r.content == b""
    missing = await client.get(f"{JOBS}/no-such-job")
    expected = missing.content
    for method, path, body in [
        ("GET", "", None),
        ("PATCH", "", {"status": "cancelled"}),
        ("DELETE", "", None),
        ("POST", "/events", {"data": "late"}),
        ("GET", "/events", None),
        ("GET", "/events/stream", None),
        ("GET", "/log", None),
        ("POST", "/stream-tokens", None),
    ]:
        r = await client.request(method, f"{JOBS}/{job}{path}", json=body)
        assert_problem(r, 404)
        assert r.content == expected, (method, path)
    status, problem = await ws_refused(live_server.ws_url, job, live_server.key, {})
    assert status == 404 and problem == r.json()
    assert job not in [j["id"] for j in (await client.get(JOBS)).json()["jobs"]]
    assert await live_server.resources.storage.jobs.read_events(job, 0, 100) == []
