"""Retention: the database must not grow forever.

``sweep`` deletes finished jobs older than a cut-off in small transactions, so the
writer is never held for long; ``streamer gc`` runs it once and the ``retention``
setting runs it every hour inside the server.
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, datetime, timedelta

from .errors import StreamerError
from .ports import Jobs

log = logging.getLogger("streamer.retention")
DURATION = re.compile(r"([0-9]{1,6})([smhdw])")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
SWEEP_BATCH = 100
SWEEP_EVERY = 3600.0


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w``: a duration, or ValueError naming the format."""
    match = DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected a duration like 30d, 12h or 90m, got {text!r}")
    return timedelta(seconds=int(match.group(1)) * UNITS[match.group(2)])


def cutoff(age: timedelta) -> str:
    return (datetime.now(UTC) - age).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def sweep(jobs: Jobs, age: timedelta) -> int:
    """Delete every finished job older than ``age``; returns how many."""
    before, total = cutoff(age), 0
    while deleted := await jobs.delete_finished_jobs(before, SWEEP_BATCH):
        total += deleted
    return total


async def run_periodically(jobs: Jobs, age: timedelta, every: float = SWEEP_EVERY) -> None:
    """The server's retention task: a sweep now and then every ``every`` seconds."""
    while True:
        try:
            deleted = await sweep(jobs, age)
        except StreamerError as exc:  # storage down or full: try again next time
            log.warning("retention sweep failed: %s", exc.detail)
        else:
            if deleted:
                log.info("retention deleted %d finished jobs older than %s", deleted, age)
        await asyncio.sleep(every)
