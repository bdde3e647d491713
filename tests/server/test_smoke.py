"""End-to-end smoke: create, append, read over every transport."""

from __future__ import annotations

from ..support.clients import ws_collect
from ..support.live import LiveServer


async def test_append_then_read_over_every_transport(live_server: LiveServer) -> None:
    client = live_server.client()
    job = await live_server.create_job(name="build")
    r = await client.post(f"/api/v1/jobs/{job}/events", json={"data": "hello\n"})
    assert r.status_code == 201, r.text
    assert r.json() == {"first_index": 0, "last_index": 0}
    r = await client.post(
        f"/api/v1/jobs/{job}/events",
        json={"events": [{"data": "world\n"}, {"type": "complete", "success": True}]},
    )
    assert r.json() == {"first_index": 1, "last_index": 2}
    page = (await client.get(f"/api/v1/jobs/{job}/events")).json()
    assert [e["index"] for e in page["events"]] == [0, 1, 2]
    assert page["complete"] is True and page["next_index"] == 3
    sse = await live_server.sse(job).collect()
    assert [m.id for m in sse] == ["0", "1", "2"]
    assert sse[-1].event == "complete"
    async with live_server.ws(job) as ws:
        events = await ws_collect(ws)
    assert [e["index"] for e in events] == [0, 1, 2]
    log = await client.get(f"/api/v1/jobs/{job}/log")
    assert log.text == "hello\nworld\n"
    assert (await client.get(f"/api/v1/jobs/{job}")).json()["status"] == "completed"
