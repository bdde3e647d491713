"""PostgreSQL backend: several nodes share one database; LISTEN/NOTIFY wakes them.

An asyncpg pool serves requests (``database.py``) and one LISTEN connection per node
feeds other nodes' commits to this node's hub (``watch.py``).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Sequence

import asyncpg  # type: ignore[import-untyped]

from ...core.models import Event
from ...core.ports import OnCommit
from ..identity import Identity
from ..jobs import Jobs
from ..streams import Streams
from .database import CONNECT_TIMEOUT, PostgresDatabase
from .watch import Watcher


class PostgresStorage:
    def __init__(self, dsn: str, *, pool_size: int = 10, node: str | None = None) -> None:
        self.dsn = dsn
        self.node = node or secrets.token_hex(4)
        self.watcher = Watcher(self.node, self._connect_listen, self._read_rows, self._counts)
        self.db = PostgresDatabase(dsn, self.node, pool_size, self.watcher)
        self.identity = Identity(self.db)
        self.jobs = Jobs(self.db, self.watcher)
        self.streams = Streams(self.db)

    @property
    def on_commit(self) -> OnCommit | None:
        return self.db.on_commit

    @on_commit.setter
    def on_commit(self, callback: OnCommit | None) -> None:
        self.db.on_commit = callback

    @property
    def listening(self) -> asyncio.Event:
        """Set while this node's LISTEN connection is up (``watch()`` is running)."""
        return self.watcher.listening

    @property
    def listen_application_name(self) -> str:
        """How the LISTEN connection shows in ``pg_stat_activity``."""
        return f"streamer-listen-{self.node}"

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def ping(self) -> None:
        await self.db.fetch("SELECT 1")

    def watch(self) -> AsyncIterator[tuple[str, Sequence[Event]]]:
        """Other nodes' events, read back after each NOTIFY; see ``watch.py``."""
        return self.watcher.events()

    # for the watcher ---------------------------------------------------------------------

    async def _read_rows(self, job_id: str, from_index: int, limit: int) -> list[Event]:
        return await self.jobs.read_rows(job_id, from_index, limit)

    async def _counts(self, job_ids: list[str]) -> dict[str, int]:
        rows = await self.db.fetch(
            "SELECT id, event_count FROM jobs WHERE id = ANY(?::text[])", (job_ids,)
        )
        return {row[0]: row[1] for row in rows}

    async def _connect_listen(self) -> object:
        return await asyncpg.connect(
            self.dsn,
            timeout=CONNECT_TIMEOUT,
            server_settings={"application_name": self.listen_application_name},
        )
