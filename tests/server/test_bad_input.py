"""Bad input on every route: a 4xx problem+json naming the field, never a 500, no change.

One table, one case a line. Each case runs against a job in a known state, and
the job, its log and the caller's job list are compared before and after.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio

from streamer.core import keys

from ..support.clients import ws_refused
from ..support.live import LiveServer
from ..support.rest_helpers import JOBS, assert_problem, module_server, with_fresh_user

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAX_BODY = 64 * 1024
MAX_EVENT = 16 * 1024
MAX_BATCH = 20

CREATE = ("POST", "/jobs")
LIST = ("GET", "/jobs")
GET = ("GET", "/jobs/{job}")
PATCH = ("PATCH", "/jobs/{job}")
APPEND = ("POST", "/jobs/{job}/events")
PAGE = ("GET", "/jobs/{job}/events")
SSE = ("GET", "/jobs/{done}/events/stream")
LOG = ("GET", "/jobs/{done}/log")
BODY_ROUTES = (CREATE, PATCH, APPEND)


@dataclass(frozen=True)
class Case:
    route: tuple[str, str]
    status: int
    field: str | None
    content: bytes | None = None
    params: dict[str, str] | None = None
    headers: dict[str, str] | None = None


def raw(route: tuple[str, str], content: bytes, status: int, field: str | None) -> Case:
    return Case(route, status, field, content=content)


def body(route: tuple[str, str], value: Any, status: int, field: str | None) -> Case:
    return Case(route, status, field, content=json.dumps(value).encode())


def query(route: tuple[str, str], params: dict[str, str], status: int, field: str) -> Case:
    return Case(route, status, field, params=params)


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


CURSORS = {
    "negative": "-1",
    "fraction": "1.5",
    "word": "abc",
    "fullwidth": "１",
    "huge": "99999999999999999999",
    "exponent": "1e3",
    "plus": "+1",
    "space": " 1",
}
FORGED = base64.urlsafe_b64encode(b"no separator").decode()


def table() -> list[Any]:
    cases: list[Any] = []

    def add(name: str, case: Case, *marks: Any) -> None:
        cases.append(pytest.param(case, id=name, marks=marks))

    # Not JSON, or not one JSON object: every route that reads a body.
    for route in BODY_ROUTES:
        r = f"{route[0]} {route[1]}"
        for name, content in {
            "truncated": b'{"data": "x"',
            "no value": b'{"data": }',
            "single quotes": b"{'data': 'x'}",
            "trailing garbage": b'{"data": "x"} x',
            "two documents": b"{}{}",
            "trailing comma": b'{"data": "x",}',
            "comment": b'{"data": "x" /* c */}',
            "NaN": b'{"data": NaN}',
            "Infinity": b'{"data": Infinity}',
            "-Infinity": b'{"data": -Infinity}',
            "overflowing float": b'{"data": 1e400}',
            "5000-digit integer": b'{"data": ' + b"9" * 5000 + b"}",
            "nested 10000 deep": b'{"data": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
            "lone high surrogate": b'{"data": "\\ud800"}',
            "lone low surrogate": b'{"data": "a\\udc00b"}',
            "invalid UTF-8": b'{"data": "\xff\xfe"}',
            "overlong UTF-8": b'{"data": "\xc0\xaf"}',
            "encoded surrogate": b'{"data": "\xed\xa0\x80"}',
            "UTF-8 BOM": b'\xef\xbb\xbf{"data": "x"}',
            "UTF-16": '{"data": "x"}'.encode("utf-16"),
            "duplicate keys": b'{"data": "a", "data": "b"}',
            "empty": b"",
            "whitespace only": b" \r\n\t",
        }.items():
            add(f"{r}: {name}", raw(route, content, 400, "body"))
        for name, value in {"array": [], "string": "x", "number": 1, "null": None}.items():
            add(f"{r}: {name} body", body(route, value, 422, "body"))
        add(f"{r}: unknown field", body(route, {"colour": "red"}, 422, "colour"))
    add("duplicate type keys", raw(APPEND, b'{"type": "log", "type": "complete"}', 400, "body"))
    add("duplicate nested key", raw(CREATE, b'{"metadata": {"a": 1, "a": 2}}', 400, "body"))
    add(
        "duplicate in a batch",
        raw(APPEND, b'{"events": [{"data": "a", "data": "b"}]}', 400, "body"),
    )

    # Wrong types and values, field by field.
    for name, value in {"number": 1, "bool": True, "array": ["x"], "object": {}}.items():
        add(f"name {name}", body(CREATE, {"name": value}, 422, "name"))
        add(f"container_id {name}", body(PATCH, {"container_id": value}, 422, "container_id"))
        add(f"runner {name}", body(PATCH, {"runner": value}, 422, "runner"))
        add(f"status {name}", body(PATCH, {"status": value}, 422, "status"))
        add(f"type {name}", body(APPEND, {"type": value}, 422, "type"))
        add(f"data {name}", body(APPEND, {"data": value}, 422, "data"))
        if name != "bool":
            add(
                f"success {name}",
                body(APPEND, {"type": "complete", "success": value}, 422, "success"),
            )
    for name, value in {"array": [], "string": "x", "number": 1, "bool": False}.items():
        add(f"metadata {name}", body(CREATE, {"metadata": value}, 422, "metadata"))
    add("name too long", body(CREATE, {"name": "x" * 201}, 422, "name"))
    add("metadata too large", body(CREATE, {"metadata": {"x": "y" * 17_000}}, 422, "metadata"))
    add("metadata nested 40 deep", body(CREATE, {"metadata": nested(40)}, 422, "metadata"))
    add("metadata nested 500 deep", body(CREATE, {"metadata": nested(500)}, 422, "metadata"))
    add("metadata 2^63", raw(CREATE, b'{"metadata": {"n": 9223372036854775808}}', 422, "metadata"))
    add(
        "metadata -2^63-1",
        raw(CREATE, b'{"metadata": {"n": -9223372036854775809}}', 422, "metadata"),
    )
    add(
        "metadata 2^64+1",
        raw(CREATE, b'{"metadata": {"n": 18446744073709551617}}', 422, "metadata"),
    )
    add(
        "metadata 40-digit",
        raw(CREATE, b'{"metadata": {"n": ' + b"7" * 40 + b"}}", 422, "metadata"),
    )
    add("data 2^63", raw(APPEND, b'{"data": 9223372036854775808}', 422, "data"))
    add("metadata NaN", raw(CREATE, b'{"metadata": {"n": NaN}}', 400, "body"))
    add("metadata lone surrogate key", raw(CREATE, b'{"metadata": {"\\udfff": 1}}', 400, "body"))
    add("name lone surrogate", raw(CREATE, b'{"name": "\\ud83d"}', 400, "body"))
    for name, value in {
        "null": None,
        "uppercase": "RUNNING",
        "unknown": "done",
        "empty": "",
        "padded": " running",
    }.items():
        add(f"status {name}", body(PATCH, {"status": value}, 422, "status"))
    add("nothing to change", body(PATCH, {}, 422, "body"))
    add("container_id too long", body(PATCH, {"container_id": "c" * 201}, 422, "container_id"))
    for name, value in {
        "null": None,
        "uppercase": "LOG",
        "capitalised": "Step",
        "33 characters": "a" * 33,
        "empty": "",
        "leading digit": "1step",
        "leading underscore": "_step",
        "trailing LF": "log\n",
        "trailing CRLF": "log\r\n",
        "CR inside": "lo\rg",
        "NUL inside": "lo\x00g",
        "space": "log ",
        "non-ASCII": "lög",
        "fullwidth": "ｌｏｇ",
        "colon": "a:b",
    }.items():
        add(f"type {name}", body(APPEND, {"type": value}, 422, "type"))
    add("success on a log event", body(APPEND, {"data": "x", "success": True}, 422, "success"))
    add("complete without success", body(APPEND, {"type": "complete"}, 422, "success"))
    add(
        "complete success null", body(APPEND, {"type": "complete", "success": None}, 422, "success")
    )
    add("complete success 1", body(APPEND, {"type": "complete", "success": 1}, 422, "success"))
    add(
        "complete success 'true'",
        body(APPEND, {"type": "complete", "success": "true"}, 422, "success"),
    )

    # Batches.
    for name, value in {"object": {}, "string": "x", "null": None, "empty": []}.items():
        add(f"events {name}", body(APPEND, {"events": value}, 422, "events"))
    add("events item not an object", body(APPEND, {"events": [{"data": "a"}, 3]}, 422, "events[1]"))
    add(
        "events item bad type", body(APPEND, {"events": [{}, {"type": "X"}]}, 422, "events[1].type")
    )
    add("events item bad data", body(APPEND, {"events": [{}, {"data": 1}]}, 422, "events[1].data"))
    add("events item unknown", body(APPEND, {"events": [{"x": 1}]}, 422, "events[0].x"))
    add("events next to fields", body(APPEND, {"events": [{}], "data": "x"}, 422, "data"))
    add(
        "complete not last",
        body(
            APPEND, {"events": [{"type": "complete", "success": True}, {}]}, 422, "events[0].type"
        ),
    )
    add(
        "events over max_batch_events",
        body(APPEND, {"events": [{"data": "x"}] * (MAX_BATCH + 1)}, 413, "events"),
    )
    add("data over max_event_bytes", body(APPEND, {"data": "x" * (MAX_EVENT + 1)}, 413, "data"))
    add(
        "multibyte data over max_event_bytes",
        body(APPEND, {"data": "é" * (MAX_EVENT // 2 + 1)}, 413, "data"),
    )
    add("body over max_body_bytes", body(APPEND, {"data": "x" * MAX_BODY}, 413, None))
    add("10 MB string", body(APPEND, {"data": "x" * 10_000_000}, 413, None))
    add("10 MB name", body(CREATE, {"name": "x" * 10_000_000}, 413, None))

    # Cursors and other query parameters.
    int_params = [
        (PAGE, "from_index"),
        (PAGE, "limit"),
        (LIST, "limit"),
        (APPEND, "expected_index"),
        (SSE, "from_index"),
        (SSE, "tail"),
        (LOG, "from_index"),
        (LOG, "tail"),
    ]
    for route, param in int_params:
        r = f"{route[0]} {route[1]}"
        for name, value in CURSORS.items():
            case = Case(
                route,
                400,
                param,
                content=b'{"data": "x"}' if route == APPEND else None,
                params={param: value},
            )
            add(f"{r} {param} {name}", case)
        case = Case(
            route,
            400,
            param,
            content=b'{"data": "x"}' if route == APPEND else None,
            params={param: ""},
        )
        add(f"{r} {param} empty", case)
    add("page limit 0", query(PAGE, {"limit": "0"}, 400, "limit"))
    add("list limit 0", query(LIST, {"limit": "0"}, 400, "limit"))
    for name, value in {**CURSORS, "empty": "", "forged": FORGED, "not base64": "%%%"}.items():
        add(f"list cursor {name}", query(LIST, {"cursor": value}, 400, "cursor"))
    for name, value in {"unknown": "done", "uppercase": "QUEUED", "empty": ""}.items():
        add(f"list status {name}", query(LIST, {"status": value}, 400, "status"))
    add("page from_index beyond the end", query(PAGE, {"from_index": "4"}, 416, "from_index"))
    add("sse from_index beyond the end", query(SSE, {"from_index": "5"}, 416, "from_index"))
    add("log from_index beyond the end", query(LOG, {"from_index": "5"}, 416, "from_index"))
    add("sse from_index and tail", query(SSE, {"from_index": "0", "tail": "1"}, 400, "tail"))
    add("sse bad Last-Event-ID", Case(SSE, 400, "Last-Event-ID", headers={"Last-Event-ID": "x"}))
    add("log follow maybe", query(LOG, {"follow": "maybe"}, 400, "follow"))
    return cases


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    changes = {"max_body_bytes": MAX_BODY, "max_event_bytes": MAX_EVENT}
    async with module_server(tmp_path_factory, max_batch_events=MAX_BATCH, **changes) as server:
        yield server


@dataclass
class Target:
    server: LiveServer
    client: httpx.AsyncClient
    user_id: int
    job: str  # running, three events
    done: str  # completed, three events then complete

    def path(self, template: str) -> str:
        return "/api/v1" + template.format(job=self.job, done=self.done)

    async def snapshot(self) -> Any:
        """Everything a bad request could have changed: the user's jobs and their logs.

        Read from storage, not over HTTP: a few hundred cases times a handful of
        requests would cost seconds, and the state checked is the stored one anyway.
        """
        storage = self.server.resources.storage
        jobs = await storage.jobs.list_jobs(self.user_id, None, 1000, None)
        logs = [[e.line for e in await storage.jobs.read_events(j.id, 0, 1000)] for j in jobs]
        return [j.public() for j in jobs], logs


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def target(shared_server: LiveServer) -> Target:
    server = await with_fresh_user(shared_server)
    client = server.client()
    job, done = await server.create_job(client), await server.create_job(client)
    for j in (job, done):
        r = await client.post(f"{JOBS}/{j}/events", json={"events": [{"data": "x"}] * 3})
        assert r.status_code == 201
    r = await client.post(f"{JOBS}/{done}/events", json={"type": "complete", "success": True})
    assert r.status_code == 201
    user = await keys.verify_key(server.resources.storage.identity, server.key)
    return Target(server, client, user.id, job, done)


@pytest.mark.parametrize("case", table())
async def test_bad_input_is_a_problem_and_changes_nothing(target: Target, case: Case) -> None:
    before = await target.snapshot()
    method, template = case.route
    r = await target.client.request(
        method,
        target.path(template),
        content=case.content,
        params=case.params,
        headers=case.headers,
    )
    assert_problem(r, case.status, case.field)
    assert await target.snapshot() == before


@pytest.mark.parametrize("route", [CREATE, PATCH, APPEND])
async def test_chunked_body_over_the_limit_is_413(target: Target, route: tuple[str, str]) -> None:
    """Without a Content-Length the limit is enforced while reading, not after."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"data": "'
        for _ in range(2 * MAX_BODY // 4096):
            yield b"x" * 4096
        yield b'"}'

    before = await target.snapshot()
    r = await target.client.request(route[0], target.path(route[1]), content=chunks())
    assert_problem(r, 413)
    assert await target.snapshot() == before


async def test_a_batch_of_exactly_max_batch_events_is_accepted(target: Target) -> None:
    client = target.client
    job = await target.server.create_job(client)
    r = await client.post(f"{JOBS}/{job}/events", json={"events": [{"data": "x"}] * MAX_BATCH})
    assert r.status_code == 201 and r.json() == {"first_index": 0, "last_index": MAX_BATCH - 1}
    r = await client.post(f"{JOBS}/{job}/events", json={"data": "y" * MAX_EVENT})
    assert r.status_code == 201, r.text  # exactly max_event_bytes is allowed


async def test_nul_and_edge_values_round_trip_exactly(target: Target) -> None:
    """What is valid but unusual is stored exactly, not refused or mangled; a NUL in a
    name is refused (no PostgreSQL text column holds one), in an event's data it is
    JSON inside the stored line and kept exactly."""
    client = target.client
    refused = await client.post(JOBS, json={"name": "nul\x00name"})
    assert_problem(refused, 422, "name")
    job = await target.server.create_job(
        client, name="edge", metadata={"n": 2**63 - 1, "m": -(2**63), "f": 1e308}
    )
    fetched = (await client.get(f"{JOBS}/{job}")).json()
    assert fetched["name"] == "edge"
    assert fetched["metadata"] == {"n": 2**63 - 1, "m": -(2**63), "f": 1e308}
    content = b'{"data": "a\\u0000b\\u0000", "type": "x.y-z_0"}'
    r = await client.post(f"{JOBS}/{job}/events", content=content)
    assert r.status_code == 201, r.text
    raw_nul = b'{"data": "a\x00b"}'  # a control character must be escaped in JSON
    assert_problem(await client.post(f"{JOBS}/{job}/events", content=raw_nul), 400, "body")
    r = await client.post(f"{JOBS}/{job}/events", content=b'{"data": "\\ud83d\\ude80 \\u0000"}')
    assert r.status_code == 201, r.text
    events = (await client.get(f"{JOBS}/{job}/events")).json()["events"]
    assert [(e["type"], e["data"]) for e in events] == [
        ("x.y-z_0", "a\x00b\x00"),
        ("log", "🚀 \x00"),
    ]
    log = await client.get(f"{JOBS}/{job}/log")
    assert log.content == "a\x00b\x00🚀 \x00".encode()


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/v1/nope", 404),
        ("GET", "/api/v1/jobs/{job}/nope", 404),
        ("GET", "/api/v1/jobs/{job}/events/nope", 404),
        ("GET", "/api/v2/jobs", 404),
        ("GET", "/no/such/page", 404),
        ("PUT", "/api/v1/jobs", 405),
        ("DELETE", "/api/v1/jobs", 405),
        ("PUT", "/api/v1/jobs/{job}", 405),
        ("POST", "/api/v1/jobs/{job}", 405),
        ("PUT", "/api/v1/jobs/{job}/events", 405),
        ("DELETE", "/api/v1/jobs/{job}/events", 405),
        ("POST", "/api/v1/jobs/{job}/events/stream", 405),
        ("POST", "/api/v1/jobs/{job}/log", 405),
        ("GET", "/api/v1/jobs/{job}/stream-tokens", 405),
        ("POST", "/healthz", 405),
    ],
)
async def test_unknown_routes_and_methods_are_problems(
    target: Target, method: str, path: str, status: int
) -> None:
    r = await target.client.request(method, path.format(job=target.job))
    assert_problem(r, status)
    if status == 405:
        allowed = {m.strip() for m in r.headers["allow"].split(",")}
        probe = [m for m in ("GET", "POST", "PATCH", "DELETE") if m in allowed]
        assert method not in allowed and probe
        anonymous = target.server.client("")  # served methods say 401, and change nothing
        for other in probe:  # every method Allow names is served (not 405)
            r = await anonymous.request(other, path.format(job=target.job), json={})
            assert r.status_code != 405, (other, r.text)


async def test_allow_names_every_method_of_a_path(target: Target) -> None:
    r = await target.client.put(f"{JOBS}/{target.job}")
    assert {m.strip() for m in r.headers["allow"].split(",")} == {"GET", "HEAD", "PATCH", "DELETE"}
    r = await target.client.put(JOBS)
    assert {m.strip() for m in r.headers["allow"].split(",")} == {"GET", "HEAD", "POST"}
    r = await target.client.head(f"{JOBS}/{target.job}")
    assert r.status_code == 200 and r.content == b""


@pytest.mark.parametrize(
    "params",
    [
        {"from_index": "-1"},
        {"from_index": "abc"},
        {"from_index": "99999999999999999999"},
        {"tail": "1.5"},
        {"from_index": "5"},
    ],
    ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()),
)
async def test_ws_bad_cursor_is_refused_at_the_handshake(
    target: Target, params: dict[str, str]
) -> None:
    server = target.server
    before = await target.snapshot()
    status, problem = await ws_refused(server.ws_url, target.done, server.key, params)
    assert status in (400, 416) and problem["status"] == status and problem["field"] in params
    assert await target.snapshot() == before
