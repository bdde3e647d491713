"""Scenario 4, idle connections: 10,000 idle SSE, then WebSocket, subscribers on one
server process (a fresh one per run, so memory freed by an earlier run is not reused).

RSS per connection = (server RSS after the connections are open and held − RSS
before) ÷ N, read from ``/proc`` (nginx: master + worker); kernel socket buffers are
not in it. Idle CPU = server CPU seconds over the hold ÷ hold seconds. Then one probe
event is published and every subscriber must get it exactly once (its fan-out
latency is reported too).
"""

from __future__ import annotations

import asyncio
from typing import Any

from .common import StreamerServer, Suite, latency_ms, ratio
from .fanout import new_channel
from .loadgen import SubscriberPool, publish_events, sub_specs


async def warm_up(server: Any, transport: str) -> None:
    """Open and close a few streams so lazily imported code and caches are in place."""
    channel = new_channel(server, "warm-up")
    await publish_events(server.target(), channel, 1)
    specs = sub_specs(server.target(), channel, transport, 10, 1, record=False, timeout=30)
    pool = SubscriberPool(specs)
    try:
        await pool.spawned()
        pool.send("go")
        await pool.ready()
        await pool.fast_done()
        pool.send("finish")
        await pool.results()
    finally:
        pool.kill()


async def hold(suite: Suite, name: str, transport: str, n: int, seconds: float) -> dict[str, Any]:
    with suite.server(name) as server:
        await warm_up(server, transport)
        channel = new_channel(server, "idle")
        target = server.target()
        specs = sub_specs(target, channel, transport, n, 1, workers=2, timeout=120, concurrency=250)
        pool = SubscriberPool(specs)
        try:
            await pool.spawned()
            await asyncio.sleep(0.2 if suite.quick else 1.0)
            rss0 = server.rss()
            pool.send("go")
            connect_s, failures, examples = await pool.ready()
            await asyncio.sleep(0.2 if suite.quick else 2.0)  # let the accept burst settle
            cpu0, rss1 = server.cpu(), server.rss()
            await asyncio.sleep(seconds)
            idle_cpu = server.cpu() - cpu0
            rss2 = server.rss()
            probe = await publish_events(target, channel, 1)
            await pool.fast_done()
            pool.send("finish")
            results = await pool.results()
        finally:
            pool.kill()
        check = results.check(1)
        per_conn = (rss2 - rss0) / n
        out: dict[str, Any] = {
            "server": name,
            "transport": transport,
            "connections": n,
            "connect_s": round(connect_s, 2),
            "connects_per_s": round(n / connect_s) if connect_s else None,
            "connect_failures": failures,
            "rss_before_mb": round(rss0 / 2**20, 1),
            "rss_after_mb": round(rss2 / 2**20, 1),
            "rss_per_conn_kib": round(per_conn / 1024, 2),
            "rss_growth_during_hold_mb": round((rss2 - rss1) / 2**20, 2),
            "hold_s": seconds,
            "idle_cpu_pct": round(100 * idle_cpu / seconds, 2),
            "probe_latency": latency_ms(list(results.latencies)),
            "client_cpu_s": round(results.cpu, 2),
            **check,
        }
        out["verified"] = check["verified"] and failures == 0 and probe.errors == 0
        if examples:
            out["connect_errors"] = examples[:3]
        if isinstance(server, StreamerServer):
            out["target"] = "<= 16 KiB/conn SSE, <= 20 KiB/conn WS"
        return out


async def run(suite: Suite) -> None:
    n = 300 if suite.quick else 10_000
    seconds = 0.5 if suite.quick else 10.0
    for transport in ("sse", "ws"):
        got: dict[str, dict[str, Any]] = {}
        for name in suite.servers():
            got[name] = await hold(suite, name, transport, n, seconds)
            if name == "nchan" and "streamer" in got:
                got[name]["streamer_vs_nchan_rss"] = ratio(
                    got["streamer"]["rss_per_conn_kib"], got[name]["rss_per_conn_kib"]
                )
            suite.recorder.write("idle", **got[name])
