"""Every write the service makes, each one transaction, written once for both backends.

Each function returns a generator that yields ``commands`` and returns ``(result,
published)``; ``Database.transact`` runs it. What a write decides about a job is
``journal``'s, and which change of the feed it records is ``changes``'; what is here
is the order of reads and writes around them. A change is recorded in the same
transaction as the write it describes, before the job's row is saved (the row keeps
the feed's bookkeeping). Lock order, on PostgreSQL: a job's row, then its user's
change counter, never the other way round.
"""

from __future__ import annotations

import secrets
from collections.abc import Generator, Sequence
from typing import Any

from ..core import changes, durable, journal
from ..core.changes import ChangePolicy
from ..core.durable import AppendOutcome, AppendRequest, Config, ForkPlan, Stream, View
from ..core.errors import Conflict, Gone, NotFound, job_not_found
from ..core.journal import Appended, JobState
from ..core.models import APIKey, Event, Job, NewEvent, User, utcnow
from ..core.producers import Position
from ..core.redact import Rules
from .change_log import appended_change, insert_job, record_change
from .commands import (
    Command,
    Execute,
    LoadJob,
    OldestQueued,
    Published,
    Query,
    SaveJob,
    Transaction,
)
from .rows import (
    JOB_STATE_COLUMNS,
    SECTION_COLUMNS,
    STREAM_COLUMNS,
    USER_COLUMNS,
    VIEW_COLUMNS,
    job_state_from_row,
    section_values,
    stream_from_row,
    user_from_row,
    view_from_row,
)


def create_user(name: str, email: str) -> Transaction[User]:
    now = utcnow()
    rows = yield Query(
        "INSERT INTO users (name, email, active, created_at) VALUES (?, ?, TRUE, ?) RETURNING id",
        (name, email, now),
    )
    return User(rows[0][0], name, email, True, now), []


def deactivate_user(email: str) -> Transaction[User | None]:
    rows = yield Query(
        f"UPDATE users SET active = FALSE WHERE email = ? RETURNING {USER_COLUMNS}", (email,)
    )
    return (user_from_row(rows[0]) if rows else None), []


def create_key(user_id: int, name: str, prefix: str, key_hash: str) -> Transaction[APIKey]:
    now = utcnow()
    rows = yield Query(
        "INSERT INTO api_keys (user_id, name, prefix, key_hash, created_at) "
        "VALUES (?, ?, ?, ?, ?) RETURNING id",
        (user_id, name, prefix, key_hash, now),
    )
    return APIKey(rows[0][0], user_id, name, prefix, now, None, True), []


def revoke_key(key_id: int) -> Transaction[bool]:
    changed = yield Execute(
        "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
        (utcnow(), key_id),
    )
    return changed == 1, []


def touch_key(key_id: int, when: str) -> Transaction[None]:
    yield Execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (when, key_id))
    return None, []


def create_secret(name: str) -> Transaction[bytes]:
    """Insert a fresh secret unless another process got there first; read the winner."""
    yield Execute(
        "INSERT INTO secrets (name, value, created_at) VALUES (?, ?, ?) "
        "ON CONFLICT (name) DO NOTHING",
        (name, secrets.token_bytes(32), utcnow()),
    )
    rows = yield Query("SELECT value FROM secrets WHERE name = ?", (name,))
    return bytes(rows[0][0]), []


def create_job(
    user_id: int,
    name: str | None,
    metadata: dict[str, Any],
    policy: ChangePolicy,
    secrets: Sequence[str] = (),
    rules: Rules | None = None,
) -> Transaction[Job]:
    """A queued job. With ``rules``, its name and metadata are redacted (with its own
    ``secrets`` too), and the secrets are stored sealed, for its appends."""
    redactor = None if rules is None else rules.for_secrets(secrets)
    state = JobState(journal.new_job(user_id, name, metadata, utcnow(), redactor))
    state.secrets = None if rules is None else rules.seal(secrets)
    published = yield from insert_job(state, policy)
    return state.job, published


def append(
    user_id: int,
    job_id: str,
    events: Sequence[NewEvent],
    expected_index: int | None,
    byte_limit: int | None,
    policy: ChangePolicy,
    rules: Rules | None = None,
    section_limit: int | None = None,
) -> Transaction[list[Event]]:
    state = yield LoadJob(user_id, job_id)
    sealed, status = state.secrets, state.job.status
    appended = journal.append(
        state,
        events,
        utcnow(),
        expected_index=expected_index,
        byte_limit=byte_limit,
        redactor=None if rules is None else rules.for_job(sealed),
        section_limit=section_limit,
    )
    published: Published = [(job_id, appended.events)]
    published += yield from appended_change(state, status, policy)
    yield from _save(state, appended)
    if rules is not None and state.secrets is None:
        rules.forget(sealed)
    return appended.events, published


def update_job(
    user_id: int, job_id: str, patch: dict[str, Any], policy: ChangePolicy
) -> Transaction[Job]:
    state = yield LoadJob(user_id, job_id)
    appended = journal.change(state, patch, utcnow())
    published: Published = [(job_id, appended.events)] if appended else []
    published += yield from record_change(state, changes.UPDATED, policy)
    yield from _save(state, appended)
    return state.job, published


SECTIONS_AT_ONCE = 500  # rows per statement: 13 parameters each, far below any limit
UPSERT_SECTIONS = (
    "INSERT INTO sections (job_id, {columns}) VALUES {rows} "
    "ON CONFLICT (job_id, id) DO UPDATE SET end_index = excluded.end_index, "
    "end_line = excluded.end_line, finished_at = excluded.finished_at, "
    "collapsed = excluded.collapsed"
)


def _save(state: JobState, appended: Appended | None) -> Generator[Command, Any, None]:
    """The job's row and events, then the sections the events opened or closed (one
    statement per ``SECTIONS_AT_ONCE``; none for the appends that change none)."""
    yield SaveJob(state, appended)
    touched = appended.sections if appended is not None else []
    for start in range(0, len(touched), SECTIONS_AT_ONCE):
        chunk = touched[start : start + SECTIONS_AT_ONCE]
        row = "(" + ", ".join(["?"] * 13) + ")"
        sql = UPSERT_SECTIONS.format(columns=SECTION_COLUMNS, rows=", ".join([row] * len(chunk)))
        params = [value for s in chunk for value in section_values(state.job.id, s)]
        yield Execute(sql, params)


def claim_job(user_id: int, policy: ChangePolicy) -> Transaction[Job | None]:
    job_id = yield OldestQueued(user_id)
    if job_id is None:
        return None, []
    return (yield from update_job(user_id, job_id, journal.CLAIM, policy))


def delete_job(user_id: int, job_id: str, policy: ChangePolicy) -> Transaction[None]:
    forks = yield Query("SELECT 1 FROM streams WHERE source_id = ? LIMIT 1", (job_id,))
    if forks:
        raise Conflict("forks of this stream read its events: delete them first")
    rows = yield Query(
        f"DELETE FROM jobs WHERE id = ? AND user_id = ? RETURNING {JOB_STATE_COLUMNS}",
        (job_id, user_id),
    )
    if not rows:
        raise job_not_found()
    published = yield from record_change(job_state_from_row(rows[0]), changes.DELETED, policy)
    return None, published


def delete_finished_jobs(before: str, limit: int, policy: ChangePolicy) -> Transaction[int]:
    """Final jobs finished before ``before``, except the sources of forks (whose events
    the forks read); each one's ``deleted`` change."""
    rows = yield Query(
        "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE status IN "
        "('completed', 'failed', 'cancelled') AND coalesce(finished_at, updated_at) < ? "
        "AND NOT EXISTS (SELECT 1 FROM streams WHERE streams.source_id = jobs.id) LIMIT ?) "
        f"RETURNING {JOB_STATE_COLUMNS}",
        (before, limit),
    )
    published: Published = []
    # Users' counters in one order, so two sweeps cannot wait on each other's.
    for state in sorted(map(job_state_from_row, rows), key=lambda s: (s.job.user_id, s.job.id)):
        published += yield from record_change(state, changes.DELETED, policy)
    return len(rows), published


# Durable Streams -----------------------------------------------------------------------

FIND_STREAM = (
    f"SELECT {VIEW_COLUMNS} FROM streams s JOIN jobs j ON j.id = s.job_id "
    "WHERE s.user_id = ? AND s.path = ?"
)
FIND_JOB = (
    f"SELECT {VIEW_COLUMNS} FROM jobs j LEFT JOIN streams s ON s.job_id = j.id "
    "WHERE j.id = ? AND j.user_id = ?"
)


def create_stream(
    user_id: int,
    path: str,
    config: Config,
    fork: ForkPlan | None,
    source: str | None,
    events: list[NewEvent],
    byte_limit: int | None,
    policy: ChangePolicy,
) -> Transaction[tuple[bool, View]]:
    """A new stream at ``path`` (True), or the one there if its configuration is the
    same (False); 409 otherwise. An expired stream at the path is removed first."""
    now = utcnow()
    published: Published = []
    rows = yield Query(FIND_STREAM, (user_id, path))
    if not rows:
        rows = yield Query(FIND_JOB, (path, user_id))  # a job, addressed by its id
    if rows:
        view = view_from_row(rows[0])
        stream = view.stream
        if stream is not None and stream.deleted:
            raise Conflict("this path's stream was deleted and its forks still read it")
        if stream is None or not durable.expired(stream):
            if durable.same_config(durable.config_of(view), config):
                return (False, view), []
            raise Conflict("a stream with another configuration exists at this path")
        (soft, _), gone = yield from _remove(stream.job_id, policy)
        published += gone
        if soft:
            raise Conflict("this path's stream expired and its forks still read it")
    source_id = None
    if source is not None:
        found = yield Query(FIND_STREAM, (user_id, source))
        if not found or view_from_row(found[0]).stream is None:
            raise NotFound("the source stream was not found")
        if view_from_row(found[0]).stream.deleted:  # type: ignore[union-attr]
            raise Conflict("the source stream was deleted")
        source_id = found[0][0]
    job = journal.new_job(user_id, path, {}, now)
    base = fork.base if fork is not None else 0
    stream = Stream(
        job.id,
        user_id,
        path,
        config.content_type,
        config.ttl,
        config.expires_at,
        now,
        None,
        source_id,
        base,
        config.fork_spec,
    )
    state = journal.JobState(job)
    job.event_count = base  # a fork starts where its source's prefix ends
    published += yield from insert_job(state, policy)
    yield Execute(
        "INSERT INTO streams (job_id, user_id, path, content_type, ttl_seconds, expires_at, "
        "touched_at, source_id, fork_index, fork_spec) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            job.id,
            user_id,
            path,
            stream.content_type,
            stream.ttl,
            stream.expires_at,
            now,
            source_id,
            base,
            stream.fork_spec,
        ),
    )
    first = [fork.first] if fork is not None and fork.first is not None else []
    closing = [NewEvent("complete", None, True)] if config.closed else []
    new = [*first, *events, *closing]
    status = job.status
    appended = journal.append(state, new, now, byte_limit=byte_limit) if new else None
    if appended is not None:
        published.append((job.id, appended.events))
        published += yield from appended_change(state, status, policy)
    if appended is not None or base:
        yield from _save(state, appended)
    return (True, View(job, stream)), published


def append_stream(
    user_id: int, job_id: str, request: AppendRequest, byte_limit: int | None, policy: ChangePolicy
) -> Transaction[AppendOutcome]:
    """``durable.append`` with the stream's rows loaded (the job's locked), then its
    events, the producer's position and the stream's columns stored together."""
    state = yield LoadJob(user_id, job_id)
    rows = yield Query(f"SELECT {STREAM_COLUMNS} FROM streams s WHERE s.job_id = ?", (job_id,))
    if not rows:
        raise NotFound("stream not found")
    stream = stream_from_row(rows[0])
    if stream.deleted:
        raise Gone("the stream was deleted")
    stored = None
    claim = request.claim
    if claim is not None:
        found = yield Query(
            "SELECT epoch, seq FROM producers WHERE job_id = ? AND producer = ?",
            (job_id, claim.producer),
        )
        stored = Position(found[0][0], found[0][1]) if found else None
    seq, status = stream.seq, state.job.status
    outcome = durable.append(stream, state, stored, request, utcnow(), byte_limit=byte_limit)
    published: Published = []
    if outcome.appended is not None:
        published = [(job_id, outcome.appended.events)]
        published += yield from appended_change(state, status, policy)
        yield from _save(state, outcome.appended)
    if outcome.position is not None and claim is not None:
        yield Execute(
            "INSERT INTO producers (job_id, producer, epoch, seq) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (job_id, producer) DO UPDATE SET epoch = excluded.epoch, "
            "seq = excluded.seq",
            (job_id, claim.producer, outcome.position.epoch, outcome.position.seq),
        )
    if stream.seq != seq or (stream.ttl is not None and outcome.appended is not None):
        yield Execute(
            "UPDATE streams SET stream_seq = ?, touched_at = ? WHERE job_id = ?",
            (stream.seq, stream.touched_at, job_id),
        )
    return outcome, published


def delete_stream(
    user_id: int, job_id: str, policy: ChangePolicy
) -> Transaction[tuple[bool, list[str]]]:
    """(soft-deleted, ids of the jobs removed): a stream whose forks read it is only
    marked deleted; removing a fork removes its marked sources that nothing else reads."""
    rows = yield Query(
        f"SELECT {STREAM_COLUMNS} FROM streams s WHERE s.job_id = ? AND s.user_id = ?",
        (job_id, user_id),
    )
    if not rows:
        raise NotFound("stream not found")
    if stream_from_row(rows[0]).deleted:
        raise Gone("the stream was deleted")
    return (yield from _remove(job_id, policy))


def expire_stream(
    user_id: int, job_id: str, policy: ChangePolicy
) -> Transaction[tuple[bool, list[str]] | None]:
    """``delete_stream`` for a stream whose time is up (None: it is not, any more)."""
    rows = yield Query(
        f"SELECT {STREAM_COLUMNS} FROM streams s WHERE s.job_id = ? AND s.user_id = ?",
        (job_id, user_id),
    )
    if not rows:
        return None, []
    stream = stream_from_row(rows[0])
    if stream.deleted or not durable.expired(stream):
        return None, []
    return (yield from _remove(job_id, policy))


def _remove(
    job_id: str, policy: ChangePolicy
) -> Generator[Any, Any, tuple[tuple[bool, list[str]], Published]]:
    """((soft-deleted, ids removed), the ``deleted`` changes of the jobs removed)."""
    forks = yield Query("SELECT 1 FROM streams WHERE source_id = ? LIMIT 1", (job_id,))
    if forks:
        yield Execute("UPDATE streams SET deleted = TRUE WHERE job_id = ?", (job_id,))
        return (True, []), []
    removed: list[str] = []
    published: Published = []
    current: str | None = job_id
    while current is not None:
        rows = yield Query("SELECT source_id FROM streams WHERE job_id = ?", (current,))
        gone = yield Query(
            f"DELETE FROM jobs WHERE id = ? RETURNING {JOB_STATE_COLUMNS}", (current,)
        )
        if gone:
            published += yield from record_change(
                job_state_from_row(gone[0]), changes.DELETED, policy
            )
        removed.append(current)
        source = rows[0][0] if rows else None
        current = None
        if source is not None:
            marked = yield Query(
                "SELECT 1 FROM streams s WHERE s.job_id = ? AND s.deleted AND NOT EXISTS "
                "(SELECT 1 FROM streams f WHERE f.source_id = s.job_id)",
                (source,),
            )
            current = source if marked else None
    return (False, removed), published


def touch_stream(job_id: str, now: str) -> Transaction[None]:
    """A read restarts a stream's sliding TTL."""
    yield Execute("UPDATE streams SET touched_at = ? WHERE job_id = ?", (now, job_id))
    return None, []
