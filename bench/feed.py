"""The change feed with many dashboards connected: 1,000 feeds (50 with ``--quick``) of
one user, and 100 job changes per second.

Every dashboard holds ``GET /api/v1/jobs/changes`` (SSE, from now). One driver, on
one keep-alive connection, PATCHes 10 jobs in turn at 100 changes/s (2,000 changes;
100 with ``--quick``), each PATCH setting the job's ``runner`` to the bench payload
(``~<seq> <send time>``), so each change's JSON carries its own sequence number and
send time. Reported: delivered changes/s, change→receive p50/p95/p99, server CPU
per delivery, server RSS growth. Verified: every dashboard got every change once,
in order, and the feed's head moved by exactly the number of changes made.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .common import RSSSampler, StreamerServer, Suite, cpu_seconds, latency_ms, payload
from .loadgen import HTTPConnection, PublishStats, SubscriberPool, SubSpec, request_head, split

JOBS = 10


async def drive(server: StreamerServer, jobs: list[str], count: int, rate: float) -> PublishStats:
    """``count`` PATCHes, in order, on a fixed timetable of ``rate`` per second."""
    target, stats = server.target(), PublishStats()
    conn = await HTTPConnection.open(target.port)
    begin = stats.start_ns = time.monotonic_ns()
    try:
        for seq in range(count):
            delay = (begin + int(seq * 1e9 / rate) - time.monotonic_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            body = b'{"runner":"%s"}' % payload(seq, 100).encode()
            extra = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            path = f"/api/v1/jobs/{jobs[seq % len(jobs)]}"
            status, reply = await conn.request(
                request_head("PATCH", path, target.headers, extra) + body
            )
            if status >= 300:
                stats.errors += 1
                stats.last_error = f"{status} {reply[:200]!r}"
            else:
                stats.sent += 1
    finally:
        stats.end_ns = time.monotonic_ns()
        conn.close()
    return stats


async def run(suite: Suite) -> None:
    server = suite.server("streamer")
    assert isinstance(server, StreamerServer)
    server.start()
    dashboards, changes, rate = (50, 100, 100.0) if suite.quick else (1000, 2000, 100.0)
    limit = 60 if suite.quick else 600
    try:
        jobs = [server.create_job(f"feed {i}") for i in range(JOBS)]
        assert server.client is not None
        target = server.target()
        workers = 2 if dashboards >= 500 else 1
        specs = [
            SubSpec(
                target.port,
                "/api/v1/jobs/changes",
                target.headers,
                "sse",
                n,
                changes,
                timeout=limit,
            )  # fmt: skip
            for n in split(dashboards, workers)
        ]
        pool = SubscriberPool(specs)
        pids = server.pids()
        try:
            await pool.spawned()
            pool.send("go")
            connect_s, failures, examples = await pool.ready()
            await asyncio.sleep(0.5)  # every feed has gone live
            head0 = _head(server)
            cpu0 = cpu_seconds(pids)
            with RSSSampler(pids) as rss:
                stats = await drive(server, jobs, changes, rate)
                await pool.fast_done()
            server_cpu = cpu_seconds(pids) - cpu0
            pool.send("finish")
            results = await pool.results()
        finally:
            pool.kill()
        check = results.check(changes)
        delivered = check["delivered"]
        last = max((s["last_ns"] for s in results.subs if s["last_ns"]), default=stats.end_ns)
        seconds = max(1e-9, (last - stats.start_ns) / 1e9)
        moved = _head(server) - head0
        numbers: dict[str, Any] = {
            "transport": "sse",
            "dashboards": dashboards,
            "changes": changes,
            "rate_asked": rate,
            "changes_per_s": round(stats.sent / stats.seconds, 1),
            "delivered": delivered,
            "delivered_per_s": round(delivered / seconds),
            "latency": latency_ms(list(results.latencies)),
            "server_cpu_s": round(server_cpu, 2),
            "server_us_per_delivery": round(server_cpu / max(1, delivered) * 1e6, 2),
            "server_rss_growth_mb": round((rss.peak - rss.start_rss) / 2**20, 1),
            "client_cpu_s": round(results.cpu, 2),
            "connect_s": round(connect_s, 2),
            "connect_failures": failures,
            "connect_errors": examples[:3],
            "pub_errors": stats.errors,
            "head_moved": moved,
            "dups": check["dups"],
            "gaps": check["gaps"],
        }
        numbers["verified"] = (
            check["verified"] and stats.errors == 0 and failures == 0 and moved == changes
        )
        suite.recorder.write("feed", server="streamer", **numbers)
    finally:
        server.stop()


def _head(server: StreamerServer) -> int:
    """The feed's head, from a feed that starts now (its first comment names it)."""
    assert server.client is not None
    with server.client.stream("GET", "/api/v1/jobs/changes") as response:
        for line in response.iter_lines():
            if "next_seq=" in line:
                return int(line.rpartition("=")[2]) - 1
    raise RuntimeError("the feed sent no head")
