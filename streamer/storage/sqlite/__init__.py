"""SQLite backend: WAL, one writer thread with group commit, aiosqlite readers.

One process owns a SQLite database: nothing is committed elsewhere, so ``watch``
yields nothing, and the writer's commit order is every job's index order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from ...core.changes import ChangePolicy
from ...core.models import Event
from ...core.ports import OnCommit
from ...core.stats import Histogram
from ..changes import Changes
from ..identity import Identity
from ..jobs import Jobs
from ..streams import Streams
from .database import SQLiteDatabase


class SQLiteStorage:
    def __init__(self, path: str, sync: str = "normal", policy: ChangePolicy | None = None) -> None:
        self.path = path
        self.db = SQLiteDatabase(path, sync)
        self.identity = Identity(self.db)
        self.jobs = Jobs(self.db, policy=policy)
        self.changes = Changes(self.db, policy=policy)
        self.streams = Streams(self.db, policy)

    @property
    def on_commit(self) -> OnCommit | None:
        return self.db.writer.on_commit

    @on_commit.setter
    def on_commit(self, callback: OnCommit | None) -> None:
        self.db.writer.on_commit = callback

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def ping(self) -> None:
        await self.db.fetch("SELECT 1")

    def writer_stats(self) -> tuple[int, int, int]:
        """(commit groups, operations committed in them, failed groups), for /metrics."""
        w = self.db.writer
        return w.groups, w.grouped_ops, w.failed_groups

    def group_sizes(self) -> Histogram:
        """Operations per committed group, for /metrics."""
        return self.db.writer.group_sizes

    async def watch(self) -> AsyncIterator[tuple[str, Sequence[Event]]]:
        """Nothing: no other process commits to this database."""
        return
        yield  # pragma: no cover - makes this an async generator
