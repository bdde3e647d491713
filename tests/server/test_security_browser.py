"""Browsers: the WebSocket Origin check, CORS for the JSON API, and security headers.

A WebSocket handshake is accepted only without ``Origin`` (not a browser), from an
origin on ``STREAMER_ALLOWED_ORIGINS``, or from the service's own origin, all by
exact comparison; everything else is a 403 before any credential is looked at.
CORS is off by default and, when configured, names one exact origin and never
allows credentials. The dashboard is served with a strict CSP, and every response
with ``nosniff`` and ``no-referrer``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import websockets

from streamer.server.security import CSP

from ..support.live import LiveServer
from ..support.rest_helpers import JOBS, module_server, with_fresh_user

pytestmark = pytest.mark.asyncio(loop_scope="module")

DASHBOARD = "https://dash.example.com"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    async with module_server(
        tmp_path_factory,
        allowed_origins=f"{DASHBOARD}, https://other.example",
        cors_origins=DASHBOARD,
    ) as server:
        yield server


@pytest_asyncio.fixture(loop_scope="module")
async def server(shared_server: LiveServer) -> LiveServer:
    return await with_fresh_user(shared_server)


async def handshake(server: LiveServer, job: str, origin: str | None) -> int:
    """101 when the WebSocket opened, else the HTTP status of the refusal."""
    headers = {"Authorization": f"Bearer {server.key}"}
    if origin is not None:
        headers["Origin"] = origin
    try:
        async with websockets.connect(
            f"{server.ws_url}/api/v1/jobs/{job}/events/ws", additional_headers=headers
        ):
            return 101
    except websockets.InvalidStatus as exc:
        return exc.response.status_code


ORIGINS = [
    pytest.param(None, 101, id="missing (not a browser)"),
    pytest.param("http://127.0.0.1:{port}", 101, id="the service's own origin"),
    pytest.param(DASHBOARD, 101, id="on STREAMER_ALLOWED_ORIGINS"),
    pytest.param("https://other.example", 101, id="second allowed origin"),
    pytest.param("https://evil.example", 403, id="evil origin"),
    pytest.param("http://127.0.0.1:{port}.evil.com", 403, id="look-alike suffix"),
    pytest.param("http://127.0.0.1:{port}@evil.com", 403, id="userinfo trick"),
    pytest.param("https://127.0.0.1:{port}", 403, id="scheme mismatch"),
    pytest.param("ws://127.0.0.1:{port}", 403, id="ws scheme"),
    pytest.param("http://localhost:{port}", 403, id="other host name"),
    pytest.param("http://127.0.0.1:1", 403, id="other port"),
    pytest.param("http://127.0.0.1:{port}/", 403, id="with a path"),
    pytest.param("null", 403, id="null (sandboxed frame, file:)"),
    pytest.param("", 403, id="empty"),
    pytest.param(f"{DASHBOARD}.evil.com", 403, id="allowed origin as a prefix"),
    pytest.param("http://dash.example.com", 403, id="allowed host, other scheme"),
    pytest.param(DASHBOARD.upper(), 403, id="allowlist is exact"),
]


@pytest.mark.parametrize(("origin", "status"), ORIGINS)
async def test_websocket_origin_matrix(server: LiveServer, origin: str | None, status: int) -> None:
    job = await server.create_job()
    value = None if origin is None else origin.format(port=server.port)
    assert await handshake(server, job, value) == status


# --- security headers -----------------------------------------------------------------------


async def test_dashboard_is_served_with_a_strict_csp(server: LiveServer) -> None:
    client = server.client("")
    for path in ("/", "/app.js", "/style.css"):
        r = await client.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-security-policy"] == CSP
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in CSP and "'unsafe-inline'" not in CSP


async def test_api_responses_get_nosniff_and_no_referrer(server: LiveServer) -> None:
    job = await server.create_job()
    own, anonymous = server.client(), server.client("")
    responses = [
        await own.get(JOBS),
        await own.get(f"{JOBS}/{job}/events"),
        await anonymous.get(JOBS),  # 401
        await own.get(f"{JOBS}/missing"),  # 404
        await anonymous.get("/healthz"),
        await anonymous.get("/api/v1/openapi.json"),
    ]
    await own.post(f"{JOBS}/{job}/events", json={"type": "complete", "success": True})
    async with own.stream("GET", f"{JOBS}/{job}/events/stream") as sse:
        responses.append(sse)
    for r in responses:
        assert r.headers["x-content-type-options"] == "nosniff", r.url
        assert r.headers["referrer-policy"] == "no-referrer", r.url
        assert "content-security-policy" not in r.headers


# --- CORS ---------------------------------------------------------------------------------


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }


async def test_cors_allows_exactly_the_configured_origin_without_credentials(
    server: LiveServer,
) -> None:
    client, anonymous = server.client(), server.client("")
    ok = await anonymous.options(JOBS, headers=preflight(DASHBOARD))
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == DASHBOARD
    assert "authorization" in ok.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in ok.headers
    for evil in ("https://evil.example", f"{DASHBOARD}.evil.com", "null"):
        refused = await anonymous.options(JOBS, headers=preflight(evil))
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
    r = await client.get(JOBS, headers={"Origin": DASHBOARD})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == DASHBOARD
    assert "origin" in r.headers["vary"].lower()
    assert "access-control-allow-credentials" not in r.headers
    # Errors are readable by the allowed page too (a 401 it can act on).
    unauthorized = await anonymous.get(JOBS, headers={"Origin": DASHBOARD})
    assert unauthorized.status_code == 401
    assert unauthorized.headers["access-control-allow-origin"] == DASHBOARD
    for evil in ("https://evil.example", "null"):
        r = await client.get(JOBS, headers={"Origin": evil})
        assert "access-control-allow-origin" not in r.headers
    # The dashboard's static files are same-origin only.
    assert (
        "access-control-allow-origin"
        not in (await anonymous.get("/", headers={"Origin": DASHBOARD})).headers
    )


async def test_cors_is_off_by_default(tmp_path_factory: pytest.TempPathFactory) -> None:
    async with module_server(tmp_path_factory) as server:
        server.key = await server.new_user("plain")
        client = server.client()
        r = await client.get(JOBS, headers={"Origin": DASHBOARD})
        assert r.status_code == 200
        assert not any(h.startswith("access-control-") for h in r.headers)
        r = await server.client("").options(JOBS, headers=preflight(DASHBOARD))
        assert r.status_code == 405
        assert "access-control-allow-origin" not in r.headers
