"""docs/api.md is the contract: it lists every route, close code and error status there is.

The route index must hold every method and path of the OpenAPI document the running
server serves (``/api/v1/openapi.json``), and nothing that is not a route; the
WebSocket and error tables every close code and status the code can produce.
A route, close code or status added without its documentation fails here.
"""

from __future__ import annotations

import re

import pytest

from streamer.core import errors
from streamer.server.http.messages import REASONS

from ..support import REPO
from ..support.live import LiveServer

DOC = REPO / "docs" / "api.md"
ROW = re.compile(r"^\| `(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) (/[^`?\s]*)`", re.MULTILINE)
# Served by the app but not JSON API routes, so not in the OpenAPI document.
DASHBOARD = {("GET", "/"), ("GET", "/{file}")}
# A close code passed as a literal: ``close(1000, ...)``, ``_fail(1002, ...)``, or a
# ``(code, "reason")`` pair in a table of closes.
CLOSE_CALL = re.compile(r"(?:close|_fail)\(\s*(\d{4})\b|\(\s*(?=\d{4},\s*\")(\d{4})")


def section(title: str) -> str:
    """The text of one ``## title`` section of docs/api.md."""
    return DOC.read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def index_rows() -> set[tuple[str, str]]:
    return set(ROW.findall(section("Route index")))


async def openapi_routes(server: LiveServer) -> set[tuple[str, str]]:
    response = await server.client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    return {(method.upper(), path) for path, ops in paths.items() for method in ops}


async def test_every_openapi_route_is_in_the_route_index(live_server: LiveServer) -> None:
    served = await openapi_routes(live_server)
    assert ("GET", "/api/v1/jobs/{job_id}/events/stream") in served, "the walk sees routes"
    missing = sorted(served - index_rows())
    assert not missing, f"docs/api.md's route index lacks {missing}"


async def test_every_route_in_the_index_exists(live_server: LiveServer) -> None:
    stale = sorted(index_rows() - await openapi_routes(live_server) - DASHBOARD)
    assert not stale, f"docs/api.md lists routes that do not exist: {stale}"
    client = live_server.client()
    page = await client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert (await client.get("/app.js")).status_code == 200


def test_every_websocket_close_code_is_documented() -> None:
    """The close codes of the error classes, and every code the server's sources pass
    to a close (its own WebSocket layer, the transports, shutdown)."""
    codes = {cls.ws_code for cls in (errors.StreamerError, *all_errors())}
    for source in (REPO / "streamer" / "server").rglob("*.py"):
        codes |= {int(a or b) for a, b in CLOSE_CALL.findall(source.read_text())}
    assert {1000, 1009, 1012, 4401} <= codes, "the scan finds the close calls"
    documented = {int(c) for c in re.findall(r"^\| (\d{4}) \|", section("Reading events"), re.M)}
    assert codes <= documented, f"close codes missing from docs/api.md: {codes - documented}"


def test_every_error_status_is_documented() -> None:
    """The statuses of the error classes, and every error status the server can write."""
    statuses = {cls.status for cls in all_errors()} | {s for s in REASONS if s >= 400}
    documented = {int(s) for s in re.findall(r"^\| (\d{3}) \|", section("Errors"), re.M)}
    assert statuses <= documented, f"statuses missing from docs/api.md: {statuses - documented}"


def all_errors() -> list[type[errors.StreamerError]]:
    found, todo = [], [errors.StreamerError]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.append(sub)
            todo.append(sub)
    return found


@pytest.mark.parametrize("anchor", sorted(set(re.findall(r"\]\(#([a-z0-9-]+)\)", DOC.read_text()))))
def test_every_link_in_the_document_reaches_a_heading(anchor: str) -> None:
    headings = re.findall(r"^#{2,4} (.+)$", DOC.read_text(), re.MULTILINE)
    slugs = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}
    assert anchor in slugs
