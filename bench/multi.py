"""Many jobs on one connection versus one connection per job, under the same append load.

N jobs (100; 10 with ``--quick``), each written by its own publisher at the same rate,
in order. Followed two ways, on fresh jobs each time, on the same server:

- ``mode: one``: ONE subscriber on the multi-job stream (``/streams/events?jobs=...``,
  SSE, then its WebSocket with ``?jobs=``), every job from index 0;
- ``mode: each``: N subscribers, one per job, on the single-job stream.

Reported: server CPU per delivered event, server RSS growth per follower (after every
subscriber has connected, before the first event), publish→receive p50/p95/p99, the
delivered rate. Verified: every job's events arrived once each, in order (the
multi-job subscriber checks each job's own sequence), and each job's ``event_count``
is what was published. A ``multi.compare`` line gives one ÷ each.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from .common import StreamerServer, Suite, cpu_seconds, latency_ms, ratio, rss_bytes
from .loadgen import PublishStats, SubscriberPool, SubSpec, publish_events


@dataclass
class Case:
    transport: str  # "sse" | "ws"
    jobs: int
    events: int  # per job
    rate: float  # per job, events/s

    @property
    def label(self) -> str:
        return f"{self.transport} {self.jobs} jobs {self.rate:g}/s each"


def cases(quick: bool) -> list[Case]:
    if quick:
        return [Case(t, 10, 20, 20) for t in ("sse", "ws")]
    return [Case(t, 100, 100, 10) for t in ("sse", "ws")]


def specs(server: StreamerServer, jobs: list[str], case: Case, mode: str, limit: float) -> SubSpec:
    target = server.target()
    common: dict[str, Any] = {"timeout": limit}
    if mode == "one":
        kind = "ws" if case.transport == "ws" else ""
        path = "/api/v1/streams/events" + ("/ws" if kind else "")
        path += "?jobs=" + ",".join(f"{job}:0" for job in jobs)
        return SubSpec(
            target.port, path, target.headers, f"mux-{case.transport}", 1,
            case.jobs * case.events, **common,
        )  # fmt: skip
    paths = [target.sub_path(job, case.transport) for job in jobs]
    return SubSpec(
        target.port, paths[0], target.headers, case.transport, len(jobs), case.events,
        paths=paths, **common,
    )  # fmt: skip


async def measure(server: StreamerServer, case: Case, mode: str, limit: float) -> dict[str, Any]:
    jobs = [server.create_job(f"multi {mode} {case.label} {i}") for i in range(case.jobs)]
    pool = SubscriberPool([specs(server, jobs, case, mode, limit)])
    pids = server.pids()
    try:
        await pool.spawned()
        before = rss_bytes(pids)
        pool.send("go")
        connect_s, failures, examples = await pool.ready()
        await asyncio.sleep(0.5)  # every follow has replayed (nothing) and gone live
        connected = rss_bytes(pids)
        cpu0 = cpu_seconds(pids)
        target = server.target()
        stats = [PublishStats() for _ in jobs]
        await asyncio.gather(
            *(
                publish_events(target, job, case.events, rate=case.rate, stats=st)
                for job, st in zip(jobs, stats, strict=True)
            )
        )
        await pool.fast_done()
        server_cpu = cpu_seconds(pids) - cpu0
        pool.send("finish")
        results = await pool.results()
    finally:
        pool.kill()
    expect = case.events * (case.jobs if mode == "one" else 1)
    check = results.check(expect)
    delivered = check["delivered"]
    start = min(s.start_ns for s in stats)
    last = max((s["last_ns"] for s in results.subs if s["last_ns"]), default=start)
    seconds = max(1e-9, (last - start) / 1e9)
    stored_ok = all(server.event_count(job) == case.events for job in jobs)
    errors = sum(s.errors for s in stats)
    return {
        "transport": case.transport,
        "mode": mode,
        "jobs": case.jobs,
        "connections": 1 if mode == "one" else case.jobs,
        "events_per_job": case.events,
        "rate_asked": case.rate * case.jobs,
        "delivered": delivered,
        "delivered_per_s": round(delivered / seconds),
        "latency": latency_ms(list(results.latencies)),
        "server_cpu_s": round(server_cpu, 3),
        "server_us_per_delivery": round(server_cpu / max(1, delivered) * 1e6, 2),
        "server_rss_per_follower_kb": round((connected - before) / case.jobs / 1024, 1),
        "client_cpu_s": round(results.cpu, 2),
        "connect_s": round(connect_s, 2),
        "connect_failures": failures,
        "connect_errors": examples[:3],
        "pub_errors": errors,
        "dups": check["dups"],
        "gaps": check["gaps"],
        "verified": check["verified"] and stored_ok and errors == 0 and failures == 0,
    }


async def run(suite: Suite) -> None:
    server = suite.server("streamer")
    assert isinstance(server, StreamerServer)
    server.start()
    limit = 60 if suite.quick else 600
    try:
        for case in cases(suite.quick):
            got = {}
            for mode in ("one", "each"):
                numbers = await measure(server, case, mode, limit)
                got[mode] = numbers
                suite.recorder.write("multi", server="streamer", **numbers)
            one, each = got["one"], got["each"]
            suite.recorder.write(
                "multi.compare",
                transport=case.transport,
                jobs=case.jobs,
                cpu_per_delivery_ratio=ratio(
                    one["server_us_per_delivery"], each["server_us_per_delivery"]
                ),
                rss_per_follower_ratio=ratio(
                    one["server_rss_per_follower_kb"], each["server_rss_per_follower_kb"]
                ),
                p99_ratio=ratio(one["latency"]["p99_ms"], each["latency"]["p99_ms"]),
                verified=one["verified"] and each["verified"],
            )
    finally:
        server.stop()
