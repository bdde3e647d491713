"""The single SQLite writer: one thread, one connection, group commit.

SQLite allows one writer at a time, and a hop to a thread per statement would cost
more than the statement, so every write of the process goes through this one
thread. Writes that arrive while a commit is running are queued and run together
in the next ``BEGIN IMMEDIATE ... COMMIT``: a hundred concurrent appends cost one
commit, not a hundred. Each operation runs in its own SAVEPOINT, so one request's
409 never rolls back its neighbours; a failing COMMIT (disk full, I/O error) fails
the whole group and publishes nothing.

Operations are plain functions ``op(conn) -> (result, published)`` (a transaction of
``transactions.py`` driven to its end, see ``database.py``); ``published`` lists the
events the operation committed, which the writer hands to ``on_commit`` after
COMMIT, in commit order (and so, per job, in index order).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ...core.errors import Conflict, StreamerError, Unavailable
from ...core.ports import OnCommit
from ...core.stats import Histogram
from ..commands import Published

log = logging.getLogger("streamer.storage")

Op = Callable[[sqlite3.Connection], tuple[Any, Published]]

MAX_GROUP = 2_000
# Operations per commit group: 1 when idle, up to MAX_GROUP.
GROUP_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


@dataclass
class _Pending:
    op: Op
    future: asyncio.Future[Any]


class Writer:
    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="streamer-writer")
        self._conn: sqlite3.Connection | None = None
        self._queue: list[_Pending] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.on_commit: OnCommit | None = None
        self.groups = 0
        self.grouped_ops = 0
        self.failed_groups = 0
        # Operations per committed group, for /metrics: bumped by the writer task (in
        # the event loop, like the counters above), so scrapes need no lock.
        self.group_sizes = Histogram(GROUP_SIZE_BUCKETS)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._executor, self._connect)
        self._task = asyncio.create_task(self._run(), name="streamer-writer")

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        conn = self._conn
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)

    async def submit(self, op: Op) -> Any:
        """Run ``op`` in the next commit group and return its result after COMMIT."""
        if self._closing:
            raise Unavailable("server is shutting down")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(op, future))
        self._wake.set()
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
            try:
                outcomes = await loop.run_in_executor(self._executor, self._commit, group)
            except Exception as exc:  # noqa: BLE001 - the writer must outlive any failure
                # A dead writer task would hang every later write; fail this group
                # (nothing of it was committed or published) and keep serving.
                log.error("commit of %d operations failed: %r", len(group), exc)
                self.failed_groups += 1
                error = _storage_error(exc)
                for pending in group:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                continue
            self.groups += 1
            self.grouped_ops += len(group)
            self.group_sizes.observe(len(group))
            for pending, (ok, value, published) in zip(group, outcomes, strict=True):
                if ok and self.on_commit is not None:
                    for job_id, events in published:
                        self.on_commit(job_id, events)
                if pending.future.done():  # the caller was cancelled
                    continue
                if ok:
                    pending.future.set_result(value)
                else:
                    pending.future.set_exception(value)

    def _commit(self, group: list[_Pending]) -> list[tuple[bool, Any, Published]]:
        """In the writer thread: one transaction, one savepoint per operation."""
        conn = self._conn
        assert conn is not None
        outcomes: list[tuple[bool, Any, Published]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for pending in group:
                conn.execute("SAVEPOINT op")
                try:
                    value, published = pending.op(conn)
                except StreamerError as exc:
                    conn.execute("ROLLBACK TO op")
                    outcomes.append((False, exc, []))
                except sqlite3.IntegrityError as exc:
                    conn.execute("ROLLBACK TO op")
                    outcomes.append((False, _integrity_error(exc), []))
                except (sqlite3.OperationalError, OSError):
                    raise  # disk full, I/O error: the whole group fails
                except Exception as exc:  # noqa: BLE001 - one request's bug, not its neighbours'
                    log.exception("write operation failed")
                    conn.execute("ROLLBACK TO op")
                    outcomes.append((False, StreamerError(f"internal error: {exc!r}"), []))
                else:
                    outcomes.append((True, value, published))
                conn.execute("RELEASE op")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return outcomes


def _storage_error(exc: Exception) -> StreamerError:
    text = str(exc)
    if "full" in text:
        error = Unavailable("storage is full; the append was not stored", reason="disk_full")
        error.status = 507
        error.title = "Insufficient Storage"
        return error
    error = Unavailable("storage error; the write was not stored", reason="storage")
    error.headers["Retry-After"] = "1"
    return error


def _integrity_error(exc: sqlite3.IntegrityError) -> StreamerError:
    return Conflict(f"conflicts with stored data: {exc}")
