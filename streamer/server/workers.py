"""``streamer serve --workers N``: N processes sharing one listening socket.

Only with PostgreSQL: each worker is a full node (its own pool, hub and LISTEN
connection), and cross-node delivery makes a reader on one worker see appends made
through another. SQLite has one writer per database and no cross-process delivery,
so several workers there would silently miss each other's live events: refused.

uvicorn's own ``--workers`` supervisor runs a plain ``uvicorn.Server`` in each child,
which would lose ``StreamerServer``'s clean end of open streams on shutdown; this one
runs ``StreamerServer`` and forwards SIGTERM/SIGINT to every worker.
"""

from __future__ import annotations

import multiprocessing
import signal
import socket
from types import FrameType

from .run import build_server, tune_gc
from .settings import Settings


def _worker(settings: Settings, log_level: str, sock: socket.socket) -> None:
    server = build_server(settings, log_level=log_level)
    tune_gc()
    server.run(sockets=[sock])


def serve_workers(settings: Settings, workers: int, log_level: str) -> int:
    """Run ``workers`` server processes until SIGTERM/SIGINT; the worst exit code wins."""
    sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.set_inheritable(True)
    spawn = multiprocessing.get_context("spawn")
    procs = [
        spawn.Process(target=_worker, args=(settings, log_level, sock), name=f"streamer-{i}")
        for i in range(workers)
    ]

    def forward(signum: int, frame: FrameType | None) -> None:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                proc.terminate()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    sock.close()
    return max((abs(p.exitcode or 0) for p in procs), default=0) and 1
