"""Users, keys and stream tokens: another user's job is a missing job, on every route.

User A's key against user B's job, a missing job and malformed ids must give
byte-identical 404s on every route and method (the WebSocket handshake too), and
B's data must not change. Every route refuses missing or bad credentials with a
401 problem, API keys are refused in URLs, and a stream token opens only the
streams of its own job, only until it expires.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
import websockets

from streamer.core import keys, tokens

from ..support.clients import parse_sse, ws_collect, ws_events
from ..support.live import LiveServer
from ..support.rest_helpers import JOBS, assert_problem, module_server, with_fresh_user

pytestmark = pytest.mark.asyncio(loop_scope="module")

# (method, path under /api/v1/jobs/{id}, JSON body): every HTTP route that names a job.
JOB_ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "", None),
    ("PATCH", "", {"status": "cancelled"}),
    ("PATCH", "", {"runner": "mine now"}),
    ("DELETE", "", None),
    ("POST", "/events", {"data": "injected"}),
    ("POST", "/events", {"type": "complete", "success": True}),
    ("GET", "/events", None),
    ("GET", "/events?from_index=0&limit=1", None),
    ("GET", "/events/stream", None),
    ("GET", "/events/stream?tail=1", None),
    ("GET", "/log", None),
    ("GET", "/log?follow=true", None),
    ("POST", "/stream-tokens", None),
]
# Every /api/v1 HTTP route, for the credential checks.
ALL_ROUTES: list[tuple[str, str, Any]] = [
    ("GET", JOBS, None),
    ("POST", JOBS, {"name": "x"}),
    ("POST", f"{JOBS}/claim", None),
    *((m, f"{JOBS}/{{job}}{p}", b) for m, p, b in JOB_ROUTES),
]
MALFORMED_IDS = [
    "x",
    "0",
    "-1",
    "a" * 300,
    "é",
    "%00",
    "%20",
    "'; DROP TABLE jobs; --",
    "claim%3F",
    "💥",
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    async with module_server(tmp_path_factory) as server:
        yield server


@pytest_asyncio.fixture(loop_scope="module")
async def live_server(shared_server: LiveServer) -> LiveServer:
    return await with_fresh_user(shared_server)


async def job_with_events(server: LiveServer, client: httpx.AsyncClient, complete: bool) -> str:
    job = await server.create_job(client, name="b's", metadata={"secret": "b"})
    events: list[dict[str, Any]] = [{"data": "b line\n"}] * 2
    if complete:
        events.append({"type": "complete", "success": True})
    r = await client.post(f"{JOBS}/{job}/events", json={"events": events})
    assert r.status_code == 201
    return job


async def state(client: httpx.AsyncClient) -> Any:
    """All of a user's jobs and their logs."""
    jobs = (await client.get(JOBS)).json()["jobs"]
    logs = [(await client.get(f"{JOBS}/{j['id']}/events")).json() for j in jobs]
    return jobs, logs


async def ws_close(server: LiveServer, path_id: str, key: str, **params: Any) -> tuple[int, str]:
    """How the server ends a WebSocket that gets no event: the HTTP status and body of
    a refused handshake, or the close code and reason of an accepted one."""
    try:
        async with ws_events(server.ws_url, path_id, key, params) as ws:
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
    except websockets.InvalidStatus as refused:
        return refused.response.status_code, refused.response.body.decode()
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason or ""


def essentials(r: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    headers = sorted((k, v) for k, v in r.headers.items() if k != "date")
    return r.status_code, r.content, headers


# --- another user's job is a missing job ---------------------------------------------


async def test_other_users_job_is_indistinguishable_from_a_missing_one(
    live_server: LiveServer,
) -> None:
    server = live_server
    a = server.client()
    b_key = await server.new_user("b")
    b = server.client(b_key)
    b_jobs = [await job_with_events(server, b, complete) for complete in (False, True)]
    b_before = await state(b)
    missing = secrets.token_urlsafe(12)
    for method, path, body in JOB_ROUTES:
        reference = await a.request(method, f"{JOBS}/{missing}{path}", json=body)
        assert_problem(reference, 404)
        for job in b_jobs + MALFORMED_IDS:
            r = await a.request(method, f"{JOBS}/{job}{path}", json=body)
            assert essentials(r) == essentials(reference), (method, path, job, r.text)
    assert await state(b) == b_before


async def test_websocket_to_another_users_job_is_refused_like_a_missing_one(
    live_server: LiveServer,
) -> None:
    server = live_server
    b = server.client(await server.new_user("b"))
    b_job = await job_with_events(server, b, complete=False)
    missing = await ws_close(server, secrets.token_urlsafe(12), server.key)
    assert missing[0] == 404
    for job in [b_job, "x", "%00", "a" * 300]:
        assert await ws_close(server, job, server.key) == missing, job


async def test_lists_and_claims_never_reach_another_users_jobs(live_server: LiveServer) -> None:
    server = live_server
    a = server.client()
    own = await server.create_job(a)
    b = server.client(await server.new_user("b"))
    b_job = await job_with_events(server, b, complete=False)
    b_queued = await server.create_job(b)
    b_before = await state(b)
    assert [j["id"] for j in (await a.get(JOBS)).json()["jobs"]] == [own]
    assert (await a.get(JOBS, params={"status": "running"})).json()["jobs"] == []
    # A cursor made from B's (newer) job only positions A's own list.
    b_row = next(j for j in b_before[0] if j["id"] == b_job)
    forged = api_cursor(b_row["created_at"], b_row["id"])
    listed = (await a.get(JOBS, params={"cursor": forged})).json()["jobs"]
    assert [j["id"] for j in listed] == [own]
    claimed = await a.post(f"{JOBS}/claim")
    assert claimed.status_code == 200 and claimed.json()["id"] == own
    assert (await a.post(f"{JOBS}/claim")).status_code == 204
    assert b_queued in [
        j["id"] for j in (await b.get(JOBS, params={"status": "queued"})).json()["jobs"]
    ]
    assert await state(b) == b_before


def api_cursor(created_at: str, job_id: str) -> str:
    """A list cursor in the server's own format (its contents are not a secret)."""
    import base64

    return base64.urlsafe_b64encode(f"{created_at}|{job_id}".encode()).decode()


# --- credentials ----------------------------------------------------------------------


def bad_credentials() -> list[Any]:
    wrong_secret = keys.generate_key()
    return [
        pytest.param({}, id="no header"),
        pytest.param({"Authorization": ""}, id="empty header"),
        pytest.param({"Authorization": "Bearer"}, id="scheme only"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="basic auth"),
        pytest.param({"Authorization": "Token {key}"}, id="wrong scheme"),
        pytest.param({"Authorization": "{key}"}, id="no scheme"),
        pytest.param({"Authorization": "Bearer stk_short"}, id="malformed key"),
        pytest.param({"Authorization": "Bearer {key}x"}, id="key too long"),
        pytest.param({"Authorization": "Bearer {badcheck}"}, id="bad checksum"),
        pytest.param({"Authorization": "Bearer {upper}"}, id="prefix case"),
        pytest.param({"Authorization": "Bearer {latin}"}, id="non-ASCII checksum"),
        pytest.param({"Authorization": "Bearer \xe9{key}"}, id="non-ASCII prefix"),
        pytest.param({"Authorization": f"Bearer {wrong_secret}"}, id="unknown key"),
        pytest.param({"Authorization": "Bearer {token}"}, id="stream token as key"),
        pytest.param({"Authorization": "Bearer {key}", "?": "token={key}"}, id="key in ?token"),
        pytest.param({"Authorization": "Bearer {key}", "?": "api_key={key}"}, id="?api_key"),
        pytest.param({"?": "token={key}"}, id="key only in ?token"),
        pytest.param({"?": "api_key={key}"}, id="key only in ?api_key"),
        pytest.param({"?": "access_token={key}"}, id="key only in ?access_token"),
    ]


async def stream_token(server: LiveServer, job: str, key: str | None = None) -> str:
    r = await server.client(key).post(f"{JOBS}/{job}/stream-tokens")
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


@pytest.mark.parametrize("credentials", bad_credentials())
async def test_bad_credentials_are_401_on_every_route(
    live_server: LiveServer, credentials: dict[str, str]
) -> None:
    server = live_server
    own = server.client()
    job = await job_with_events(server, own, complete=True)
    before = await state(own)
    values = {
        "key": server.key,
        "badcheck": server.key[:-1] + ("A" if server.key[-1] != "A" else "B"),
        "upper": "STK_" + server.key[4:],
        "latin": server.key[:-6] + "\xe9" * 6,  # sent as Latin-1 bytes: right length
        "token": await stream_token(server, job),
    }
    headers = {
        k.encode(): v.format(**values).encode("latin-1") for k, v in credentials.items() if k != "?"
    }
    query = credentials.get("?", "").format(**values)
    anonymous = server.client("")
    for method, path, body in ALL_ROUTES:
        url = path.format(job=job) + (("&" if "?" in path else "?") + query if query else "")
        r = await anonymous.request(method, url, json=body, headers=headers)
        problem = assert_problem(r, 401)
        assert r.headers["www-authenticate"].lower().startswith("bearer"), (method, url)
        assert server.key not in problem["detail"]
    assert await state(own) == before


async def test_revoked_key_is_401_and_other_keys_still_work(live_server: LiveServer) -> None:
    server = live_server
    storage = server.resources.storage
    user = await keys.verify_key(storage.identity, server.key)
    second = await keys.issue_key(storage.identity, user.id, "second")
    assert (await server.client(second).get(JOBS)).status_code == 200
    key_id = next(k.id for k in await storage.identity.list_keys(user.id) if k.name == "second")
    assert await storage.identity.revoke_key(key_id)
    assert_problem(await server.client(second).get(JOBS), 401)
    assert (await server.client().get(JOBS)).status_code == 200


async def test_bearer_scheme_is_case_insensitive(live_server: LiveServer) -> None:
    r = await live_server.client("").get(
        JOBS, headers={"Authorization": f"bearer {live_server.key}"}
    )
    assert r.status_code == 200


async def test_websocket_bad_credentials_are_refused_401(live_server: LiveServer) -> None:
    server = live_server
    job = await job_with_events(server, server.client(), complete=True)
    assert (await ws_close(server, job, ""))[0] == 401
    assert (await ws_close(server, job, keys.generate_key()))[0] == 401
    assert (await ws_close(server, job, "", token=server.key))[0] == 401
    assert (await ws_close(server, job, "", token="sst_forged.sig"))[0] == 401


# --- stream tokens --------------------------------------------------------------------


async def sse_with_token(server: LiveServer, job: str, token: str) -> tuple[int, list[int]]:
    """Status and event indexes of an SSE request carrying only ``?token=``."""
    client = server.client("")
    url = f"{JOBS}/{job}/events/stream"
    async with client.stream("GET", url, params={"token": token}) as response:
        if response.status_code != 200:
            await response.aread()
            return response.status_code, []
        ids = [
            int(m.id)
            async for m in parse_sse(response.aiter_bytes())
            if not isinstance(m, str) and m.id is not None
        ]
        return 200, ids


async def test_stream_token_is_minted_for_one_job(live_server: LiveServer) -> None:
    server = live_server
    job = await job_with_events(server, server.client(), complete=True)
    r = await server.client().post(f"{JOBS}/{job}/stream-tokens")
    assert r.status_code == 201 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"token", "expires_at"}
    assert body["token"].startswith(tokens.TOKEN_PREFIX)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z", body["expires_at"])
    expires = datetime.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    ttl = timedelta(seconds=server.settings.stream_token_seconds)
    assert timedelta(0) < expires - datetime.now(UTC) <= ttl


async def test_stream_token_opens_the_streams_of_its_job(live_server: LiveServer) -> None:
    server = live_server
    job = await job_with_events(server, server.client(), complete=True)
    token = await stream_token(server, job)
    assert await sse_with_token(server, job, token) == (200, [0, 1, 2])
    async with ws_events(server.ws_url, job, "", {"token": token}) as ws:
        assert [e["index"] for e in await ws_collect(ws)] == [0, 1, 2]
    assert ws.close_code == 1000
    log = await server.client("").get(f"{JOBS}/{job}/log", params={"token": token})
    assert log.status_code == 200 and log.text == "b line\nb line\n"


async def test_stream_token_does_not_open_another_job(live_server: LiveServer) -> None:
    server = live_server
    client = server.client()
    job, other = [await job_with_events(server, client, complete=True) for _ in range(2)]
    token = await stream_token(server, job)
    status, _ = await sse_with_token(server, other, token)
    assert status == 401
    assert (await ws_close(server, other, "", token=token))[0] == 401
    r = await server.client("").get(f"{JOBS}/{other}/log", params={"token": token})
    assert_problem(r, 401)
    # Nor another user's job, nor a missing one: the token decides before the lookup.
    b = server.client(await server.new_user("b"))
    b_job = await job_with_events(server, b, complete=True)
    for target in (b_job, secrets.token_urlsafe(12)):
        assert (await sse_with_token(server, target, token))[0] == 401


async def test_stream_token_is_refused_on_json_routes(live_server: LiveServer) -> None:
    server = live_server
    own = server.client()
    job = await job_with_events(server, own, complete=True)
    token = await stream_token(server, job)
    before = await state(own)
    anonymous = server.client("")
    for method, path, body in ALL_ROUTES:
        if path.endswith(("/stream", "/stream?tail=1")) or "/log" in path:
            continue
        url = path.format(job=job)
        r = await anonymous.request(
            method, url + ("&" if "?" in url else "?") + f"token={token}", json=body
        )
        assert_problem(r, 401)
    assert await state(own) == before


async def test_expired_or_tampered_stream_token_is_401(live_server: LiveServer) -> None:
    server = live_server
    job = await job_with_events(server, server.client(), complete=True)
    secret = await server.resources.storage.identity.server_secret(tokens.SECRET_NAME)
    user, key_id = await keys.check_key(server.resources.storage.identity, server.key)
    credential = keys.Credential(user.id, key_id)
    expired, _ = tokens.mint(secret, job, credential, ttl=-1)
    valid = await stream_token(server, job)
    payload, _, signature = valid.partition(".")
    tampered = [
        payload + "." + signature[:-2] + ("AA" if not signature.endswith("AA") else "BB"),
        payload[:-1] + ("A" if payload[-1] != "A" else "B") + "." + signature,
        payload,
        "sst_",
        "sst_.",
        tokens.mint(b"another server's secret", job, credential)[0],
        payload + "." + signature[:-1] + "é",
        "sst_é.é",
    ]
    for token in [expired, *tampered]:
        assert (await sse_with_token(server, job, token))[0] == 401, token
        r = await server.client("").get(f"{JOBS}/{job}/log", params={"token": token})
        assert_problem(r, 401)
        assert (await ws_close(server, job, "", token=token))[0] == 401
    assert await sse_with_token(server, job, valid) == (200, [0, 1, 2])
