"""Jobs and their event logs, for every backend (``ports.Jobs``)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from ..core.changes import ChangePolicy
from ..core.errors import job_not_found
from ..core.models import JOB_ID, Event, Job, NewEvent
from ..core.redact import Rules
from ..core.search import Found, Matcher
from ..core.sections import Section
from . import transactions as txn
from .commands import Database
from .guards import findable, position, storable
from .rows import JOB_COLUMNS, SECTION_COLUMNS, event_from_row, job_from_row, section_from_row

# Events whose search texts one query joins: a few MB read and scanned per step. The
# first step is small and each next one twice as large, so a search that stops early
# (a page of common matches) reads little more than it needs.
SEARCH_CHUNK = 65_536
FIRST_CHUNK = 2_048


def named(job_id: str) -> None:
    """A string that cannot be a job id names no job: 404 before any database sees
    it (PostgreSQL would refuse a NUL in it as an error, not as a missing job)."""
    if not JOB_ID.fullmatch(job_id):
        raise job_not_found()


class ReadWatcher(Protocol):
    """Told which jobs this node reads and deletes (PostgreSQL's cross-node watch)."""

    def was_read(self, job_id: str, events: Sequence[Event]) -> None: ...

    def forget(self, job_id: str) -> None: ...


class Jobs:
    def __init__(
        self, db: Database, watcher: ReadWatcher | None = None, policy: ChangePolicy | None = None
    ) -> None:
        self.db = db
        self.watcher = watcher
        self.policy = policy or ChangePolicy()

    async def create_job(
        self,
        user_id: int,
        name: str | None,
        metadata: dict[str, Any],
        *,
        secrets: Sequence[str] = (),
        rules: Rules | None = None,
    ) -> Job:
        storable("name", name)
        return await self.db.transact(
            txn.create_job(user_id, name, metadata, self.policy, secrets, rules)
        )

    async def get_job(self, user_id: int, job_id: str) -> Job:
        named(job_id)
        rows = await self.db.point(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ? AND user_id = ?", (job_id, user_id)
        )
        if not rows:
            raise job_not_found()
        return job_from_row(rows[0])

    async def list_jobs(
        self, user_id: int, status: str | None, limit: int, cursor: tuple[str, str] | None
    ) -> list[Job]:
        if not findable(status, *(cursor or ())):
            return []
        where, params = ["user_id = ?"], [user_id]
        if status is not None:
            where.append("status = ?")
            params.append(status)  # type: ignore[arg-type]
        if cursor is not None:
            where.append("(created_at, id) < (?, ?)")
            params.extend(cursor)  # type: ignore[arg-type]
        rows = await self.db.fetch(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE {' AND '.join(where)} "
            "ORDER BY created_at DESC, id DESC LIMIT ?",
            [*params, limit],
        )
        return [job_from_row(row) for row in rows]

    async def update_job(self, user_id: int, job_id: str, changes: dict[str, Any]) -> Job:
        named(job_id)
        for field, value in changes.items():
            storable(field, value)
        return await self.db.transact(txn.update_job(user_id, job_id, changes, self.policy), job_id)

    async def claim_job(self, user_id: int) -> Job | None:
        return await self.db.transact(txn.claim_job(user_id, self.policy))

    async def delete_job(self, user_id: int, job_id: str) -> None:
        named(job_id)
        await self.db.transact(txn.delete_job(user_id, job_id, self.policy), job_id)
        if self.watcher is not None:
            self.watcher.forget(job_id)

    async def delete_finished_jobs(self, before: str, limit: int) -> int:
        deleted = await self.db.transact(txn.delete_finished_jobs(before, limit, self.policy))
        if deleted:
            await self.db.reclaim()
        return deleted

    async def append(
        self,
        user_id: int,
        job_id: str,
        events: Sequence[NewEvent],
        expected_index: int | None = None,
        *,
        byte_limit: int | None = None,
        rules: Rules | None = None,
        section_limit: int | None = None,
    ) -> list[Event]:
        named(job_id)
        return await self.db.transact(
            txn.append(
                user_id,
                job_id,
                events,
                expected_index,
                byte_limit,
                self.policy,
                rules,
                section_limit,
            ),
            job_id,
        )

    async def job_bytes(self, user_id: int, job_id: str) -> int:
        named(job_id)
        rows = await self.db.fetch(
            "SELECT byte_count FROM jobs WHERE id = ? AND user_id = ?", (job_id, user_id)
        )
        if not rows:
            raise job_not_found()
        return int(rows[0][0])

    async def read_events(self, job_id: str, from_index: int, limit: int) -> list[Event]:
        events = await self.read_rows(job_id, from_index, limit)
        if self.watcher is not None:
            self.watcher.was_read(job_id, events)
        return events

    async def read_rows(self, job_id: str, from_index: int, limit: int) -> list[Event]:
        """``read_events`` without telling the watcher (the watcher's own reads)."""
        rows = await self.db.fetch(
            "SELECT idx, type, line FROM events WHERE job_id = ? AND idx >= ? ORDER BY idx LIMIT ?",
            (job_id, position(from_index), position(limit)),
        )
        return [event_from_row(row) for row in rows]

    async def sections(self, job_id: str) -> list[Section]:
        rows = await self.db.fetch(
            f"SELECT {SECTION_COLUMNS} FROM sections WHERE job_id = ? ORDER BY id", (job_id,)
        )
        return [section_from_row(row) for row in rows]

    async def search(
        self, job_id: str, matcher: Matcher, from_index: int, to_index: int, limit: int
    ) -> tuple[list[Found], dict[int, int], int | None]:
        """Matching lines of events ``from_index`` to ``to_index - 1``, the raw line
        each of their events starts on, and (when ``limit`` stopped it) where to go on.

        The database joins each chunk's texts (one value per query) and the scan runs
        in a worker thread, so a search of a million lines does not hold the loop.
        """
        found: list[Found] = []
        start, size = from_index, FIRST_CHUNK
        while start < to_index and len(found) < limit:
            end = min(start + size, to_index)
            size = min(size * 2, SEARCH_CHUNK)
            chunk, first, last = await self._texts(job_id, start, end)
            if first is None:
                break
            more, stop = await asyncio.to_thread(
                matcher.scan, chunk, first, limit - len(found), start, to_index
            )
            found.extend(more)
            if stop is not None:
                return found, await self.line_starts(job_id, found), stop
            start = max(end, last + 1)
        return found, await self.line_starts(job_id, found), None

    async def count_matches(
        self, job_id: str, matcher: Matcher, from_index: int, to_index: int
    ) -> int:
        """How many lines of events ``from_index`` to ``to_index - 1`` match."""
        total, start = 0, from_index
        while start < to_index:
            end = min(start + SEARCH_CHUNK, to_index)
            chunk, first, last = await self._texts(job_id, start, end)
            if first is None:
                break
            total += await asyncio.to_thread(matcher.count, chunk, first, start, to_index)
            start = max(end, last + 1)
        return total

    async def _texts(self, job_id: str, start: int, end: int) -> tuple[bytes, int | None, int]:
        """The joined search texts of the appends holding events ``start`` to
        ``end - 1`` (they may reach either side), the first event and the last."""
        rows = await self.db.fetch(self.db.text_chunk, (job_id, job_id, start, end))
        if not rows or rows[0][1] is None:
            return b"", None, start
        return bytes(rows[0][0]), int(rows[0][1]), int(rows[0][2])

    async def line_starts(self, job_id: str, found: Sequence[Found]) -> dict[int, int]:
        """The raw line each event of ``found`` starts on."""
        if not found:
            return {}
        condition, ids = self.db.id_list("idx", {f.index for f in found})
        rows = await self.db.fetch(
            f"SELECT idx, lineno FROM events WHERE job_id = ? AND {condition}", (job_id, ids)
        )
        return {row[0]: row[1] or 1 for row in rows}

    async def line_of(self, job_id: str, index: int) -> int:
        """The raw line event ``index`` starts on; past the last event, the line the
        next one will start on."""
        rows = await self.db.fetch(
            "SELECT lineno FROM events WHERE job_id = ? AND idx = ?", (job_id, index)
        )
        if rows:
            return int(rows[0][0] or 1)
        rows = await self.db.fetch("SELECT line_count FROM jobs WHERE id = ?", (job_id,))
        return int(rows[0][0]) + 1 if rows else 1

    async def index_of_line(self, job_id: str, line: int) -> tuple[int, int] | None:
        """The event holding raw line ``line`` and the line it starts on (``None``:
        the log has no event yet). Line numbers never decrease with the index, so this
        is the last event starting on or before ``line``."""
        rows = await self.db.fetch(
            "SELECT idx, lineno FROM events WHERE job_id = ? AND lineno <= ? "
            "ORDER BY idx DESC LIMIT 1",
            (job_id, line),
        )
        return (int(rows[0][0]), int(rows[0][1])) if rows else None
