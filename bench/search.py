"""Search benchmark: server-side search over a 1,000,000-line job.

    .venv/bin/python -m bench.search [--lines N] [--db URL]

Starts a real server on a temporary SQLite database (or ``--db postgresql://...``, a
fresh database that is dropped afterwards is the caller's business), stores the
dashboard benchmark's synthetic build log (``bench.dashboard.line``: coloured, of
varying length) through the storage layer (the append path minus HTTP), completes
the job, then times ``GET /jobs/{id}/search`` over loopback for queries that read
the whole log: no match at all, a rare literal, every 7th line counted
(``count=true``), a regex, and the first page of a common word. Each count is
checked against a plain Python scan of the same lines. Beside it goes the page's
previous whole-log search (``search_s``: the dashboard downloading and scanning
every line itself), as ``bench.dashboard`` last recorded it. One JSON line goes to
bench/results/search.jsonl.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from streamer.core import keys
from streamer.core.models import NewEvent
from streamer.server.run import build_server
from streamer.server.settings import Settings

from .dashboard import git_rev, line, shown

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "search.jsonl"
DASHBOARD = BENCH / "results" / "dashboard.jsonl"
BATCH = 10_000
REPEAT = 5

# (name, query parameters, what a plain scan of the shown lines counts)
QUERIES: list[tuple[str, dict[str, str], Any]] = [
    ("no_match", {"q": "no such text anywhere", "count": "true"}, lambda s: False),
    ("rare_literal", {"q": "MODULE_996.PY", "count": "true"}, lambda s: "module_996.py" in s),
    ("every_7th_counted", {"q": "warning", "count": "true"}, lambda s: "warning" in s),
    (
        "regex",
        {"q": r"module_9\d\d\.py \.{30,}$", "regex": "true", "count": "true"},
        lambda s: re.search(r"module_9\d\d\.py \.{30,}$", s) is not None,
    ),
    ("first_page", {"q": "ok", "limit": "100"}, None),
]


def last_client_scan() -> dict[str, Any] | None:
    """The dashboard's own whole-log scan (before search moved to the server), as
    ``bench.dashboard`` last measured it."""
    if not DASHBOARD.exists():
        return None
    found = None
    for text in DASHBOARD.read_text().splitlines():
        row = json.loads(text)
        # Rows from after search moved to the server time that instead (search_count_s).
        if "search_s" in row and "search_count_s" not in row:
            found = {
                "search_s": row["search_s"],
                "matches": row.get("search_matches"),
                "rev": row.get("rev"),
                "ts": row.get("ts"),
            }
    return found


async def fill(storage: Any, user: int, job: str, lines: int) -> float:
    rules = None
    began = time.perf_counter()
    for first in range(0, lines, BATCH):
        events = [
            NewEvent("log", line(i) + "\n", None) for i in range(first, min(lines, first + BATCH))
        ]
        await storage.jobs.append(user, job, events, rules=rules)
    await storage.jobs.append(user, job, [NewEvent("complete", None, True)])
    return time.perf_counter() - began


async def run(lines: int, db: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        settings = Settings(db=db or f"{tmp}/bench.db", port=port)
        server = build_server(settings, log_level="warning")
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:  # noqa: ASYNC110 - the servers offer only this flag
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        try:
            storage = server.app.state.resources.storage
            user, key = await keys.create_user_with_key(
                storage.identity, "bench", f"bench-{time.time_ns()}@example.com"
            )
            job = await storage.jobs.create_job(user.id, f"{lines} lines", {})
            ingest_s = await fill(storage, user.id, job.id, lines)
            print(f"stored {lines} lines in {ingest_s:.1f}s", file=sys.stderr)
            headers = {"Authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=120
            ) as client:
                out: dict[str, Any] = {"lines": lines, "store_s": round(ingest_s, 1)}
                plain = [shown(i) for i in range(lines)]
                for name, params, predicate in QUERIES:
                    times, body = [], {}
                    for _ in range(REPEAT):
                        began = time.perf_counter()
                        r = await client.get(f"/api/v1/jobs/{job.id}/search", params=params)
                        times.append((time.perf_counter() - began) * 1000)
                        r.raise_for_status()
                        body = r.json()
                    result: dict[str, Any] = {
                        "ms_median": round(statistics.median(times), 1),
                        "ms_min": round(min(times), 1),
                    }
                    if predicate is not None:
                        expected = sum(1 for s in plain if predicate(s))
                        assert body["total"] == expected, (name, body["total"], expected)
                        result["total"] = body["total"]
                    else:
                        assert len(body["matches"]) == 100
                        assert all("ok" in m["text"].lower() for m in body["matches"])
                    out[name] = result
                    print(f"{name}: {result}", file=sys.stderr)
                return out
        finally:
            server.should_exit = True
            await task


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--db", default=None, help="a postgresql:// URL (default: SQLite)")
    args = parser.parse_args()
    measured = asyncio.run(run(args.lines, args.db))
    row = {
        "scenario": "search",
        "rev": git_rev(),
        "ts": datetime.now(UTC).isoformat(timespec="seconds"),
        "db": "postgres" if args.db else "sqlite",
        **measured,
        "page_client_scan_before": last_client_scan(),
    }
    print(json.dumps(row))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
