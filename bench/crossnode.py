"""Cross-node delivery on PostgreSQL: subscribers on node A, the publisher on node B.

Two ``streamer serve`` processes on one fresh PostgreSQL database (one API key, made
by ``streamer users create`` against it). 100 subscribers (SSE, then WebSocket) on
node A follow one job; one publisher POSTs to node B in order, at a fixed 100 and
500 events/s and as fast as acknowledged. Node B commits and NOTIFYs; node A's
LISTEN connection wakes its watch task, which reads the new rows back and feeds A's
hub. Each case runs twice back to back on the same two nodes, on a new job each
time: ``path="cross"`` (publisher on B) and ``path="same"`` (publisher on A, the
single-node path on the same database), so the cost of the hop is a ratio measured
seconds apart. Reported: publish→receive latency p50/p95/p99 (the send time is in
each event's data), delivered events/s, the publisher's reached rate, CPU of both
nodes per delivery; a ``crossnode.compare`` line gives cross ÷ same.

Verified: every subscriber got every event exactly once, in order (no gap, no
duplicate), and the job's ``event_count`` is what was published.
"""

from __future__ import annotations

from typing import Any

from .common import PostgresDatabase, StreamerServer, Suite, ratio
from .fanout import Case, fan_out


def cases(quick: bool) -> list[Case]:
    if quick:
        return [Case(t, 20, 200, 500) for t in ("sse", "ws")]
    out = [Case(t, 100, 1000, 100) for t in ("sse", "ws")]
    out += [Case(t, 100, 2000, r) for t in ("sse", "ws") for r in (500, 0)]
    return out


async def run(suite: Suite) -> None:
    if suite.pg_admin is None:
        raise RuntimeError("crossnode needs PostgreSQL (see --db)")
    database = PostgresDatabase(suite.pg_admin)
    database.create()
    nodes: list[StreamerServer] = []
    try:
        key = database.user_key()
        nodes = [StreamerServer(suite.workdir, pg_db=database, key=key) for _ in range(2)]
        for node in nodes:
            node.start()
        a, b = nodes
        for case in cases(suite.quick):
            got: dict[str, dict[str, Any]] = {}
            for path, publisher in (("cross", b), ("same", a)):
                job = a.create_job(f"crossnode {path} {case.label}")
                outcome = await fan_out(
                    a,
                    job,
                    case,
                    limit_s=60 if suite.quick else 600,
                    publish_to=publisher if publisher is not a else None,
                )
                numbers = outcome.numbers()
                stored = b.event_count(job)
                numbers["job_event_count"] = stored
                numbers["verified"] = numbers["verified"] and stored == case.events
                got[path] = numbers
                suite.recorder.write(
                    "crossnode",
                    server="streamer",
                    path=path,
                    subscriber_node="A",
                    pg_database=database.name,
                    publisher_node="B" if path == "cross" else "A",
                    **numbers,
                )
            cross, same = got["cross"], got["same"]
            suite.recorder.write(
                "crossnode.compare",
                transport=case.transport,
                subscribers=case.subs,
                rate_asked=case.rate,
                p50_ratio=ratio(cross["latency"]["p50_ms"], same["latency"]["p50_ms"]),
                p99_ratio=ratio(cross["latency"]["p99_ms"], same["latency"]["p99_ms"]),
                delivered_ratio=ratio(cross["delivered_per_s"], same["delivered_per_s"]),
                cross_p99_ms=cross["latency"]["p99_ms"],
                same_p99_ms=same["latency"]["p99_ms"],
                verified=cross["verified"] and same["verified"],
            )
    finally:
        for node in nodes:
            node.stop()
        database.drop()
