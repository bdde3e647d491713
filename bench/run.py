"""Run the benchmark suite: ``python -m bench.run [--quick] [--only SCENARIO] [--no-nchan]``.

Each scenario starts its own servers (``streamer serve`` on SQLite, and nginx + Nchan
from ``bench/nchan.conf`` unless ``--no-nchan`` or it is not installed) on free
loopback ports, stops them by PID, and appends one JSON line per measurement to
``bench/results/results.jsonl`` (or ``--results PATH``).
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

from .common import RESULTS, Recorder, Suite, nchan_available
from .loadgen import run

SCENARIOS = ("ingest", "fanout", "replay", "idle", "slow")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument(
        "--only", action="append", choices=SCENARIOS, help="run this scenario (repeatable)"
    )
    parser.add_argument("--no-nchan", action="store_true", help="skip the Nchan side")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON lines appended here")
    args = parser.parse_args(argv)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it

    nchan = not args.no_nchan
    if nchan and not nchan_available():
        print("nginx + libnginx-mod-nchan not installed: Nchan side skipped", file=sys.stderr)
        nchan = False
    failed = []
    with tempfile.TemporaryDirectory(prefix="streamer-bench-") as tmp:
        suite = Suite(Recorder(args.results, quick=args.quick), Path(tmp), args.quick, nchan)
        for name in args.only or SCENARIOS:
            start = time.monotonic()
            print(f"# {name} ...", file=sys.stderr, flush=True)
            module = importlib.import_module(f"bench.{name}")
            try:
                run(module.run(suite))
            except Exception:
                traceback.print_exc()
                failed.append(name)
                suite.recorder.write(f"{name}.error", error=traceback.format_exc()[-2000:])
            print(f"# {name} took {time.monotonic() - start:.1f} s", file=sys.stderr, flush=True)
    unverified = [r["scenario"] for r in suite.recorder.records if r.get("verified") is False]
    if unverified:
        print(f"# NOT VERIFIED: {unverified}", file=sys.stderr)
    if failed:
        print(f"# FAILED: {failed}", file=sys.stderr)
    return 1 if failed or unverified else 0


if __name__ == "__main__":
    sys.exit(main())
