"""The SQLite engine: one writer thread with group commit, aiosqlite readers, and the
loop thread's own connection for point reads.

Reads use a small pool of aiosqlite connections, each read its own short
transaction so WAL checkpoints can finish. Writes go through ``Writer``: a
transaction of ``transactions.py`` runs there, inside its operation's savepoint,
driven by ``_execute``.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Collection, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from ...core.errors import Unavailable, job_not_found
from ..commands import (
    Command,
    Execute,
    LoadJob,
    OldestQueued,
    Published,
    Query,
    SaveChange,
    SaveJob,
    T,
    Transaction,
    drive,
)
from ..rows import JOB_STATE_COLUMNS, JOB_UPDATE, job_state_from_row, job_state_values
from .schema import migrate, pragmas
from .writer import Writer

READERS = 3
MIN_VERSION = (3, 35, 0)  # RETURNING, used by the shared transactions
INSERT_EVENT = "INSERT INTO events (job_id, idx, type, line, lineno) VALUES (?, ?, ?, ?, ?)"
# The search texts of the appends holding events ``? <= idx < ?`` (from the one that
# holds the first), as one value in index order, and the events it spans.
TEXT_CHUNK = (
    "SELECT CAST(group_concat(t, char(10, 30, 10)) AS BLOB), min(f), max(l) FROM ("
    "SELECT text AS t, first_idx AS f, last_idx AS l FROM search_text "
    "WHERE job_id = ? AND first_idx >= coalesce((SELECT max(first_idx) FROM search_text "
    "WHERE job_id = ? AND first_idx <= ?), 0) AND first_idx < ? ORDER BY first_idx)"
)


class SQLiteDatabase:
    text_chunk = TEXT_CHUNK

    def __init__(self, path: str, sync: str = "normal") -> None:
        self.path = path
        self.sync = sync
        self.writer = Writer(self._connect_writer)
        self._readers: list[aiosqlite.Connection] = []
        self._next_reader = itertools.cycle(range(READERS))
        self._point: sqlite3.Connection | None = None

    def _connect_writer(self) -> sqlite3.Connection:
        if sqlite3.sqlite_version_info < MIN_VERSION:
            raise sqlite3.NotSupportedError(
                f"SQLite {sqlite3.sqlite_version} is too old; streamer needs 3.35 or newer"
            )
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        # Only takes effect on a new database (before its first table): lets retention
        # return freed pages with PRAGMA incremental_vacuum instead of a full VACUUM.
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.executescript(pragmas(self.sync))
        # Deleted content (a finished job's sealed secrets, deleted jobs) is zeroed in
        # the pages written anyway, never left readable in free space.
        conn.execute("PRAGMA secure_delete=FAST")
        migrate(conn)
        return conn

    async def open(self) -> None:
        try:
            await self.writer.start()
            for _ in range(READERS):
                reader = await aiosqlite.connect(self.path, isolation_level=None)
                await reader.executescript(pragmas(self.sync) + "PRAGMA query_only=ON;")
                self._readers.append(reader)
            self._point = self._connect_point()
        except sqlite3.Error as exc:
            raise Unavailable(f"cannot open SQLite database {self.path}: {exc}") from exc

    def _connect_point(self) -> sqlite3.Connection:
        """The loop thread's own connection, for point reads (``point``).

        Autocommit, so each SELECT is its own read transaction, ended when its rows are
        all fetched: every read sees the latest commit of any process (a key revoked
        by the CLI is refused at the next request). ``busy_timeout=0``: it must never
        make the event loop wait; a read that would wait goes to a reader thread.
        """
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.executescript(pragmas(self.sync) + "PRAGMA query_only=ON; PRAGMA busy_timeout=0;")
        return conn

    async def close(self) -> None:
        if self._point is not None:
            self._point.close()
            self._point = None
        await self.writer.close()
        for reader in self._readers:
            await reader.close()
        self._readers.clear()

    # reads ---------------------------------------------------------------------------

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            reader = self._readers[next(self._next_reader)]
            return list(await reader.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise Unavailable(f"storage error: {exc}") from exc

    async def point(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of a small indexed read (an API key, a job), read on the event loop.

        A hop to a reader thread (a queue, a thread wake-up, a callback back into the
        loop) costs several times what a WAL point read costs on this thread, and
        these reads come with every request. Anything unusual (the database busy or
        locked, any SQLite error) falls back to a reader thread, which waits and
        reports errors as before.
        """
        conn = self._point
        if conn is not None:
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.Error:
                pass
        return await self.fetch(sql, params)

    def id_list(self, column: str, ids: Collection[int]) -> tuple[str, Any]:
        """One bound parameter for any number of ids (a JSON array), so the statement
        never meets SQLite's limit on host parameters."""
        return f"{column} IN (SELECT value FROM json_each(?))", orjson.dumps(sorted(ids)).decode()

    # writes --------------------------------------------------------------------------

    async def transact(self, transaction: Transaction[T], job_id: str | None = None) -> T:
        """One writer runs every transaction, so commit order is index order already."""
        result: T = await self.writer.submit(partial(_run, transaction))
        return result

    async def reclaim(self) -> None:
        """Hand freed pages back to the file system (auto_vacuum=INCREMENTAL), a few
        thousand at a time, so the database does not only ever grow."""
        await self.writer.submit(partial(_incremental_vacuum, 4096))


def _run(transaction: Transaction[Any], conn: sqlite3.Connection) -> tuple[Any, Published]:
    return drive(transaction, partial(_execute, conn))


def _execute(conn: sqlite3.Connection, command: Command) -> Any:
    """One command of a transaction, in the writer thread."""
    if isinstance(command, SaveJob):
        state, appended = command.state, command.appended
        if appended is not None:
            job_id = state.job.id
            events, lines = appended.events, appended.lines
            if len(events) == 1:  # most appends: execute costs less than executemany
                e = events[0]
                conn.execute(INSERT_EVENT, (job_id, e.index, e.type, e.line, lines[0]))
            else:
                conn.executemany(
                    INSERT_EVENT,
                    [
                        (job_id, e.index, e.type, e.line, n)
                        for e, n in zip(events, lines, strict=True)
                    ],
                )
            conn.execute(
                "INSERT INTO search_text (job_id, first_idx, last_idx, text) VALUES (?, ?, ?, ?)",
                (job_id, events[0].index, events[-1].index, appended.text),
            )
        conn.execute(JOB_UPDATE, job_state_values(state))
        return None
    if isinstance(command, SaveChange):
        change = command.change
        if change.superseded is not None:
            conn.execute(
                "DELETE FROM job_changes WHERE user_id = ? AND seq = ?",
                (change.user_id, change.superseded),
            )
        conn.execute(
            "INSERT INTO job_changes (user_id, seq, job_id, kind, line) VALUES (?, ?, ?, ?, ?)",
            (change.user_id, change.seq, change.job_id, change.kind, change.line),
        )
        return None
    if isinstance(command, LoadJob):
        row = conn.execute(
            f"SELECT {JOB_STATE_COLUMNS} FROM jobs WHERE id = ? AND user_id = ?",
            (command.job_id, command.user_id),
        ).fetchone()
        if row is None:
            raise job_not_found()
        return job_state_from_row(row)
    if isinstance(command, Query):
        return conn.execute(command.sql, command.params).fetchall()
    if isinstance(command, Execute):
        return conn.execute(command.sql, command.params).rowcount
    if isinstance(command, OldestQueued):
        row = conn.execute(
            "SELECT id FROM jobs WHERE user_id = ? AND status = 'queued' "
            "ORDER BY created_at, id LIMIT 1",
            (command.user_id,),
        ).fetchone()
        return None if row is None else row[0]
    raise TypeError(f"unknown command {command!r}")


def _incremental_vacuum(pages: int, conn: sqlite3.Connection) -> tuple[None, Published]:
    """Python's sqlite3 steps a row-less PRAGMA only once, and each step of
    ``incremental_vacuum`` frees one page, so it is repeated until the free list is
    empty (inside the writer thread)."""
    for _ in range(pages):
        if conn.execute("PRAGMA freelist_count").fetchone()[0] == 0:
            break
        conn.execute("PRAGMA incremental_vacuum(1)")
    return None, []
