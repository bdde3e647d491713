"""Headline tables from results JSON lines: ``python -m bench.summary [FILE] [--run ID ...]
[--db sqlite|postgres]``.

Without ``--run`` it takes, for every (scenario, server, case), the latest full-size
(not ``--quick``) line of the file, so a table can combine scenarios run separately.
One table per backend of streamer (SQLite, then PostgreSQL with the cross-node rows
when the file has any); peers' lines (Nchan, Redis, the raw ceilings) have no
backend and appear in both. Lines written before the ``db`` field existed are SQLite.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .common import RESULTS


def key(r: dict[str, Any]) -> tuple[Any, ...]:
    return (
        r["scenario"],
        r.get("server"),
        r.get("mode"),
        r.get("batch"),
        r.get("transport"),
        r.get("subscribers"),
        r.get("rate_asked"),
        r.get("readers"),
        r.get("phase"),
        r.get("path"),
    )


def backend_of(r: dict[str, Any]) -> str | None:
    """streamer's backend for this line; None for a peer's own line."""
    if "db" in r:
        db: str | None = r["db"]
        return db
    return "sqlite" if r.get("server", "streamer") == "streamer" else None


def latest(records: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in records:
        out[key(r)] = r
    return out


def row(*cells: Any) -> str:
    return "| " + " | ".join("" if c is None else str(c) for c in cells) + " |"


def fmt(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def table(records: list[dict[str, Any]], db: str = "sqlite") -> str:
    got = latest([r for r in records if backend_of(r) in (db, None)])
    lines = [
        row("scenario", "streamer", "peer", "ratio", "target", "met?", "verified"),
        row(*["---"] * 7),
    ]

    def find(scenario: str, **kw: Any) -> dict[str, Any] | None:
        for k, r in got.items():
            if k[0] == scenario and all(r.get(a) == b for a, b in kw.items()):
                return r
        return None

    if db == "postgres":
        ceiling = find("ingest.pg_ceiling")
        ceiling_name, ceiling_target = "asyncpg INSERT unnest", None
    else:
        ceiling = find("ingest.sqlite_ceiling")
        ceiling_name, ceiling_target = "sqlite3 executemany", 0.6
    single = find("ingest.single", server="streamer")
    nsingle = find("ingest.single", server="nchan")
    if single:
        eps = single["events_per_s"]
        peer = f"Nchan {fmt(nsingle['events_per_s'])}" if nsingle else "–"
        r = fmt(eps / nsingle["events_per_s"], 2) if nsingle else "–"
        lines.append(
            row(
                f"ingest, single POSTs, 32 producers (ev/s; ack p99 {single['ack']['p99_ms']} ms)",
                fmt(eps),
                peer,
                r,
                "≥ 10,000 ev/s",
                "yes" if eps >= 10_000 else "no",
                single["verified"],
            )
        )
    for batch in (100, 1000):
        b = find(f"ingest.batch{batch}", server="streamer")
        if b and ceiling:
            ratio = b["events_per_s"] / ceiling["events_per_s"]
            lines.append(
                row(
                    f"ingest, batches of {batch}, 4 producers "
                    f"(ev/s; ack p99 {b['ack']['p99_ms']} ms)",
                    fmt(b["events_per_s"]),
                    f"{ceiling_name} {fmt(ceiling['events_per_s'])}",
                    fmt(ratio, 2),
                    f"≥ {ceiling_target}× ceiling" if ceiling_target else "–",
                    ("yes" if ratio >= ceiling_target else "no") if ceiling_target else "–",
                    b["verified"],
                )
            )
    for subs in (100, 1000):
        for transport in ("sse", "ws"):
            for rate in (500, 0, 100):
                s = find(
                    "fanout",
                    server="streamer",
                    subscribers=subs,
                    transport=transport,
                    rate_asked=rate,
                )
                n = find(
                    "fanout", server="nchan", subscribers=subs, transport=transport, rate_asked=rate
                )
                if not s:
                    continue
                label = f"fan-out {subs} {transport.upper()} @ {rate or 'max'}"
                d_ratio = s["delivered_per_s"] / n["delivered_per_s"] if n else None
                p_ratio = s["latency"]["p99_ms"] / n["latency"]["p99_ms"] if n else None
                target, met = "–", "–"
                if subs == 1000:
                    target = "delivered ≥ 2× Nchan"
                    met = "yes" if d_ratio and d_ratio >= 2 else "no"
                lines.append(
                    row(
                        f"{label}: delivered ev/s (pub/s reached {s['pub_per_s']})",
                        fmt(s["delivered_per_s"]),
                        f"Nchan {fmt(n['delivered_per_s'])} ({n['pub_per_s']} pub/s)" if n else "–",
                        fmt(d_ratio, 2),
                        target,
                        met,
                        s["verified"] and (n or {}).get("verified", True),
                    )
                )
                if rate in (500, 100):
                    target, met = "–", "–"
                    if subs == 1000:
                        target = "p99 ≤ 0.5× Nchan"
                        met = "yes" if p_ratio is not None and p_ratio <= 0.5 else "no"
                    if rate == 100:
                        target = "p99 ≤ 5 ms"
                        met = "yes" if s["latency"]["p99_ms"] <= 5 else "no"
                    lat = s["latency"]
                    nl = n["latency"] if n else None
                    lines.append(
                        row(
                            f"{label}: latency p50/p95/p99 ms",
                            f"{lat['p50_ms']} / {lat['p95_ms']} / {lat['p99_ms']}",
                            f"Nchan {nl['p50_ms']} / {nl['p95_ms']} / {nl['p99_ms']}"
                            if nl
                            else "–",
                            fmt(p_ratio, 2) + " (p99)",
                            target,
                            met,
                            "",
                        )
                    )
    redis = find("replay.single", server="redis")
    for transport in ("sse", "ws"):
        s = find("replay.single", server="streamer", transport=transport)
        n = find("replay.single", server="nchan", transport=transport)
        if not s:
            continue
        ratio = s["events_per_s"] / redis["events_per_s"] if redis else None
        met = s["events_per_s"] >= 500_000 and (ratio or 0) >= 1.2
        lines.append(
            row(
                f"replay {fmt(s['job_events'])} events, 1 {transport.upper()} reader (ev/s; "
                f"first event {s['first_event_ms']} ms; RSS +{s['server_rss_growth_mb']} MB)",
                fmt(s["events_per_s"]),
                f"Redis XRANGE {fmt(redis['events_per_s'])}"
                + (f"; Nchan {fmt(n['events_per_s'])} over {fmt(n['job_events'])}" if n else "")
                if redis
                else "–",
                fmt(ratio, 2),
                "≥ 500k ev/s, ≥ 1.2× Redis, RSS < 50 MB",
                "yes" if met and s["server_rss_growth_mb"] < 50 else "no",
                s["verified"],
            )
        )
    for transport in ("sse", "ws"):
        s = find("replay.storm", server="streamer", transport=transport)
        n = find("replay.storm", server="nchan", transport=transport)
        if not s:
            continue
        lines.append(
            row(
                f"{s['readers']} readers × {s['events_each']} behind, {transport.upper()} (s)",
                s["seconds"],
                f"Nchan {n['seconds']}" if n else "–",
                fmt(s["seconds"] / n["seconds"], 2) if n else "–",
                "≤ 3 s",
                "yes" if s["seconds"] <= 3 else "no",
                s["verified"],
            )
        )
    for transport, limit in (("sse", 16), ("ws", 20)):
        s = find("idle", server="streamer", transport=transport)
        n = find("idle", server="nchan", transport=transport)
        if not s:
            continue
        lines.append(
            row(
                f"{fmt(s['connections'])} idle {transport.upper()}: RSS/conn KiB "
                f"(idle CPU {s['idle_cpu_pct']}%)",
                s["rss_per_conn_kib"],
                f"Nchan {n['rss_per_conn_kib']} ({n['idle_cpu_pct']}%)" if n else "–",
                fmt(s["rss_per_conn_kib"] / n["rss_per_conn_kib"], 2) if n else "–",
                f"≤ {limit} KiB",
                "yes" if s["rss_per_conn_kib"] <= limit else "no",
                s["verified"],
            )
        )

    def per_sub(server: str, transport: str) -> tuple[dict[str, Any] | None, float | None]:
        """The slow run and its fast subscribers' events/s each, relative to the baseline."""
        s = find("slow", server=server, transport=transport, phase="slow")
        b = find("slow", server=server, transport=transport, phase="baseline")
        if not s or not b:
            return s, None
        each = s["delivered_per_s"] / max(1, s["complete"])
        return s, round(each / (b["delivered_per_s"] / max(1, b["complete"])), 2)

    for transport in ("sse", "ws"):
        s, s_ratio = per_sub("streamer", transport)
        n, n_ratio = per_sub("nchan", transport)
        if not s or s_ratio is None:
            continue
        lines.append(
            row(
                f"slow consumers {transport.upper()}, {s['subscribers']} subs, 10% stalled: "
                f"fast ev/s vs baseline (lag {s.get('slow_lagged_after_s')} s, "
                f"closed {s.get('slow_closed_after_s')} s, RSS +{s['server_rss_growth_mb']} MB)",
                f"{s_ratio} (p99 {s['latency']['p99_ms']} ms)",
                f"Nchan {n_ratio} (RSS +{n['server_rss_growth_mb']} MB)" if n else "–",
                "–",
                "≥ 0.95",
                "yes" if s_ratio >= 0.95 else "no",
                s["verified"],
            )
        )
    lines += multi_rows(find)
    if db == "postgres":
        lines += crossnode_rows(find)
    return "\n".join(lines)


def multi_rows(find: Any) -> list[str]:
    """One connection carrying every job against a connection per job; the change feed."""
    lines = []
    for transport in ("sse", "ws"):
        one = find("multi", transport=transport, mode="one")
        each = find("multi", transport=transport, mode="each")
        if not one or not each:
            continue
        lines.append(
            row(
                f"{one['jobs']} jobs on 1 {transport.upper()} connection vs 1 each "
                f"(@ {one['rate_asked']:g} ev/s): server µs/delivery; RSS/follower KB "
                f"{one['server_rss_per_follower_kb']} vs {each['server_rss_per_follower_kb']}; "
                f"p99 ms {one['latency']['p99_ms']} vs {each['latency']['p99_ms']}",
                one["server_us_per_delivery"],
                f"1 each {each['server_us_per_delivery']}",
                fmt(one["server_us_per_delivery"] / each["server_us_per_delivery"], 2)
                if each["server_us_per_delivery"]
                else "–",
                "–",
                "–",
                one["verified"] and each["verified"],
            )
        )
    feed = find("feed")
    if feed:
        lines.append(
            row(
                f"change feed, {feed['dashboards']} dashboards @ {feed['rate_asked']:g} "
                f"changes/s: delivered/s (p99 {feed['latency']['p99_ms']} ms, "
                f"{feed['server_us_per_delivery']} µs/delivery)",
                fmt(feed["delivered_per_s"]),
                "–",
                "–",
                "–",
                "–",
                feed["verified"],
            )
        )
    return lines


def crossnode_rows(find: Any) -> list[str]:
    """Publisher on node B, subscribers on node A, against the same-node run beside it."""
    lines = []
    for transport in ("sse", "ws"):
        for rate in (100, 500, 0):
            c = find("crossnode", transport=transport, rate_asked=rate, path="cross")
            s = find("crossnode", transport=transport, rate_asked=rate, path="same")
            if not c or not s:
                continue
            cl, sl = c["latency"], s["latency"]
            label = f"cross-node {c['subscribers']} {transport.upper()} @ {rate or 'max'}"
            lines.append(
                row(
                    f"{label}: latency p50/p95/p99 ms (same node beside it)",
                    f"{cl['p50_ms']} / {cl['p95_ms']} / {cl['p99_ms']}",
                    f"same node {sl['p50_ms']} / {sl['p95_ms']} / {sl['p99_ms']}",
                    fmt(cl["p99_ms"] / sl["p99_ms"], 2) + " (p99)" if sl["p99_ms"] else "–",
                    "–",
                    "–",
                    "",
                )
            )
            lines.append(
                row(
                    f"{label}: delivered ev/s (pub/s reached {c['pub_per_s']}; "
                    f"same node {s['pub_per_s']})",
                    fmt(c["delivered_per_s"]),
                    f"same node {fmt(s['delivered_per_s'])}",
                    fmt(c["delivered_per_s"] / s["delivered_per_s"], 2)
                    if s["delivered_per_s"]
                    else "–",
                    "–",
                    "–",
                    c["verified"] and s["verified"],
                )
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.summary", description=__doc__)
    parser.add_argument("file", nargs="?", type=Path, default=RESULTS)
    parser.add_argument("--run", action="append", help="only these run ids")
    parser.add_argument(
        "--db", choices=("sqlite", "postgres"), action="append", help="only this backend's table"
    )
    args = parser.parse_args(argv)
    records = [json.loads(line) for line in args.file.read_text().splitlines() if line.strip()]
    records = [r for r in records if not r.get("quick")]
    if args.run:
        records = [r for r in records if r["run"] in args.run]
    has = {backend_of(r) for r in records}
    tables = [db for db in args.db or ("sqlite", "postgres") if db in has]
    for n, db in enumerate(tables):
        if len(tables) > 1:
            print(
                ("\n" if n else "")
                + f"streamer on {'SQLite' if db == 'sqlite' else 'PostgreSQL'}:\n"
            )
        print(table(records, db))
    return 0


if __name__ == "__main__":
    sys.exit(main())
