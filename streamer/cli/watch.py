"""``streamer follow ID1 ID2 ...`` and ``streamer jobs watch``: many things on one connection.

``follow`` with several jobs prints their logs interleaved as they are written, each
line prefixed with its job (like ``docker compose logs -f``), over one multi-job
stream that resumes every job exactly; it exits with the worst of the jobs' exit
statuses (0 succeeded; 1 failed, cancelled, deleted or not found). ``jobs watch``
prints one line per change of the caller's jobs as it happens (or the changes'
JSON with ``--json``), until interrupted.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, TextIO

import orjson

from . import exits
from .client import Client, ClientError, Event
from .streams import Ended, changes, multi_events
from .terminal import json_safe, sanitize, use_color

# Prefix colours, one per job in turn: the basic ANSI colours a terminal themes.
COLORS = (36, 33, 32, 35, 34, 31)


class PrefixedPrinter:
    """Lines of several jobs, each whole line once, behind its job's prefix. An event
    whose data does not end its line is held until the line is complete (or the job
    ends), so two jobs' half lines never mix."""

    def __init__(
        self, out: TextIO, prefixes: dict[str, str], *, color: bool, as_json: bool
    ) -> None:
        self.out = out
        self.color = color
        self.as_json = as_json
        width = max(len(p) for p in prefixes.values())
        self.prefixes = {}
        for i, (job, prefix) in enumerate(prefixes.items()):
            text = f"{prefix:<{width}} | "
            if color:
                text = f"\x1b[{COLORS[i % len(COLORS)]}m{text}\x1b[0m"
            self.prefixes[job] = text
        self.partial: dict[str, str] = {}

    def write(self, job: str, events: Sequence[Event]) -> None:
        if self.as_json:
            self.out.write("".join(json_safe(e.line.decode()) + "\n" for e in events))
            self.out.flush()
            return
        text = self.partial.pop(job, "") + "".join(e.data or "" for e in events)
        lines = text.split("\n")
        if lines[-1]:
            self.partial[job] = lines[-1]
        self._emit(job, lines[:-1])

    def end(self, job: str) -> None:
        rest = self.partial.pop(job, "")
        if rest:
            self._emit(job, [rest])

    def _emit(self, job: str, lines: list[str]) -> None:
        if not lines:
            return
        reset = "\x1b[0m" if self.color else ""
        prefix = self.prefixes[job]
        self.out.write(
            "".join(f"{prefix}{sanitize(line, color=self.color)}{reset}\n" for line in lines)
        )
        self.out.flush()


def prefixes(jobs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Each job's name, or its id; with its id too when two jobs share a name."""
    names = [job.get("name") or job_id for job_id, job in jobs.items()]
    out = {}
    for job_id, name in zip(jobs, names, strict=True):
        clean = sanitize(name, color=False)
        out[job_id] = f"{clean} ({job_id})" if names.count(name) > 1 and name != job_id else clean
    return out


async def follow_many(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Follow ``args.job_id`` on one stream until each ends; the worst exit status."""
    color, as_json = use_color(args.color, out), args.json
    statuses: dict[str, int] = {}
    jobs: dict[str, dict[str, Any]] = {}
    for job_id in dict.fromkeys(args.job_id):
        try:
            jobs[job_id] = await client.get_job(job_id)
        except ClientError as exc:
            if exc.status != 404:
                raise
            print(f"streamer: {job_id}: {exc.message}", file=err)
            statuses[job_id] = exits.for_status(exc.status)
    positions = {}
    for job_id, job in jobs.items():
        start = args.from_index or 0
        if args.tail is not None:  # the last N events of each (not lines: they interleave)
            start = max(0, job["event_count"] - args.tail)
        positions[job_id] = min(start, job["event_count"])
    printer = PrefixedPrinter(out, prefixes(jobs), color=color, as_json=as_json) if jobs else None
    success: dict[str, bool] = {}
    async for item in multi_events(client, positions) if positions else _nothing():
        assert printer is not None
        if isinstance(item, Ended):
            printer.end(item.job_id)
            statuses[item.job_id] = await _status(client, item, success)
            continue
        job_id, batch = item
        printer.write(job_id, batch)
        if batch[-1].type == "complete":
            success[job_id] = bool(batch[-1].success)
    return max(statuses.values(), default=exits.OK)


async def _nothing() -> Any:
    return
    yield  # pragma: no cover - makes this an async generator


async def _status(client: Client, ended: Ended, success: dict[str, bool]) -> int:
    if ended.problem is not None:
        return exits.for_status(ended.problem.get("status"))
    if ended.reason != "complete":
        return exits.FAILED  # deleted while followed
    if ended.job_id not in success:  # past its end when we came: its status says how
        job = await client.get_job(ended.job_id)
        success[ended.job_id] = job["status"] == "completed"
    return exits.OK if success[ended.job_id] else exits.FAILED


async def watch_jobs(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    """Print each change of the caller's jobs as it happens, until interrupted."""
    async for change in changes(client, args.after, snapshot=args.snapshot):
        if args.json:
            out.write(json_safe(orjson.dumps(change).decode()) + "\n")
        elif change["type"] == "snapshot":
            for job in change["jobs"]:
                out.write(_line("listed", job))
        else:
            out.write(_line(change["type"], change["job"]))
        out.flush()
    return exits.OK


def _line(kind: str, job: dict[str, Any]) -> str:
    name = sanitize(str(job.get("name") or "-"), color=False)
    events = job.get("event_count") or 0
    return f"{kind:<8} {job.get('id')}  {job.get('status')!s:<9} {events:>7} events  {name}\n"
