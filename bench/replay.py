"""Scenario 3, replay: one new reader from index 0 of a 1,000,000-event job, and a
reconnect storm of 1,000 readers each 1,000 events behind.

The job is filled through the API (one producer, batches of 5,000, in order, so an
event's index is its sequence number). A reader (SSE, then WebSocket) from index 0
reports time to first event and events/s until the last arrives, checking every
index; the server's RSS is sampled meanwhile. Side by side in the same run: Redis
``XRANGE`` pages of 1,000 over 1M entries read by redis-py (hiredis parser), and
Nchan on a 20,000-message channel (its replay cost grows with the square of the
buffer depth: a 1M-message replay would take hours). The storm opens 1,000 readers
at once from ``N - 1000`` and times until every one has all 1,000 events.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from typing import Any

from .common import (
    NchanServer,
    RSSSampler,
    Server,
    StreamerServer,
    Suite,
    payload,
    ratio,
)
from .fanout import new_channel
from .loadgen import SubscriberPool, publish_events, sub_specs

SEQ = re.compile(rb"~(\d{10})")


async def fill(server: Server, channel: str, n: int) -> dict[str, Any]:
    start = time.monotonic()
    if isinstance(server, StreamerServer):
        stats = await publish_events(server.target(), channel, n, batch=5000)
    else:  # Nchan message ids overflow above 32,767 messages/s per channel: stay below
        stats = await publish_events(server.target(), channel, n, rate=8000)
    seconds = time.monotonic() - start
    if stats.errors:
        raise RuntimeError(f"fill failed: {stats.last_error}")
    return {"fill_events_per_s": round(n / seconds)}


async def read_all(
    server: Server,
    channel: str,
    transport: str,
    readers: int,
    expect: int,
    start_seq: int,
    limit_s: float,
) -> dict[str, Any]:
    """``readers`` subscribers at once from ``start_seq``; each must get ``expect`` events."""
    specs = sub_specs(
        server.target(),
        channel,
        transport,
        readers,
        expect,
        workers=2 if readers >= 100 else 1,
        start_seq=start_seq,
        from_index=start_seq,
        record=False,
        timeout=limit_s,
        concurrency=readers,
    )
    pool = SubscriberPool(specs)
    try:
        await pool.spawned()
        cpu0 = server.cpu()
        with RSSSampler(server.pids(), 0.02) as rss:
            pool.send("go")
            await pool.ready()
            await pool.fast_done()
            pool.send("finish")
            results = await pool.results()
        server_cpu = server.cpu() - cpu0
    finally:
        pool.kill()
    subs = results.subs
    begin = min(s["connect_ns"] for s in subs)
    last = max(s["last_ns"] for s in subs)
    firsts = sorted(s["first_ns"] - s["connect_ns"] for s in subs if s["first_ns"])
    seconds = max(1e-9, (last - begin) / 1e9)
    check = results.check(expect)
    return {
        "transport": transport,
        "readers": readers,
        "events_each": expect,
        "seconds": round(seconds, 3),
        "events_per_s": round(check["delivered"] / seconds),
        "first_event_ms": round(firsts[0] / 1e6, 2) if firsts else None,
        "first_event_max_ms": round(firsts[-1] / 1e6, 2) if firsts else None,
        "server_cpu_s": round(server_cpu, 2),
        "client_cpu_s": round(results.cpu, 2),
        "server_rss_before_mb": round(rss.start_rss / 2**20, 1),
        "server_rss_growth_mb": round((rss.peak - rss.start_rss) / 2**20, 1),
        **check,
    }


def redis_xrange(suite: Suite, n: int) -> dict[str, Any] | None:
    """XADD n entries (pipelined), then time XRANGE pages of 1000 from the start."""
    try:
        import redis
    except ImportError:
        return None
    client = redis.Redis.from_url(suite.redis_url)
    try:
        client.ping()
    except redis.RedisError:
        return None
    key = f"streamer-bench:{os.getpid()}:{time.monotonic_ns()}"
    try:
        pipe = client.pipeline(transaction=False)
        for i in range(n):
            pipe.xadd(key, {"d": payload(i)}, id=f"{i + 1}-0")
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()
        start = time.perf_counter()
        first_ms = None
        seqs_ok, expected, cursor = True, 0, "-"
        while True:
            page = client.xrange(key, min=cursor, max="+", count=1000)
            if first_ms is None:
                first_ms = (time.perf_counter() - start) * 1000
            if not page:
                break
            for _, fields in page:
                if int(fields[b"d"][1:11]) != expected:
                    seqs_ok = False
                expected += 1
            last_id = page[-1][0].decode()
            ms, sq = last_id.split("-")
            cursor = f"{ms}-{int(sq) + 1}"
            if len(page) < 1000:
                break
        seconds = time.perf_counter() - start
        return {
            "server": "redis",
            "mode": "XRANGE pages of 1000 (redis-py + hiredis)",
            "events": expected,
            "seconds": round(seconds, 3),
            "events_per_s": round(expected / seconds),
            "first_event_ms": round(first_ms or 0, 2),
            "verified": seqs_ok and expected == n,
        }
    finally:
        client.delete(key)
        client.close()


async def run(suite: Suite) -> None:
    n = 20_000 if suite.quick else 1_000_000
    n_nchan = 2_000 if suite.quick else 20_000
    storm_readers, behind = (50, 100) if suite.quick else (1000, 1000)
    timeout = 60.0 if suite.quick else 300.0

    # Redis first: its client runs in this process, before any server competes for CPU.
    # Once per scenario: a later backend's pass compares with this pass's line.
    if suite.peers:
        xrange = await asyncio.to_thread(redis_xrange, suite, n)
        suite.shared["redis_xrange"] = xrange
        if xrange is not None:
            suite.recorder.write("replay.single", **xrange)
    else:
        xrange = suite.shared.get("redis_xrange")

    streamer_single: dict[str, dict[str, Any]] = {}
    for name in suite.servers():
        with suite.server(name) as server:
            size = n if isinstance(server, StreamerServer) else n_nchan
            channel = new_channel(server, "replay")
            filled = await fill(server, channel, size)
            for transport in ("sse", "ws"):
                numbers = await read_all(server, channel, transport, 1, size, 0, timeout)
                extra: dict[str, Any] = {}
                if name == "streamer":
                    streamer_single[transport] = numbers
                    extra["target"] = ">= 500k events/s, >= 1.2x redis XRANGE, RSS growth < 50 MB"
                    if xrange is not None:
                        extra["vs_redis_xrange"] = ratio(
                            numbers["events_per_s"], xrange["events_per_s"]
                        )
                elif transport in streamer_single:
                    extra["streamer_vs_nchan"] = ratio(
                        streamer_single[transport]["events_per_s"], numbers["events_per_s"]
                    )
                    extra["note"] = f"nchan replays {size} messages, streamer {n}"
                suite.recorder.write(
                    "replay.single", server=name, job_events=size, **filled, **numbers, **extra
                )

            # The storm: readers each ``behind`` events behind the head, all at once.
            if isinstance(server, NchanServer):
                channel = new_channel(server, "storm")
                await fill(server, channel, behind)
                head = behind
            else:
                head = size
            for transport in ("sse", "ws"):
                numbers = await read_all(
                    server, channel, transport, storm_readers, behind, head - behind, timeout
                )
                suite.recorder.write(
                    "replay.storm",
                    server=name,
                    target="all caught up within 3 s" if name == "streamer" else None,
                    **numbers,
                )
