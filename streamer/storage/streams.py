"""Durable Streams' rows, for every backend (``ports.Streams``): finding a stream by
its path, a fork's origin, and the stream writes of ``transactions.py``."""

from __future__ import annotations

from ..core.changes import ChangePolicy
from ..core.durable import AppendOutcome, AppendRequest, Config, ForkPlan, View
from ..core.models import NewEvent, utcnow
from . import transactions as txn
from .commands import Database
from .rows import view_from_row


class Streams:
    def __init__(self, db: Database, policy: ChangePolicy | None = None) -> None:
        self.db = db
        self.policy = policy or ChangePolicy()  # streams are jobs: their changes are fed

    async def find(self, user_id: int, path: str) -> View | None:
        """The user's stream at ``path``, or the user's job whose id is ``path``."""
        rows = await self.db.point(txn.FIND_STREAM, (user_id, path))
        if not rows:
            rows = await self.db.point(txn.FIND_JOB, (path, user_id))
        return view_from_row(rows[0]) if rows else None

    async def fork_origin(self, job_id: str) -> tuple[str, int] | None:
        rows = await self.db.point(
            "SELECT source_id, fork_index FROM streams WHERE job_id = ? AND source_id IS NOT NULL",
            (job_id,),
        )
        return (rows[0][0], int(rows[0][1])) if rows else None

    async def create(
        self,
        user_id: int,
        path: str,
        config: Config,
        fork: ForkPlan | None,
        source: str | None,
        events: list[NewEvent],
        byte_limit: int | None = None,
    ) -> tuple[bool, View]:
        return await self.db.transact(
            txn.create_stream(user_id, path, config, fork, source, events, byte_limit, self.policy)
        )

    async def append(
        self, user_id: int, job_id: str, request: AppendRequest, byte_limit: int | None = None
    ) -> AppendOutcome:
        return await self.db.transact(
            txn.append_stream(user_id, job_id, request, byte_limit, self.policy), job_id
        )

    async def delete(self, user_id: int, job_id: str) -> tuple[bool, list[str]]:
        return await self.db.transact(txn.delete_stream(user_id, job_id, self.policy), job_id)

    async def expire(self, user_id: int, job_id: str) -> tuple[bool, list[str]] | None:
        return await self.db.transact(txn.expire_stream(user_id, job_id, self.policy), job_id)

    async def touch(self, job_id: str) -> None:
        await self.db.transact(txn.touch_stream(job_id, utcnow()))
