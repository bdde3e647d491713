"""Jobs and their event logs, for every backend (``ports.Jobs``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ..core.changes import ChangePolicy
from ..core.errors import job_not_found
from ..core.models import JOB_ID, Event, Job, NewEvent
from . import transactions as txn
from .commands import Database
from .guards import findable, position, storable
from .rows import JOB_COLUMNS, event_from_row, job_from_row


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

    async def create_job(self, user_id: int, name: str | None, metadata: dict[str, Any]) -> Job:
        storable("name", name)
        return await self.db.transact(txn.create_job(user_id, name, metadata, self.policy))

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
    ) -> list[Event]:
        named(job_id)
        return await self.db.transact(
            txn.append(user_id, job_id, events, expected_index, byte_limit, self.policy), job_id
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
