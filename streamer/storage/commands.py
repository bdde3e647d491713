"""How a transaction talks to a database, written once for every backend.

A write transaction is a generator (``transactions.py``): it yields commands and
receives their results, and returns ``(result, published)``. Each backend runs it
with its own driver: the SQLite writer thread synchronously, inside the savepoint of
its commit group; PostgreSQL with ``await`` inside one transaction. So the order of
reads and writes in a transaction, and every decision taken between them, exists
once; a backend only says how each command becomes SQL on its engine.

Most commands are plain SQL with ``?`` placeholders (``Query``, ``Execute``);
PostgreSQL's driver numbers them. Four are dialect-level, because the best SQL
for them differs: ``LoadJob`` (PostgreSQL locks the row), ``SaveJob`` (PostgreSQL
inserts the events, updates the job and notifies other nodes in one round trip),
``SaveChange`` (the same for a change of the feed) and ``OldestQueued``
(PostgreSQL skips rows another claim holds).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ..core.changes import Change
from ..core.journal import Appended, JobState
from ..core.models import Event

T = TypeVar("T")
# (key, entries) committed, in index order: a job's events, or a feed's changes
# (key ``user:<id>``, ``core.changes``) as entries indexed by their sequence number.
Published = list[tuple[str, list[Event]]]


@dataclass(frozen=True)
class Query:
    """Rows of a SELECT (or of a statement with RETURNING)."""

    sql: str
    params: Sequence[Any] = ()


@dataclass(frozen=True)
class Execute:
    """A statement; the result is the number of rows it changed."""

    sql: str
    params: Sequence[Any] = ()


@dataclass(frozen=True)
class LoadJob:
    """The caller's job as a ``JobState`` (``NotFound`` otherwise), locked until commit
    where other writers could change it meanwhile."""

    user_id: int
    job_id: str


@dataclass(frozen=True)
class SaveJob:
    """Store the state's columns, and the appended events if any."""

    state: JobState
    appended: Appended | None


@dataclass(frozen=True)
class SaveChange:
    """Store a change of the feed, delete the ``grew`` change it supersedes, and (in a
    cluster) tell the other nodes."""

    change: Change


@dataclass(frozen=True)
class OldestQueued:
    """The id of the user's oldest queued job that no concurrent claim holds, or None."""

    user_id: int


Command = Query | Execute | LoadJob | SaveJob | SaveChange | OldestQueued
Transaction = Generator[Command, Any, tuple[T, Published]]


class Database(Protocol):
    """A backend's engine, as the shared ``Identity`` and ``Jobs`` use it."""

    text_chunk: str
    """A SELECT of one row (text, first index, last index): the ``search_text`` rows
    of job ``?`` (given twice) from the one holding event ``?`` to those starting
    before event ``?``, in index order, joined with ``search.JOIN`` (each engine's
    own aggregate), and the events they span."""

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of one read, on a connection of the read pool."""

    async def point(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of a read that touches a handful of index pages (a key, a job): the
        backend may serve it more cheaply than ``fetch``."""

    async def transact(self, transaction: Transaction[T], job_id: str | None = None) -> T:
        """Run ``transaction`` in one transaction, hand what it published to
        ``on_commit`` after COMMIT, and return its result. ``job_id``: the job whose
        log it may append to (its appends are published in index order)."""

    def id_list(self, column: str, ids: Collection[int]) -> tuple[str, Any]:
        """``column`` is one of ``ids``: a condition with one parameter, and its value,
        whatever the number of ids."""

    async def reclaim(self) -> None:
        """After deletions: give freed space back where the engine does not itself."""


def drive(transaction: Transaction[T], execute: Callable[[Command], Any]) -> tuple[T, Published]:
    """Run ``transaction`` to the end with a synchronous ``execute`` per command."""
    result: Any = None
    try:
        while True:
            result = execute(transaction.send(result))
    except StopIteration as stop:
        value: tuple[T, Published] = stop.value
        return value


async def drive_async(
    transaction: Transaction[T], execute: Callable[[Command], Awaitable[Any]]
) -> tuple[T, Published]:
    """``drive`` with an awaited ``execute``."""
    result: Any = None
    try:
        while True:
            result = await execute(transaction.send(result))
    except StopIteration as stop:
        value: tuple[T, Published] = stop.value
        return value
