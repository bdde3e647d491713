"""The official Python client (PyPI ``durable-streams``) against a real server: create,
append with an idempotent producer (retries deduplicated), read, live-tail over SSE
and long-poll; then the same stream through ``/api/v1`` SSE, with the same content
at the same positions."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest

from streamer.core.messages import offset
from streamer.server.settings import Settings

from ..support.live import LiveServer, serving

durable_streams = pytest.importorskip("durable_streams", reason="pip install -e '.[dev]'")


@pytest.fixture(params=[True, False], ids=["lean", "asgi"])
async def server(request: pytest.FixtureRequest, settings: Settings) -> LiveServer:
    async with serving(settings, lean=request.param) as live:
        yield live  # type: ignore[misc]


def tail(url: str, auth: dict[str, str], live: str, start: str, want: int) -> list[object]:
    """Follow ``url`` live from ``start`` until ``want`` messages arrived."""
    got: list[object] = []
    handle = durable_streams.DurableStream(url, headers=auth)
    with handle.stream(offset=start, live=live) as response:
        for item in response.iter_json():
            got.append(item)
            if len(got) >= want:
                break
    handle.close()
    return got


async def test_the_official_python_client_works_against_streamer(server: LiveServer) -> None:
    url = f"{server.url}/v1/stream/agents/run-1"
    auth = {"Authorization": f"Bearer {server.key}"}
    created = await asyncio.to_thread(
        durable_streams.DurableStream.create, url, content_type="application/json", headers=auth
    )
    created.close()

    seqs = itertools.count()
    current = {"seq": 0}

    def next_seq() -> str:
        current["seq"] = next(seqs)
        return str(current["seq"])

    producer = durable_streams.DurableStream(
        url,
        headers={**auth, "Producer-Id": "agent", "Producer-Epoch": "0", "Producer-Seq": next_seq},
        content_type="application/json",
        batching=False,
    )
    results = [await asyncio.to_thread(producer.append, {"step": i}) for i in range(3)]
    assert [r.next_offset for r in results] == [offset(1), offset(2), offset(3)]
    retried = server.client().post(  # the same (producer, epoch, seq) again: stored once
        "/v1/stream/agents/run-1",
        content=b'[{"step": 2}]',
        headers={
            "Content-Type": "application/json",
            "Producer-Id": "agent",
            "Producer-Epoch": "0",
            "Producer-Seq": "2",
        },
    )
    response = await retried
    assert response.status_code == 204 and response.headers["Producer-Seq"] == "2"

    reader = durable_streams.DurableStream(url, headers=auth)
    with await asyncio.to_thread(reader.stream, live=False) as caught_up:
        items = await asyncio.to_thread(lambda: list(caught_up.iter_json()))
        assert items == [{"step": 0}, {"step": 1}, {"step": 2}]
        assert caught_up.offset == offset(3) and caught_up.up_to_date

    followers = [
        asyncio.create_task(asyncio.to_thread(tail, url, auth, mode, offset(1), 4))
        for mode in ("sse", "long-poll")
    ]
    more = [await asyncio.to_thread(producer.append, {"step": i}) for i in (3, 4)]
    assert more[-1].next_offset == offset(5)
    for follower in followers:
        got = await asyncio.wait_for(follower, 20)
        assert got == [{"step": i} for i in range(1, 5)]
    producer.close()
    reader.close()

    head = await server.client().head("/v1/stream/agents/run-1")
    job_id = head.headers["Streamer-Job-Id"]
    await server.client().post(  # close: the /api/v1 SSE reader then reaches the end
        "/v1/stream/agents/run-1", headers={"Stream-Closed": "true"}
    )
    messages = await asyncio.wait_for(server.sse(job_id).collect(), 10)
    assert [(m.id, m.event) for m in messages] == [(str(i), "json") for i in range(5)] + [
        ("5", "complete")
    ]
    assert [json.loads(m.json()["data"]) for m in messages[:5]] == [{"step": i} for i in range(5)]
