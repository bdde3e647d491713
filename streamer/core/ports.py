"""What the core needs from storage: narrow interfaces, and the guarantees behind them.

Storage is the source of truth. The hub is only a fast path in front of it, so every
guarantee of the API ("no gap, no duplicate, survives kill -9") rests on these
promises, which the contract suite in ``tests/storage/`` checks on
every backend:

1. ``append`` returns only after the events are durably committed (as durable as
   the configured sync mode). Indexes are assigned inside the write transaction:
   per job they are exactly 0, 1, 2, ... with no gap and no reuse, and a batch gets
   consecutive indexes. A failed append stores nothing.
2. Commit order equals index order per job: once ``read_events`` can see index
   ``n``, it can see every index below ``n``.
3. ``on_commit`` (the hub's publish) is called after commit, in index order, with
   exactly the events of that commit; never for a failed append. In a cluster
   (PostgreSQL), per job, this process's hub receives one increasing, gap-free run:
   ``on_commit`` may include other processes' events that sit between its own, and
   never repeats one ``watch()`` already yielded.
4. After a ``complete`` event nothing more can be appended to that job.
5. Every read is scoped by ``user_id``: another user's job behaves as missing.
6. ``watch`` yields events other processes committed (PostgreSQL); a backend that
   only ever has one process yields nothing.
7. Each job keeps ``byte_count``, the bytes of its stored event lines, updated in
   the append's own transaction; ``append(..., byte_limit=N)`` refuses (413, nothing
   stored) a write that would take it past ``N``, except a lone ``complete`` event
   with short data, so a job at its cap can always be finished.
8. Credentials are read from the database on every check (``key_candidates``,
   ``active_keys``), never cached: a revocation or deactivation made by any process
   counts on every node at the next request.
9. With ``rules``, an append stores and publishes only redacted events, and a job's
   own secrets are stored sealed and dropped (set to NULL) when the job ends: no
   registered secret is ever written to the database in plain form.
10. Every event is indexed in its append's transaction: its raw line (``lineno``),
   its plain text for ``search``, and the sections it opens or closes, so the
   section index and search are exact under concurrent appends on every node.
11. Every write that creates, changes, grows or deletes a job records its change of
    the feed (``changes.py``) in the same transaction, under the user's next
    sequence number; the user's changes commit in sequence order on every node, and
    ``on_commit`` / ``watch`` publish them under the key ``user:<id>`` like a job's
    events under its id (the changes as entries indexed by sequence number).

A backend is a ``Storage``: its ``identity`` (users, keys, secrets) and its ``jobs``
(jobs and their event logs), plus the connection's life cycle and the cross-process
feed. Code that needs one capability takes the narrow interface (``EventReader``,
``KeyReader``) rather than the whole storage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Sequence
from typing import Any, Protocol

from .durable import AppendOutcome, AppendRequest, Config, ForkPlan, View
from .models import APIKey, Event, Job, NewEvent, User
from .redact import Rules
from .search import Found, Matcher
from .sections import Section

OnCommit = Callable[[str, Sequence[Event]], None]


class KeyReader(Protocol):
    """What checking a credential needs."""

    async def key_candidates(self, prefix: str) -> list[tuple[str, int, User]]:
        """(key_hash, key id, owner) of every unrevoked key with this prefix whose owner
        is active. The caller compares hashes in constant time; storage only narrows
        the search."""

    async def active_keys(self, key_ids: Collection[int]) -> set[int]:
        """Which of ``key_ids`` are unrevoked and belong to an active user: one query.

        Open streams remember the key they were opened with (a stream token, the key
        that minted it); a periodic check closes those whose key is no longer here.
        """

    async def server_secret(self, name: str) -> bytes:
        """A random 32-byte secret kept in the database, created on first use.

        Every process on the same database gets the same bytes, so a stream token
        minted by one node is accepted by all of them.
        """


class Identity(KeyReader, Protocol):
    """Users and their API keys."""

    async def create_user(self, name: str, email: str) -> User: ...

    async def count_users(self) -> int: ...

    async def get_user_by_email(self, email: str) -> User | None: ...

    async def get_user(self, user_id: int) -> User | None: ...

    async def list_users(self) -> list[User]:
        """Every user, active or not, oldest first (for ``streamer users list``)."""

    async def deactivate_user(self, email: str) -> User | None:
        """Mark the user inactive (idempotent); ``None`` when no user has that email.

        An inactive user's keys stop authenticating at once (``key_candidates`` and
        ``active_keys`` join on ``users.active``); nothing is deleted, so its jobs and
        keys remain for audit.
        """

    async def create_key(self, user_id: int, name: str, prefix: str, key_hash: str) -> APIKey: ...

    async def list_keys(self, user_id: int) -> list[APIKey]: ...

    async def get_key(self, key_id: int) -> APIKey | None:
        """One key by id, revoked or not (never its secret: only the hash is stored)."""

    async def revoke_key(self, key_id: int) -> bool:
        """``True`` if this call revoked it; ``False`` if it was revoked or never existed."""

    async def touch_key(self, key_id: int, when: str) -> None:
        """Set the key's ``last_used_at``. Callers throttle this to once a minute per
        key, so a busy key costs one write a minute, not one per request."""


class EventReader(Protocol):
    """What replaying a job's log needs."""

    async def read_events(self, job_id: str, from_index: int, limit: int) -> list[Event]:
        """Up to ``limit`` stored events with index >= ``from_index``, in order.

        Not scoped by user: callers have already resolved the job with ``get_job``.
        """


class Jobs(EventReader, Protocol):
    """Jobs and their event logs. Every write goes through ``journal``'s rules."""

    async def create_job(
        self,
        user_id: int,
        name: str | None,
        metadata: dict[str, Any],
        *,
        secrets: Sequence[str] = (),
        rules: Rules | None = None,
    ) -> Job:
        """A queued job; with ``rules`` its name and metadata are redacted, and its
        ``secrets`` kept sealed (never in plain form) until it ends. See guarantee 9."""

    async def get_job(self, user_id: int, job_id: str) -> Job:
        """The job, or ``NotFound`` when it is missing or belongs to someone else."""

    async def list_jobs(
        self, user_id: int, status: str | None, limit: int, cursor: tuple[str, str] | None
    ) -> list[Job]:
        """Newest first; ``cursor`` is the (created_at, id) of the last job already seen."""

    async def update_job(self, user_id: int, job_id: str, changes: dict[str, Any]) -> Job:
        """``journal.change`` in one transaction (with the ``complete`` event it may add)."""

    async def claim_job(self, user_id: int) -> Job | None:
        """Atomically move the caller's oldest queued job to running and return it."""

    async def delete_job(self, user_id: int, job_id: str) -> None: ...

    async def delete_finished_jobs(self, before: str, limit: int) -> int:
        """Retention: delete up to ``limit`` final jobs (any user's) that finished before
        ``before`` (an API timestamp), with their events; returns how many.

        Callers loop until it returns 0, so one sweep never holds the writer long.
        """

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
        """``journal.append`` in one transaction; see guarantees 1-4, 7, 9 and 10
        (``section_limit``: the most sections a job's index holds)."""

    async def job_bytes(self, user_id: int, job_id: str) -> int:
        """The job's ``byte_count`` (``NotFound`` like ``get_job``)."""

    async def sections(self, job_id: str) -> list[Section]:
        """The job's section index, in start order (guarantee 10). Not scoped by user."""

    async def search(
        self, job_id: str, matcher: Matcher, from_index: int, to_index: int, limit: int
    ) -> tuple[list[Found], dict[int, int], int | None]:
        """Up to ``limit`` lines of events ``from_index`` to ``to_index - 1`` whose
        plain text ``matcher`` matches, in order; the raw line each of their events
        starts on; the index to go on from when the limit stopped it (else ``None``)."""

    async def count_matches(
        self, job_id: str, matcher: Matcher, from_index: int, to_index: int
    ) -> int:
        """How many lines of events ``from_index`` to ``to_index - 1`` match."""

    async def line_of(self, job_id: str, index: int) -> int:
        """The raw-log line event ``index`` starts on (past the end: the next one's)."""

    async def index_of_line(self, job_id: str, line: int) -> tuple[int, int] | None:
        """(index, its first line) of the event holding raw-log line ``line``."""


class Streams(Protocol):
    """Durable Streams: a job with a path, in its user's namespace of paths. Writes go
    through ``durable``'s rules in one transaction each, with the job's events."""

    async def find(self, user_id: int, path: str) -> View | None:
        """The user's stream at ``path``, or the user's job whose id is ``path``."""

    async def fork_origin(self, job_id: str) -> tuple[str, int] | None:
        """(source job id, fork index) of a fork; None for any other job."""

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
        """(created, the stream): idempotent on the same configuration, 409 otherwise."""

    async def append(
        self, user_id: int, job_id: str, request: AppendRequest, byte_limit: int | None = None
    ) -> AppendOutcome:
        """``durable.append``: events, producer position and stream columns together."""

    async def delete(self, user_id: int, job_id: str) -> tuple[bool, list[str]]:
        """(only marked deleted, ids of the jobs removed)."""

    async def expire(self, user_id: int, job_id: str) -> tuple[bool, list[str]] | None:
        """``delete`` if the stream's time is up; None when it is not."""

    async def touch(self, job_id: str) -> None:
        """A read restarts the stream's sliding TTL."""


class ChangeFeed(EventReader, Protocol):
    """The change feed of each user's jobs (``changes.py``); ``read_events`` reads a
    feed by its key, from a sequence number."""

    async def head(self, user_id: int) -> tuple[int, int]:
        """(the user's last sequence number, the floor below which changes are dropped)."""

    async def snapshot(self, user_id: int, limit: int) -> tuple[int, list[Job]]:
        """The user's newest ``limit`` jobs and the head they are current at, read as
        one snapshot: every change up to the head is in the list, none after it."""

    async def pending_growth(self, cutoff_ms: int, limit: int) -> list[tuple[int, str]]: ...

    async def record_growth(self, user_id: int, job_id: str) -> bool: ...


class Storage(Protocol):
    """One database, as one process uses it."""

    on_commit: OnCommit | None

    @property
    def identity(self) -> Identity: ...

    @property
    def jobs(self) -> Jobs: ...

    @property
    def streams(self) -> Streams: ...

    @property
    def changes(self) -> ChangeFeed: ...

    async def open(self) -> None:
        """Connect and migrate (idempotent: safe on every start)."""

    async def close(self) -> None:
        """Finish in-flight commits and release connections."""

    async def ping(self) -> None:
        """Raise ``Unavailable`` when the database cannot answer."""

    def watch(self) -> AsyncIterator[tuple[str, Sequence[Event]]]:
        """Events committed by other processes, for the hub. See guarantee 6."""
        ...
