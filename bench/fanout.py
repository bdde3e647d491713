"""Scenario 2, fan-out: 100 and 1,000 subscribers on one job, SSE and WebSocket.

One publisher POSTs 2,000 events in order, on one keep-alive connection, at a fixed
500 events/s and as fast as they are acknowledged; plus 100 subscribers × 100
events/s (the append→deliver p99 ≤ 5 ms target). Subscribers run in worker
processes; each checks it got every event once, in order, and records publish→
receive latency from the timestamp in the payload. The same cases run against Nchan,
interleaved case by case, and a ``fanout.compare`` line gives the ratios.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any

from .common import (
    RSSSampler,
    Server,
    StreamerServer,
    Suite,
    cpu_seconds,
    latency_ms,
    ratio,
)
from .loadgen import PublishStats, Results, SubscriberPool, publish_events, sub_specs


@dataclass
class Case:
    transport: str
    subs: int
    events: int
    rate: float
    slow: int = 0
    size: int = 100  # bytes of each event's data

    @property
    def label(self) -> str:
        rate = f"{self.rate:g}/s" if self.rate else "max"
        return f"{self.transport} {self.subs} subs {rate}"


@dataclass
class Outcome:
    case: Case
    server: str
    publish: PublishStats
    results: Results
    connect_s: float
    connect_failures: int
    server_cpu: float
    client_cpu: float
    rss_growth: int
    extra: dict[str, Any]

    def numbers(self) -> dict[str, Any]:
        res, pub, case = self.results, self.publish, self.case
        fast = [s for s in res.subs if not s["slow"]]
        last = max((s["last_ns"] for s in fast if s["last_ns"]), default=pub.end_ns)
        seconds = max(1e-9, (last - pub.start_ns) / 1e9)
        check = res.check(case.events)
        delivered = check["delivered"]
        out: dict[str, Any] = {
            "transport": case.transport,
            "subscribers": case.subs,
            "slow_subscribers": case.slow,
            "events": case.events,
            "event_bytes": case.size,
            "rate_asked": case.rate,
            "pub_per_s": round(pub.sent / pub.seconds),
            "pub_errors": pub.errors,
            "delivered_per_s": round(delivered / seconds),
            "per_subscriber_per_s": round(delivered / seconds / max(1, len(fast)), 1),
            "seconds": round(seconds, 3),
            "latency": latency_ms(list(res.latencies)),
            "connect_s": round(self.connect_s, 2),
            "connect_failures": self.connect_failures,
            "server_cpu_s": round(self.server_cpu, 2),
            "server_us_per_delivery": round(self.server_cpu / max(1, delivered) * 1e6, 2),
            "client_cpu_s": round(self.client_cpu, 2),
            "server_rss_growth_mb": round(self.rss_growth / 2**20, 1),
            **{k: v for k, v in check.items() if k not in ("verified", "subscribers")},
            **self.extra,
        }
        out["verified"] = check["verified"] and pub.errors == 0 and self.connect_failures == 0
        return out


async def fan_out(
    server: Server,
    channel: str,
    case: Case,
    *,
    limit_s: float = 120.0,
    during: Any = None,
    settle: float = 0.3,
    publish_to: Server | None = None,
) -> Outcome:
    """Open ``case.subs`` subscribers, publish, wait for every fast one, collect.

    ``during(pool, publish_task)`` (optional) runs while the publisher runs and after
    the fast subscribers are done, before the slow ones are let go; what it returns
    lands in ``Outcome.extra``. ``publish_to`` (optional) is another node of the same
    cluster the publisher POSTs to (cross-node delivery); server CPU then counts both.
    """
    target = server.target()
    pub_target = (publish_to or server).target()
    cpu_pids = server.pids() + (publish_to.pids() if publish_to else [])
    workers = 2 if case.subs >= 500 else 1
    specs = sub_specs(
        target,
        channel,
        case.transport,
        case.subs,
        case.events,
        workers=workers,
        slow=case.slow,
        timeout=limit_s,
    )
    pool = SubscriberPool(specs)
    try:
        await pool.spawned()
        pool.send("go")
        connect_s, failures, examples = await pool.ready()
        await asyncio.sleep(settle)
        cpu0 = cpu_seconds(cpu_pids)
        with RSSSampler(server.pids()) as rss:
            publish = asyncio.create_task(
                publish_events(pub_target, channel, case.events, rate=case.rate, size=case.size)
            )
            watcher = asyncio.create_task(during(server, publish)) if during else None
            await pool.fast_done()
            stats = await publish
            extra = await watcher if watcher else {}
            pool.send("finish")
            results = await pool.results()
        server_cpu = cpu_seconds(cpu_pids) - cpu0
    finally:
        pool.kill()
    if examples:
        extra["connect_errors"] = examples[:3]
    return Outcome(
        case,
        server.name,
        stats,
        results,
        connect_s,
        failures,
        server_cpu,
        results.cpu,
        rss.peak - rss.start_rss,
        extra,
    )


def new_channel(server: Server, label: str) -> str:
    if isinstance(server, StreamerServer):
        return server.create_job(label)
    return f"c{time.monotonic_ns()}"


def cases(quick: bool) -> list[Case]:
    """All cases; ``BENCH_FANOUT="1000:sse:500,100:ws:100"`` picks some (subs:transport:rate)."""
    picked = os.environ.get("BENCH_FANOUT", "")
    if picked:
        out = []
        for item in picked.split(","):
            subs, transport, rate = item.split(":")
            events = 200 if quick else (1000 if float(rate) == 100 else 2000)
            out.append(Case(transport, int(subs), events, float(rate)))
        return out
    if quick:
        return [Case(t, 20, 200, r) for t in ("sse", "ws") for r in (500, 0)]
    out = [Case(t, n, 2000, r) for n in (100, 1000) for t in ("sse", "ws") for r in (500, 0)]
    out += [Case(t, 100, 1000, 100) for t in ("sse", "ws")]
    return out


async def run(suite: Suite) -> None:
    servers = [suite.server(name) for name in suite.servers()]
    for server in servers:
        server.start()
    try:
        for case in cases(suite.quick):
            outcomes: dict[str, dict[str, Any]] = {}
            for server in servers:
                outcome = await fan_out(
                    server,
                    new_channel(server, case.label),
                    case,
                    limit_s=60 if suite.quick else 900,
                )
                numbers = outcome.numbers()
                outcomes[server.name] = numbers
                suite.recorder.write("fanout", server=server.name, **numbers)
            if "nchan" in outcomes:
                s, n = outcomes["streamer"], outcomes["nchan"]
                suite.recorder.write(
                    "fanout.compare",
                    transport=case.transport,
                    subscribers=case.subs,
                    rate_asked=case.rate,
                    delivered_ratio=ratio(s["delivered_per_s"], n["delivered_per_s"]),
                    p99_ratio=ratio(s["latency"]["p99_ms"], n["latency"]["p99_ms"]),
                    streamer_delivered_per_s=s["delivered_per_s"],
                    nchan_delivered_per_s=n["delivered_per_s"],
                    streamer_p99_ms=s["latency"]["p99_ms"],
                    nchan_p99_ms=n["latency"]["p99_ms"],
                    verified=s["verified"] and n["verified"],
                )
    finally:
        for server in servers:
            server.stop()
