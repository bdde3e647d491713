"""Scenario 5, slow consumers: the fan-out of scenario 2 with 10% of the subscribers
that stop reading right after the response head (their receive buffer is shrunk to
4 KiB, so the server's writes to them block soon).

Each case runs twice back to back: a baseline with every subscriber reading, then
the same with 10% stalled. Reported: the fast subscribers' delivered events/s and
p99 against the baseline, the server's peak RSS growth, and (streamer, read off
``/metrics`` every 50 ms) when the stalled readers were switched to catch-up from
storage (``streamer_reader_lags``) and when their streams were closed
(``streamer_live_readers`` back to 0). Enough events are published to overflow
streamer's per-reader live buffer (4,096 by default). Afterwards the stalled
readers read again: what they got must be an in-order prefix with no gap.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .common import Server, StreamerServer, Suite, ratio
from .fanout import Case, fan_out, new_channel

LAGS = "streamer_reader_lags_total"
# Loopback sockets buffer up to 4 MiB (tcp_wmem) for a stalled reader: 2 KB events make
# 8,000 of them (16 MB) outgrow that, then streamer's 4,096-event live buffer.
EVENT_BYTES = 2000


def live_readers(metrics: dict[str, float], transport: str) -> float:
    return metrics.get(f'streamer_live_readers{{transport="{transport}"}}', 0.0)


def watch_metrics(case: Case, limit: float) -> Any:
    """A ``during`` hook for ``fan_out``: times lag and close of the stalled readers."""

    async def during(server: Server, publish: asyncio.Task[Any]) -> dict[str, Any]:
        if not isinstance(server, StreamerServer):
            await publish
            return {}
        start = time.monotonic()
        lags0 = (await asyncio.to_thread(server.metrics)).get(LAGS, 0.0)
        lagged_at = closed_at = None
        fast = case.subs - case.slow
        max_lags = 0.0
        while time.monotonic() - start < limit:
            metrics = await asyncio.to_thread(server.metrics)
            now = time.monotonic() - start
            lags = metrics.get(LAGS, 0.0) - lags0
            max_lags = max(max_lags, lags)
            if lagged_at is None and lags >= case.slow:
                lagged_at = now
            # Fast readers stay open until they have every event, so the count falling
            # to theirs while events are still being published means the stalled
            # ones were closed.
            live = live_readers(metrics, case.transport)
            if closed_at is None and not publish.done() and live <= fast:
                closed_at = now
            if closed_at is not None and (lagged_at is not None or publish.done()):
                break
            await asyncio.sleep(0.05)
        return {
            "slow_lagged_after_s": round(lagged_at, 2) if lagged_at is not None else None,
            "slow_closed_after_s": round(closed_at, 2) if closed_at is not None else None,
            "reader_lags": max_lags,
        }

    return during


async def run(suite: Suite) -> None:
    if suite.quick:
        plan = [(t, 20, 300) for t in ("sse", "ws")]
    else:
        plan = [(t, 100, 8000) for t in ("sse", "ws")]
    for transport, subs, events in plan:
        for name in suite.servers():
            with suite.server(name) as server:
                got: dict[str, dict[str, Any]] = {}
                for slow in (0, subs // 10):
                    case = Case(transport, subs, events, 0, slow, size=EVENT_BYTES)
                    during = watch_metrics(case, 3.0 if suite.quick else 300.0) if slow else None
                    outcome = await fan_out(
                        server,
                        new_channel(server, f"slow {case.label}"),
                        case,
                        limit_s=600,
                        during=during,
                    )
                    numbers = outcome.numbers()
                    verdict = outcome.results.check(events, slow=True)
                    if slow:
                        base = got["baseline"]
                        # Per fast subscriber: the slow run has 10% fewer of them.
                        numbers["fast_vs_baseline"] = ratio(
                            numbers["per_subscriber_per_s"], base["per_subscriber_per_s"]
                        )
                        numbers["p99_vs_baseline"] = ratio(
                            numbers["latency"]["p99_ms"], base["latency"]["p99_ms"]
                        )
                        stalled = [s for s in outcome.results.subs if s["slow"]]
                        numbers["slow_got_min"] = min(s["received"] for s in stalled)
                        numbers["slow_got_max"] = max(s["received"] for s in stalled)
                        numbers["slow_ended_by_server"] = sum(1 for s in stalled if s["eof"])
                        numbers["slow_close_codes"] = sorted({s["close_code"] for s in stalled})
                        numbers["slow_prefix_ok"] = verdict["dups"] == 0 and verdict["gaps"] == 0
                        numbers["verified"] = numbers["verified"] and numbers["slow_prefix_ok"]
                        if name == "streamer":
                            numbers["target"] = "fast subscribers >= 95% of baseline"
                    got["slow" if slow else "baseline"] = numbers
                    suite.recorder.write(
                        "slow", server=name, phase="slow" if slow else "baseline", **numbers
                    )
