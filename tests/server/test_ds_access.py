"""Who may use a Durable Streams route: one user's streams are invisible to another (the
same 404 as a missing stream, on every route and mode), requests without credentials
are 401 unless ``ds_anonymous_user`` is set, stream tokens read one stream only; and
the two doors meet: a job created through ``/api/v1`` reads as a JSON stream."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from streamer.core.messages import offset
from streamer.server.settings import Settings

from ..support.live import LiveServer, serving

PATH = "/v1/stream/team/build-1"


@pytest.fixture(params=[True, False], ids=["lean", "asgi"])
async def server(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[LiveServer]:
    async with serving(settings.replace(ds_long_poll_seconds=0.5), lean=request.param) as live:
        yield live


async def a_stream(server: LiveServer) -> str:
    """User A's text stream at PATH, with two messages, and a fork of it; its job id."""
    owner = server.client()
    created = await owner.put(PATH, content=b"one ", headers={"Content-Type": "text/plain"})
    assert created.status_code == 201, created.text
    await owner.post(PATH, content=b"two", headers={"Content-Type": "text/plain"})
    forked = await owner.put(PATH + "-fork", headers={"Stream-Forked-From": PATH})
    assert forked.status_code == 201
    return created.headers["Streamer-Job-Id"]


def every_route(job_id: str) -> list[tuple[str, str, dict[str, str], bytes]]:
    text = {"Content-Type": "text/plain"}
    routes = []
    for path in (PATH, f"/v1/stream/{job_id}", PATH + "-fork"):
        routes += [
            ("GET", path, {}, b""),
            ("GET", f"{path}?offset=-1&live=long-poll", {}, b""),
            ("GET", f"{path}?offset=now&live=long-poll", {}, b""),
            ("GET", f"{path}?offset=-1&live=sse", {}, b""),
            ("HEAD", path, {}, b""),
            ("POST", path, text, b"x"),
            ("POST", path, {"Stream-Closed": "true"}, b""),
            ("DELETE", path, {}, b""),
        ]
    routes.append(("PUT", "/v1/stream/mine", {"Stream-Forked-From": PATH}, b""))
    return routes


async def test_another_user_gets_404_and_no_credentials_401_on_every_route(
    server: LiveServer,
) -> None:
    job_id = await a_stream(server)
    other = server.client(await server.new_user("other"))
    nobody = server.client("")
    for method, path, headers, body in every_route(job_id):
        theirs = await other.request(method, path, headers=headers, content=body)
        assert theirs.status_code == 404, (method, path, theirs.text)
        anonymous = await nobody.request(method, path, headers=headers, content=body)
        assert anonymous.status_code == 401, (method, path)
        assert anonymous.headers["x-content-type-options"] == "nosniff"
    mine = await other.put(PATH, headers={"Content-Type": "application/json"})
    assert mine.status_code == 201  # the same path in its own namespace: another stream
    read = await server.client().get(PATH)
    assert read.status_code == 200 and read.content == b"one two"  # A's is untouched


async def test_a_stream_token_reads_its_stream_only(server: LiveServer) -> None:
    job_id = await a_stream(server)
    minted = await server.client().post(f"/api/v1/jobs/{job_id}/stream-tokens")
    token = minted.json()["token"]
    nobody = server.client("")
    read = await nobody.get(PATH, params={"token": token, "offset": "-1"})
    assert read.status_code == 200 and read.content == b"one two"
    assert (await nobody.head(PATH, params={"token": token})).status_code == 200
    fork = await nobody.get(PATH + "-fork", params={"token": token})
    assert fork.status_code == 404  # another job of the same user
    write = await nobody.post(
        PATH, params={"token": token}, content=b"x", headers={"Content-Type": "text/plain"}
    )
    assert write.status_code == 401  # tokens only read
    key_in_url = await nobody.get(PATH, params={"token": server.key})
    assert key_in_url.status_code == 401


async def test_the_anonymous_user_setting_serves_requests_without_credentials(
    settings: Settings,
) -> None:
    async with serving(settings) as probe:
        email = "anonymous@example.com"
        await probe.resources.storage.identity.create_user("anon", email)
    async with serving(settings.replace(ds_anonymous_user=email)) as server:
        nobody = server.client("")
        created = await nobody.put(
            "/v1/stream/demo", content=b"hi", headers={"Content-Type": "text/plain"}
        )
        assert created.status_code == 201
        assert (await nobody.get("/v1/stream/demo")).content == b"hi"
        keyed = await server.client().get("/v1/stream/demo")
        assert keyed.status_code == 404  # a key is its own user, not the anonymous one
        assert (await nobody.get("/api/v1/jobs")).status_code == 401  # only these routes
    async with serving(settings.replace(ds_anonymous_user="missing@example.com")) as server:
        assert (await server.client("").get("/v1/stream/demo")).status_code == 401


async def test_a_job_created_through_the_api_reads_as_a_json_stream(server: LiveServer) -> None:
    client = server.client()
    job_id = await server.create_job(client)
    await client.post(
        f"/api/v1/jobs/{job_id}/events",
        json={"events": [{"data": "compiling\n"}, {"type": "step", "data": "test"}]},
    )
    read = await client.get(f"/v1/stream/{job_id}")
    assert read.headers["content-type"] == "application/json"
    assert [e["data"] for e in read.json()] == ["compiling\n", "test"]
    assert read.headers["Stream-Next-Offset"] == offset(2)
    refused = await client.post(
        f"/v1/stream/{job_id}", content=b"{}", headers={"Content-Type": "application/json"}
    )
    assert refused.status_code == 405
    await client.patch(f"/api/v1/jobs/{job_id}", json={"status": "running"})
    await client.patch(f"/api/v1/jobs/{job_id}", json={"status": "cancelled"})
    end = await client.get(f"/v1/stream/{job_id}", params={"offset": offset(2)})
    assert end.headers["Stream-Closed"] == "true" and end.json() == []


async def test_bad_input_is_a_4xx_and_stores_nothing(settings: Settings) -> None:
    async with serving(settings.replace(max_body_bytes=1000, max_event_bytes=100)) as server:
        client = server.client()
        await client.put("/v1/stream/j", headers={"Content-Type": "application/json"})
        cases: list[tuple[dict[str, str], bytes, int]] = [
            ({"Content-Type": "application/json"}, b"[1, {]", 400),
            ({"Content-Type": "application/json"}, b"[" + b"1," * 600 + b"1]", 413),
            ({"Content-Type": "application/json"}, b'["' + b"x" * 200 + b'"]', 413),
            ({"Content-Type": "not a type"}, b"1", 400),
            ({}, b"1", 400),
            ({"Content-Type": "application/json", "Producer-Id": "p"}, b"1", 400),
            (
                {
                    "Content-Type": "application/json",
                    "Producer-Id": "p",
                    "Producer-Epoch": "x",
                    "Producer-Seq": "0",
                },
                b"1",
                400,
            ),
        ]
        for headers, body, status in cases:
            response = await client.post("/v1/stream/j", headers=headers, content=body)
            assert response.status_code == status, (headers, body[:20], response.text)
            assert response.headers["content-type"] == "application/problem+json"
        for query in (
            "offset=",
            "offset=a&offset=b",
            "offset=12",
            "live=sse",
            "live=x&offset=-1",
            f"offset={offset(5)}",
        ):
            assert (await client.get(f"/v1/stream/j?{query}")).status_code == 400, query
        for bad_path in ("/v1/stream/a//b", "/v1/stream/a/%2E%2E/b", "/v1/stream/" + "x" * 1100):
            response = await client.put(bad_path)
            assert response.status_code in (400, 404, 431), bad_path
        assert (await client.get("/v1/stream/j")).json() == []


async def test_preflights_name_the_protocols_headers_and_allow_only_listed_origins(
    settings: Settings,
) -> None:
    async with serving(settings.replace(cors_origins="https://app.example")) as server:
        client = server.client("")
        for origin, allowed in (("https://app.example", True), ("https://evil.example", False)):
            preflight = await client.options(
                PATH,
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": "GET",
                    "Access-Control-Request-Headers": "if-none-match",
                },
            )
            assert preflight.status_code == 204
            assert "If-None-Match" in preflight.headers["access-control-allow-headers"]
            assert (preflight.headers.get("access-control-allow-origin") == origin) is allowed
        await server.client().put(PATH)
        read = await server.client().get(PATH, headers={"Origin": "https://app.example"})
        assert read.headers["access-control-allow-origin"] == "https://app.example"
        assert "Stream-Next-Offset" in read.headers["access-control-expose-headers"]
        assert read.headers["cross-origin-resource-policy"] == "cross-origin"


async def test_a_long_poll_at_the_tail_answers_204_after_its_timeout(server: LiveServer) -> None:
    await a_stream(server)
    tail = offset(2)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        waited = await client.get(
            PATH,
            params={"offset": tail, "live": "long-poll"},
            headers={"Authorization": f"Bearer {server.key}"},
        )
    assert waited.status_code == 204
    assert waited.headers["Stream-Next-Offset"] == tail
    assert waited.headers["Stream-Up-To-Date"] == "true"
    assert waited.headers["Stream-Cursor"].isdigit()
