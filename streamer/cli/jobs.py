"""``streamer jobs list | show | cancel``: the caller's jobs as tables for people, JSON for scripts.

The table shows what a person scans for (status, how long, how much log); ``--json``
prints the server's job objects untouched, so scripts see every field and ``id``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from . import exits
from .client import Client
from .terminal import sanitize

PrintRows = Callable[[list[dict[str, Any]], bool, Sequence[str]], None]
COLUMNS = ("id", "name", "status", "events", "duration", "created")
PAGE = 200


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def duration(job: dict[str, Any], now: datetime | None = None) -> str | None:
    """Started to finished (or to now while running): ``4.2s``, ``3m07s``, ``2h05m``."""
    start = _time(job.get("started_at"))
    if start is None:
        return None
    end = _time(job.get("finished_at")) or now or datetime.now(UTC)
    seconds = max(0.0, (end - start).total_seconds())
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def summary(job: dict[str, Any]) -> dict[str, Any]:
    created = _time(job.get("created_at"))
    return {
        "id": job.get("id"),
        "name": job.get("name"),
        "status": job.get("status"),
        "events": job.get("event_count"),
        "duration": duration(job),
        "created": created.strftime("%Y-%m-%d %H:%M:%S") if created else None,
    }


def show(job: dict[str, Any]) -> None:
    """One field a line; the summary's fields first, then the rest of the job as sent."""
    shown = ("id", "name", "status", "event_count", "next_index")
    fields = {**summary(job), **{k: v for k, v in job.items() if k not in shown}}
    fields.pop("created", None)
    width = max(len(k) for k in fields)
    for key, value in fields.items():
        text = "-" if value in (None, {}) else sanitize(str(value), color=False)
        print(f"{key + ':':{width + 1}}  {text}")


async def list_jobs(
    client: Client, status: str | None, limit: int, page_size: int = PAGE
) -> list[dict[str, Any]]:
    """Newest first, following ``next_cursor`` until ``limit`` jobs or the last page."""
    jobs: list[dict[str, Any]] = []
    cursor: str | None = None
    while len(jobs) < limit:
        params: dict[str, Any] = {"limit": min(page_size, limit - len(jobs))}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        page = (await client.request("GET", "/jobs", params=params)).json()
        jobs += page["jobs"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return jobs


async def jobs_command(client: Client, args: argparse.Namespace, print_rows: PrintRows) -> int:
    if args.action == "list":
        jobs = await list_jobs(client, args.status, args.limit)
        if args.quiet:
            print("".join(f"{job['id']}\n" for job in jobs), end="")
        elif args.json:
            print_rows(jobs, True, COLUMNS)
        else:
            print_rows([summary(job) for job in jobs], False, COLUMNS)
        return exits.OK
    if args.action == "watch":
        from .watch import watch_jobs

        return await watch_jobs(client, args, sys.stdout)
    if args.action == "show":
        job = await client.get_job(args.job_id)
    else:
        response = await client.request(
            "PATCH", f"/jobs/{args.job_id}", json={"status": "cancelled"}, accept=frozenset({409})
        )
        if response.status_code == 409:
            job = await client.get_job(args.job_id)
            if job["status"] == "cancelled":  # idempotent: the work is done
                print(f"job {args.job_id} was already cancelled", file=sys.stderr)
                return exits.OK
            print(
                f"streamer: job {args.job_id} has already {job['status']}; only a queued or "
                "running job can be cancelled",
                file=sys.stderr,
            )
            return exits.FAILED
        job = response.json()
    if args.json:
        print(orjson.dumps(job).decode())
    else:
        show(job)
    return exits.OK
