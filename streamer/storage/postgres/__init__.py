"""PostgreSQL backend: several nodes share one database; LISTEN/NOTIFY wakes them.

An asyncpg pool serves requests (``database.py``) and one LISTEN connection per node
feeds other nodes' commits to this node's hub (``watch.py``).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Sequence

import asyncpg  # type: ignore[import-untyped]

from ...core.changes import ChangePolicy, feed_key, feed_user
from ...core.models import Event
from ...core.ports import OnCommit
from ..changes import Changes
from ..identity import Identity
from ..jobs import Jobs
from ..streams import Streams
from .database import CONNECT_TIMEOUT, PostgresDatabase
from .watch import Watcher


class PostgresStorage:
    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = 10,
        node: str | None = None,
        policy: ChangePolicy | None = None,
    ) -> None:
        self.dsn = dsn
        self.node = node or secrets.token_hex(4)
        self.watcher = Watcher(self.node, self._connect_listen, self._read_rows, self._counts)
        self.db = PostgresDatabase(dsn, self.node, pool_size, self.watcher)
        self.identity = Identity(self.db)
        self.jobs = Jobs(self.db, self.watcher, policy)
        self.changes = Changes(self.db, self.watcher, policy)
        self.streams = Streams(self.db, policy)

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

    # for the watcher: it carries jobs' events and users' changes alike, by key ------------

    async def _read_rows(self, key: str, from_index: int, limit: int) -> list[Event]:
        if feed_user(key) is not None:
            return await self.changes.read_rows(key, from_index, limit)
        return await self.jobs.read_rows(key, from_index, limit)

    async def _counts(self, keys: list[str]) -> dict[str, int]:
        """The next index of each job, and the next sequence number of each feed."""
        users = [user for key in keys if (user := feed_user(key)) is not None]
        jobs = [key for key in keys if feed_user(key) is None]
        counts: dict[str, int] = {}
        if jobs:
            rows = await self.db.fetch(
                "SELECT id, event_count FROM jobs WHERE id = ANY(?::text[])", (jobs,)
            )
            counts.update({row[0]: row[1] for row in rows})
        if users:
            rows = await self.db.fetch(
                "SELECT user_id, seq FROM change_heads WHERE user_id = ANY(?::bigint[])", (users,)
            )
            counts.update({feed_key(row[0]): row[1] + 1 for row in rows})
        return counts

    async def _connect_listen(self) -> object:
        return await asyncpg.connect(
            self.dsn,
            timeout=CONNECT_TIMEOUT,
            server_settings={"application_name": self.listen_application_name},
        )
