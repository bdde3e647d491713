"""The OpenAPI 3.1 document: served without auth, exactly the mounted routes, true to
the responses, and fuzzed by schemathesis (no 5xx; every secured route refuses
requests without valid credentials)."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from starlette.routing import Mount, Route, WebSocketRoute

from ..support.live import LiveServer
from ..support.rest_helpers import JOBS, module_server, with_fresh_user

# schemathesis's own JSON Schema engine: installed with it (the dev extra).
jsonschema_rs = pytest.importorskip("jsonschema_rs")

pytestmark = pytest.mark.asyncio(loop_scope="module")

DOC = "/api/v1/openapi.json"
STREAMING = r"/(stream|ws|log|changes|streams/events)$"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    async with module_server(tmp_path_factory) as server:
        yield server


@pytest_asyncio.fixture(loop_scope="module")
async def server(shared_server: LiveServer) -> LiveServer:
    return await with_fresh_user(shared_server)


@pytest_asyncio.fixture(loop_scope="module")
async def document(server: LiveServer) -> dict[str, Any]:
    r = await server.client("").get(DOC)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body: dict[str, Any] = r.json()
    return body


def mounted(routes: list[Any], prefix: str = "") -> set[tuple[str, str]]:
    """(path, method) of every route the app serves; static files are not routes."""
    found: set[tuple[str, str]] = set()
    for route in routes:
        if isinstance(route, Mount):
            if route.routes:  # a router; StaticFiles has none
                found |= mounted(list(route.routes), prefix + route.path)
        elif isinstance(route, WebSocketRoute):
            found.add((prefix + route.path, "get"))  # the upgrade is a GET
        elif isinstance(route, Route):
            methods = route.methods or {"GET"}
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", prefix + route.path)  # {path:path}
            found |= {(path, m.lower()) for m in methods if m != "HEAD"}
    return found


async def test_document_lists_exactly_the_mounted_routes(
    server: LiveServer, document: dict[str, Any]
) -> None:
    assert document["openapi"] == "3.1.0"
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert server.server is not None
    assert documented == mounted(server.server.app.routes)
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


async def test_every_secured_operation_names_bearer_auth(document: dict[str, Any]) -> None:
    public = {"/healthz", "/readyz", "/metrics", DOC}
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            expected = [] if path in public or method == "options" else [{"bearer": []}]
            assert op["security"] == expected, (method, path)
            if expected:
                assert "401" in op["responses"], (method, path)


async def test_schemas_are_valid_and_describe_real_responses(
    server: LiveServer, document: dict[str, Any]
) -> None:
    """Each component schema is valid JSON Schema 2020-12, and real responses match."""
    for schema in document["components"]["schemas"].values():
        jsonschema_rs.meta.validate(schema)

    def check(body: Any, name: str) -> None:
        root = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
        jsonschema_rs.Draft202012Validator(root).validate(body)

    client = server.client()
    created = await client.post(JOBS, json={"name": "n", "metadata": {"a": [1]}})
    check(created.json(), "Job")
    job = created.json()["id"]
    check((await client.get(JOBS)).json(), "JobList")
    appended = await client.post(
        f"{JOBS}/{job}/events",
        json={"events": [{"data": "x"}, {"type": "complete", "success": True}]},
    )
    check(appended.json(), "Appended")
    check((await client.get(f"{JOBS}/{job}/events")).json(), "EventPage")
    check((await client.post(f"{JOBS}/{job}/stream-tokens")).json(), "StreamToken")
    check((await client.get(f"{JOBS}/missing")).json(), "Problem")
    check((await client.get("/healthz")).json(), "Status")
    check({"data": "x"}, "Append")
    check({"events": [{"type": "step", "data": None}]}, "Append")
    with pytest.raises(jsonschema_rs.ValidationError):
        check({"events": []}, "Append")


async def test_schemathesis_finds_no_server_error_and_no_ignored_auth(
    server: LiveServer, tmp_path: Path
) -> None:
    """The JSON routes and the Durable Streams writes (streams excluded), 20 examples
    each, a fixed seed: no 5xx, and
    each secured operation sent without credentials (or with bad ones) is a 401."""
    executable = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if executable is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    proc = await asyncio.create_subprocess_exec(
        executable,
        "run",
        f"{server.url}{DOC}",
        "--url",
        server.url,
        "--checks",
        "not_a_server_error,ignored_auth",
        "--max-examples",
        "20",
        "--seed",
        "20261122",
        "--workers",
        "1",
        "--phases",
        "examples,coverage,fuzzing",
        "--exclude-path-regex",
        STREAMING,
        "--exclude-operation-id",
        "get_stream_path",  # Durable Streams reads: long-poll and SSE wait
        # Appends to random stream paths are mostly 404s and 400s, which schemathesis
        # reports as warnings (missing test data); the checks above still run on them.
        "--warnings",
        "missing_auth,base_url_mismatch,unused_openapi_auth,method_not_allowed",
        "--header",
        f"Authorization: Bearer {server.key}",
        "--report-dir",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    assert "No issues found" in text and "Tested: 19" in text, text[-3000:]
    assert server.key not in text.replace(server.key[:8] + "*", "")
