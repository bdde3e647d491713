"""Profile ``streamer serve`` under one workload with py-spy and print where it spends.

    .venv/bin/python -m bench.profile single|batch|replay|fanout [--seconds S] [--svg F]

Starts a fresh server on a free port, attaches ``py-spy record --gil --nonblocking``
to its PID (samples only the thread holding the GIL: where Python time goes),
runs the workload, and prints the functions with the largest inclusive and self
share of samples. ``py-spy`` comes from ``pip install py-spy``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import StreamerServer
from .loadgen import SubscriberPool, publish_events, run, sub_specs


def summarize(collapsed: Path, top: int = 35) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = [f.split(" (")[0] + " (" + f.rsplit("/", 1)[-1] for f in stack.split(";")]
        for name in set(frames):
            inclusive[name] += n
        own[frames[-1]] += n
    out = [f"samples: {total}", "-- inclusive"]
    out += [f"{100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    out += ["-- self"]
    out += [f"{100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    return "\n".join(out)


async def prepare(server: StreamerServer, kind: str) -> str:
    """What must exist before sampling starts (the replay's stored job)."""
    if kind != "replay":
        return ""
    job = server.create_job("profile-replay")
    await publish_events(server.target(), job, 300_000, batch=5000)
    return job


async def workload(server: StreamerServer, kind: str, seconds: float, job: str) -> str:
    target = server.target()
    deadline = time.monotonic() + seconds
    if kind in ("single", "batch"):
        batch, producers = (1, 32) if kind == "single" else (1000, 4)
        jobs = [server.create_job(f"profile-{i}") for i in range(producers)]
        sent = 0

        async def producer(job: str) -> None:
            nonlocal sent
            seq = 0
            while time.monotonic() < deadline:
                n = 50 * batch
                await publish_events(target, job, n, batch=batch, start_seq=seq)
                seq += n
                sent += n

        await asyncio.gather(*(producer(j) for j in jobs))
        return f"{kind}: {sent / seconds:.0f} events/s"
    if kind == "replay":
        return await read(server, job, "sse", 1, 300_000, "replay")
    job = server.create_job("profile-fanout")
    specs = sub_specs(target, job, "sse", 100, 1000, record=False, timeout=600)
    pool = SubscriberPool(specs)
    try:
        await pool.spawned()
        pool.send("go")
        await pool.ready()
        start = time.monotonic()
        await publish_events(target, job, 1000)
        await pool.fast_done()
        elapsed = time.monotonic() - start
        pool.send("finish")
        await pool.results()
    finally:
        pool.kill()
    return f"fanout: {100 * 1000 / elapsed:.0f} deliveries/s"


async def read(
    server: StreamerServer, job: str, transport: str, n: int, each: int, kind: str
) -> str:
    specs = sub_specs(server.target(), job, transport, n, each, record=False, timeout=600)
    pool = SubscriberPool(specs)
    try:
        await pool.spawned()
        start = time.monotonic()
        pool.send("go")
        await pool.ready()
        await pool.fast_done()
        elapsed = time.monotonic() - start
        pool.send("finish")
        await pool.results()
    finally:
        pool.kill()
    return f"{kind}: {n * each / elapsed:.0f} events/s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("kind", choices=["single", "batch", "replay", "fanout"])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--svg", type=Path, help="also write a flame graph here")
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.TemporaryDirectory(prefix="streamer-profile-") as tmp:
        server = StreamerServer(Path(tmp))
        server.start()
        try:
            job = run(prepare(server, args.kind))
            raw = Path(tmp) / "profile.txt"
            command = [spy, "record", "--gil", "--nonblocking", "-r", str(args.rate)]
            command += ["--pid", str(server.pid)]
            recorders = [subprocess.Popen([*command, "-f", "raw", "-o", str(raw)])]
            if args.svg:
                recorders.append(subprocess.Popen([*command, "-o", str(args.svg)]))
            time.sleep(1.0)
            cpu0 = server.cpu()
            print(run(workload(server, args.kind, args.seconds, job)))
            print(f"server CPU: {server.cpu() - cpu0:.1f} s")
            for recorder in recorders:
                recorder.send_signal(signal.SIGINT)
                recorder.wait(30)
            print(summarize(raw))
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
