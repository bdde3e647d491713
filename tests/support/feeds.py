"""Readers of the change feed and of multi-job streams, over real SSE and WebSocket.

``FeedView`` applies a feed (snapshot, then changes) to a job list the way a
dashboard does; ``sse_messages`` reads any SSE route with ``parse_sse`` (the WHATWG
parser in ``clients.py``), comments skipped; ``MultiReader`` follows several jobs on
one SSE stream and resumes with the composite cursor, checking that each job's
events arrive exactly once, in index order.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import websockets

from .clients import SSEMessage, parse_sse


async def sse_messages(
    base: str, path: str, key: str, params: dict[str, Any], headers: dict[str, str] | None = None
) -> AsyncIterator[SSEMessage]:
    """The messages of one SSE response (nothing for a non-200 answer; ``status`` of
    the answer is not needed by the readers here, see ``sse_status``)."""
    async with (
        httpx.AsyncClient(base_url=base, timeout=30, verify=False) as client,
        client.stream(
            "GET",
            path,
            params=params,
            headers={"Authorization": f"Bearer {key}", **(headers or {})},
        ) as response,
    ):
        if response.status_code != 200:
            await response.aread()
            raise StreamRefused(response.status_code, response.json() if response.content else None)
        async for item in parse_sse(response.aiter_bytes()):
            if isinstance(item, SSEMessage):
                yield item


class StreamRefused(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


def ws_connect(base_ws: str, path: str, key: str, params: dict[str, Any] | None = None) -> Any:
    query = f"?{urlencode(params)}" if params else ""
    return websockets.connect(
        f"{base_ws}{path}{query}",
        additional_headers={"Authorization": f"Bearer {key}"},
        max_size=None,
        compression=None,
        open_timeout=10,
    )


@dataclass
class FeedView:
    """A job list kept by a feed: the snapshot, then each change applied in order."""

    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    last: int = 0  # the last sequence number applied
    seqs: list[int] = field(default_factory=list)  # every sequence number, per connection

    def apply(self, message: SSEMessage | dict[str, Any]) -> None:
        body = message.json() if isinstance(message, SSEMessage) else message
        if body["type"] == "snapshot":
            self.jobs = {job["id"]: job for job in body["jobs"]}
            assert body["truncated"] is False
        elif body["type"] == "deleted":
            self.jobs.pop(body["job"]["id"], None)
        else:
            self.jobs[body["job"]["id"]] = body["job"]
        if isinstance(message, SSEMessage) and message.id is not None:
            assert message.id == str(body["seq"])
        self.seqs.append(body["seq"])
        self.last = body["seq"]


@dataclass
class MultiReader:
    """Follows several jobs on one SSE stream; ``got[job]`` holds each job's indexes in
    the order they arrived, across every reconnect; ``cursor`` the last ``id``."""

    base: str
    key: str
    jobs: list[str]
    got: dict[str, list[int]] = field(default_factory=dict)
    ended: dict[str, str] = field(default_factory=dict)
    cursor: str | None = None
    connections: int = 0

    def positions(self) -> str:
        return ",".join(self.jobs)

    async def read(self, start: str | None = None, limit: int | None = None) -> int:
        """One connection: from ``start`` (a ``jobs`` value with positions) or the
        cursor, until the server ends it or ``limit`` messages; how many arrived."""
        params = {"jobs": start or self.positions()}
        headers = {"Last-Event-ID": self.cursor} if self.cursor else None
        self.connections += 1
        count = 0
        async for message in sse_messages(
            self.base, "/api/v1/streams/events", self.key, params, headers
        ):
            body = message.json()
            if message.event == "_end":
                self.ended[body["job_id"]] = body["reason"]
            elif message.event == "_error":
                raise AssertionError(f"unexpected refusal: {body}")
            else:
                assert body["type"] == message.event
                self.got.setdefault(body["job_id"], []).append(body["index"])
            self.cursor = message.id
            count += 1
            if limit is not None and count >= limit:
                break
        return count


async def read_until_done(
    reader: MultiReader,
    start: str,
    rng: random.Random,
    drop: tuple[int, int] = (5, 80),
    urls: list[str] | None = None,
) -> None:
    """Connections that drop after a random number of messages (within ``drop``), each
    resumed with the composite cursor (on a random one of ``urls``, the nodes, when
    given), until the server ends the stream: every job has ended."""
    first = True
    while True:
        if urls:
            reader.base = rng.choice(urls)
        limit = rng.randint(*drop)
        try:
            count = await reader.read(start if first else None, limit)
        except StreamRefused as refused:
            assert refused.status == 204, refused.body  # every job already past its end
            return
        first = False
        if count < limit:
            return  # the server ended it: every job has ended


def parse_cursor(cursor: str) -> dict[str, int]:
    """``ID:N,ID:N`` -> {ID: N}."""
    found = {}
    for part in cursor.split(","):
        job_id, _, index = part.partition(":")
        found[job_id] = int(index)
    return found


def frame_lines(frame: str | bytes) -> list[dict[str, Any]]:
    assert isinstance(frame, str), "messages come in text frames"
    return [json.loads(line) for line in frame.split("\n")]


# --- the change feed under random writes ------------------------------------------------

FEED = "/api/v1/jobs/changes"
LAST = "the-last-job"  # the name of the job created after every other write


async def random_writes(client: httpx.AsyncClient, seed: int, ops: int) -> None:
    """Random creates, status changes, appends and deletes through one client."""
    rng, mine = random.Random(seed), []
    for _ in range(ops):
        roll = rng.random()
        if roll < 0.25 or not mine:
            r = await client.post("/api/v1/jobs", json={"name": f"p{seed}"})
            mine.append(r.json()["id"])
            continue
        job = rng.choice(mine)
        if roll < 0.6:
            events = [{"data": f"{i}\n"} for i in range(rng.randint(1, 3))]
            r = await client.post(f"/api/v1/jobs/{job}/events", json={"events": events})
        elif roll < 0.85:
            status = rng.choice(["running", "completed", "failed", "cancelled"])
            r = await client.patch(f"/api/v1/jobs/{job}", json={"status": status})
        else:
            r = await client.delete(f"/api/v1/jobs/{job}")
            mine.remove(job)
        assert r.status_code in (201, 200, 204, 409), r.text


async def all_jobs(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    """The caller's jobs, every page, by id."""
    jobs: dict[str, dict[str, Any]] = {}
    cursor = None
    while True:
        params = {"limit": "200", **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/v1/jobs", params=params)).json()
        jobs.update({job["id"]: job for job in page["jobs"]})
        cursor = page["next_cursor"]
        if not cursor:
            return jobs


class FeedReader:
    """Keeps a job list from the feed; drops each connection after a random number of
    changes and resumes at a random sequence number it has seen (its last, or one of
    the 30 before), on a random one of ``urls`` (the nodes); done once it has seen the
    job named ``LAST``."""

    def __init__(self, urls: list[str], key: str, seed: int) -> None:
        self.urls, self.key, self.rng = urls, key, random.Random(seed)
        self.view = FeedView()
        self.connections: list[tuple[int, list[int]]] = []  # (resumed after, seqs carried)
        self.nodes: list[str] = []  # the node of each connection

    def done(self) -> bool:
        return any(job["name"] == LAST for job in self.view.jobs.values())

    async def run(self) -> None:
        point: int | None = None
        while not self.done():
            params = {"snapshot": "true"} if point is None else {}
            headers = {"Last-Event-ID": str(point)} if point is not None else None
            carried: list[int] = []
            limit = self.rng.randint(1, 20)
            url = self.rng.choice(self.urls)
            self.nodes.append(url)
            async for message in sse_messages(url, FEED, self.key, params, headers):
                self.view.apply(message)
                carried.append(int(message.id or 0))
                if len(carried) >= limit or self.done():
                    break
            self.connections.append((point if point is not None else carried[0] - 1, carried))
            last = self.view.last  # usually where it stopped, sometimes a little before
            point = last if self.rng.random() < 0.6 else self.rng.randint(max(0, last - 30), last)

    def check(self, truth: dict[str, dict[str, Any]], kept: list[int]) -> None:
        """The list equals ``truth``; each connection carried its changes once, in
        order, and none of the ``kept`` ones in its range is missing."""
        assert self.view.jobs == truth
        for (after, carried), node in zip(self.connections, self.nodes, strict=True):
            assert carried == sorted(set(carried)) and all(s > after for s in carried)
            missing = [s for s in kept if after < s <= carried[-1] and s not in carried]
            assert not missing, f"resumed after {after} on {node}: skipped {missing} ({carried})"
