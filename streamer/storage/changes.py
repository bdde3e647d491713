"""The change feed's reads, and its trailing growth, for every backend (``ports.ChangeFeed``).

The changes themselves are written by the transactions that make them
(``transactions.record_change``); here are what a feed reader needs: the user's
head and floor, a snapshot of the job list that is consistent with a head, and the
changes after a point, read as the log entries ``follow()`` merges with the hub.
"""

from __future__ import annotations

from ..core.changes import ChangePolicy, feed_user
from ..core.errors import Dropped
from ..core.models import Event, Job
from .change_log import record_growth
from .commands import Database
from .jobs import ReadWatcher
from .rows import JOB_COLUMNS, event_from_row, job_from_row

SNAPSHOT_COLUMNS = ", ".join(f"j.{column.strip()}" for column in JOB_COLUMNS.split(","))


class Changes:
    def __init__(
        self, db: Database, watcher: ReadWatcher | None = None, policy: ChangePolicy | None = None
    ) -> None:
        self.db = db
        self.watcher = watcher
        self.policy = policy or ChangePolicy()

    async def head(self, user_id: int) -> tuple[int, int]:
        """(the user's last sequence number, its floor): 0 for a user with no change."""
        rows = await self.db.point(
            "SELECT seq, floor FROM change_heads WHERE user_id = ?", (user_id,)
        )
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    async def snapshot(self, user_id: int, limit: int) -> tuple[int, list[Job]]:
        """The user's newest ``limit`` jobs and the head they are current at.

        One statement, so one snapshot of the database on either engine: every change
        up to the head is in the list, and none after it.
        """
        rows = await self.db.fetch(
            "SELECT h.seq, "
            f"{SNAPSHOT_COLUMNS} FROM "
            "(SELECT coalesce(max(seq), 0) AS seq FROM change_heads WHERE user_id = ?) AS h "
            f"LEFT JOIN (SELECT {JOB_COLUMNS} FROM jobs WHERE user_id = ? "
            "ORDER BY created_at DESC, id DESC LIMIT ?) AS j ON TRUE "
            "ORDER BY j.created_at DESC, j.id DESC",
            (user_id, user_id, limit),
        )
        head = int(rows[0][0]) if rows else 0
        return head, [job_from_row(row[1:]) for row in rows if row[1] is not None]

    async def read_events(self, key: str, from_index: int, limit: int) -> list[Event]:
        """The changes of feed ``key`` from sequence number ``from_index`` on (an
        ``EventReader``, so ``follow()`` reads a feed like a job's log).

        ``Dropped`` (410) when retention has dropped changes at or past ``from_index``: a reader
        that fell that far behind (or resumed that late) is told, never served a feed
        with changes silently missing. One statement reads the floor with the rows.
        """
        user_id = feed_user(key)
        if user_id is None:
            return []
        rows = await self.db.fetch(
            "SELECT h.floor, c.seq, c.kind, c.line FROM change_heads AS h LEFT JOIN "
            "(SELECT seq, kind, line FROM job_changes WHERE user_id = ? AND seq >= ? "
            "ORDER BY seq LIMIT ?) AS c ON TRUE WHERE h.user_id = ? ORDER BY c.seq",
            (user_id, from_index, limit, user_id),
        )
        if rows and from_index <= int(rows[0][0]) > 0:  # 1 .. floor were dropped
            raise Dropped(
                f"changes up to {rows[0][0]} are no longer kept (this reader needs "
                f"{from_index} on); reconnect with snapshot=true",
                oldest=int(rows[0][0]),
            )
        changes = [event_from_row(row[1:]) for row in rows if row[1] is not None]
        if self.watcher is not None:
            self.watcher.was_read(key, changes)
        return changes

    async def read_rows(self, key: str, from_index: int, limit: int) -> list[Event]:
        """What is kept from ``from_index`` on, without the floor's check and without
        telling the watcher (the watcher's own reads: a hole it leaves in a node's hub
        sends that feed's readers to ``read_events``)."""
        user_id = feed_user(key)
        if user_id is None:
            return []
        rows = await self.db.fetch(
            "SELECT seq, kind, line FROM job_changes WHERE user_id = ? AND seq >= ? "
            "ORDER BY seq LIMIT ?",
            (user_id, from_index, limit),
        )
        return [event_from_row(row) for row in rows]

    async def pending_growth(self, cutoff_ms: int, limit: int) -> list[tuple[int, str]]:
        rows = await self.db.fetch(
            "SELECT user_id, id FROM jobs WHERE status = 'running' "
            "AND change_count < event_count AND change_ms <= ? LIMIT ?",
            (cutoff_ms, limit),
        )
        return [(int(row[0]), str(row[1])) for row in rows]

    async def record_growth(self, user_id: int, job_id: str) -> bool:
        return await self.db.transact(record_growth(user_id, job_id, self.policy), job_id)
