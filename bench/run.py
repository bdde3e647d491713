"""Run the benchmark suite: ``python -m bench.run [--quick] [--only SCENARIO] [--no-nchan]
[--db auto|sqlite|postgres|both]``.

Each scenario starts its own servers (``streamer serve``, and nginx + Nchan from
``bench/nchan.conf`` unless ``--no-nchan`` or it is not installed) on free loopback
ports, stops them by PID, and appends one JSON line per measurement to
``bench/results/results.jsonl`` (or ``--results PATH``); each line's ``db`` names
streamer's backend.

Backends (``--db``): ``auto`` (the default) runs every scenario on SQLite and then on
PostgreSQL when a server answers at ``BENCH_PG`` / ``STREAMER_TEST_PG`` (default
``postgresql://postgres@127.0.0.1:5432/test``), saying so when it does not; ``both``
and ``postgres`` insist on it (exit 2 without it). PostgreSQL servers get a database
of their own, created for them and dropped after. The peers (Nchan, Redis, the raw
sqlite3 ceiling) run once per scenario, in the first backend's pass. ``crossnode``
(two nodes on one database) runs only on PostgreSQL.
"""

from __future__ import annotations

import argparse
import importlib
import resource
import sys
import tempfile
import time
import traceback
from pathlib import Path

from .common import RESULTS, Recorder, Suite, nchan_available, postgres_admin_url
from .loadgen import run

SCENARIOS = (
    "ingest",
    "fanout",
    "replay",
    "idle",
    "slow",
    "crossnode",
    "durable",
    "multi",
    "feed",
)
POSTGRES_ONLY = {"crossnode"}


def backends(choice: str) -> tuple[list[str], str | None, str]:
    """(backends to run, PostgreSQL admin URL or None, a note for the user or "")."""
    if choice == "sqlite":
        return ["sqlite"], None, ""
    admin, why = postgres_admin_url()
    if choice == "auto":
        if admin is None:
            return ["sqlite"], None, f"{why}: PostgreSQL side skipped"
        return ["sqlite", "postgres"], admin, ""
    if admin is None:
        raise SystemExit(f"--db {choice}: {why}")
    return (["postgres"] if choice == "postgres" else ["sqlite", "postgres"]), admin, ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument(
        "--only", action="append", choices=SCENARIOS, help="run this scenario (repeatable)"
    )
    parser.add_argument("--no-nchan", action="store_true", help="skip the Nchan side")
    parser.add_argument(
        "--db",
        choices=("auto", "sqlite", "postgres", "both"),
        default="auto",
        help="streamer's backend(s); auto: SQLite, then PostgreSQL when reachable",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON lines appended here")
    args = parser.parse_args(argv)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it

    try:
        dbs, pg_admin, note = backends(args.db)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    if note:
        print(note, file=sys.stderr)
    nchan = not args.no_nchan
    if nchan and not nchan_available():
        print("nginx + libnginx-mod-nchan not installed: Nchan side skipped", file=sys.stderr)
        nchan = False
    failed = []
    with tempfile.TemporaryDirectory(prefix="streamer-bench-") as tmp:
        suite = Suite(Recorder(args.results, quick=args.quick), Path(tmp), args.quick, nchan)
        suite.pg_admin = pg_admin
        for name in args.only or SCENARIOS:
            passes = [db for db in dbs if name not in POSTGRES_ONLY or db == "postgres"]
            if not passes:
                print(f"# {name}: needs PostgreSQL, skipped", file=sys.stderr, flush=True)
                continue
            suite.shared.clear()
            for n, db in enumerate(passes):
                suite.db = suite.recorder.db = db
                suite.peers = n == 0
                start = time.monotonic()
                print(f"# {name} on {db} ...", file=sys.stderr, flush=True)
                module = importlib.import_module(f"bench.{name}")
                try:
                    run(module.run(suite))
                except Exception:
                    traceback.print_exc()
                    failed.append(f"{name}/{db}")
                    suite.recorder.write(f"{name}.error", error=traceback.format_exc()[-2000:])
                took = time.monotonic() - start
                print(f"# {name} on {db} took {took:.1f} s", file=sys.stderr, flush=True)
    unverified = [
        f"{r['scenario']}/{r['db']}" for r in suite.recorder.records if r.get("verified") is False
    ]
    if unverified:
        print(f"# NOT VERIFIED: {unverified}", file=sys.stderr)
    if failed:
        print(f"# FAILED: {failed}", file=sys.stderr)
    return 1 if failed or unverified else 0


if __name__ == "__main__":
    sys.exit(main())
