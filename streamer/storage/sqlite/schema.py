"""The SQLite schema: versioned migrations, and the pragmas every connection gets.

``synchronous`` and ``busy_timeout`` are per connection, so every connection (the
writer, the readers, the loop thread's point-read connection) runs ``pragmas``.
The PostgreSQL schema (``postgres/schema.py``) keeps the same tables and migration
numbers, column for column.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        email TEXT NOT NULL UNIQUE,
        active INTEGER NOT NULL DEFAULT 1,
        created_at TEXT NOT NULL
    );
    CREATE TABLE api_keys (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        prefix TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        last_used_at TEXT,
        revoked_at TEXT
    );
    CREATE INDEX api_keys_user ON api_keys(user_id);
    CREATE INDEX api_keys_prefix ON api_keys(prefix);
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name TEXT,
        status TEXT NOT NULL,
        metadata TEXT NOT NULL DEFAULT '{}',
        container_id TEXT,
        runner TEXT,
        event_count INTEGER NOT NULL DEFAULT 0,
        last_timestamp TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT
    );
    CREATE INDEX jobs_user ON jobs(user_id, created_at);
    CREATE INDEX jobs_status ON jobs(status, created_at);
    CREATE TABLE events (
        job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        type TEXT NOT NULL,
        line BLOB NOT NULL,
        PRIMARY KEY (job_id, idx)
    ) WITHOUT ROWID;
    """,
    """
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        value BLOB NOT NULL,
        created_at TEXT NOT NULL
    );
    """,
    # 3: the per-job byte counter behind max_job_bytes, filled in for existing jobs.
    """
    ALTER TABLE jobs ADD COLUMN byte_count INTEGER NOT NULL DEFAULT 0;
    UPDATE jobs SET byte_count =
        (SELECT coalesce(sum(length(line)), 0) FROM events WHERE events.job_id = jobs.id);
    """,
    # 4: Durable Streams: a stream is a job with a path in its user's namespace; a fork
    # reads its source's events below fork_index (so a source with forks cannot be
    # deleted, only marked); producers hold each idempotent producer's last append.
    """
    CREATE TABLE streams (
        job_id TEXT PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        path TEXT NOT NULL,
        content_type TEXT NOT NULL,
        ttl_seconds INTEGER,
        expires_at TEXT,
        touched_at TEXT,
        stream_seq TEXT,
        source_id TEXT REFERENCES jobs(id),
        fork_index INTEGER NOT NULL DEFAULT 0,
        fork_spec TEXT,
        deleted INTEGER NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX streams_path ON streams(user_id, path);
    CREATE INDEX streams_source ON streams(source_id);
    CREATE TABLE producers (
        job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        producer TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (job_id, producer)
    ) WITHOUT ROWID;
    """,
    # 5: logs the service understands. Per event, the raw line it starts on; per
    # append, its events' plain text for search (existing events get one row each,
    # their data, escapes and all); per job, the redaction count, the section
    # parser's state and its sealed secrets; and the section index.
    """
    ALTER TABLE jobs ADD COLUMN redactions INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN line_count INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN carry TEXT NOT NULL DEFAULT '';
    ALTER TABLE jobs ADD COLUMN section_state TEXT;
    ALTER TABLE jobs ADD COLUMN secrets BLOB;
    ALTER TABLE events ADD COLUMN lineno INTEGER;
    CREATE TABLE search_text (
        job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        first_idx INTEGER NOT NULL,
        last_idx INTEGER NOT NULL,
        text BLOB NOT NULL,
        PRIMARY KEY (job_id, first_idx)
    ) WITHOUT ROWID;
    INSERT INTO search_text (job_id, first_idx, last_idx, text)
        SELECT job_id, idx, idx, CAST(coalesce(json_extract(line, '$.data'), '') AS BLOB)
        FROM events;
    UPDATE events SET lineno = 1 + coalesce((
        SELECT sum(length(t.text) - length(replace(t.text, char(10), '')))
        FROM search_text t WHERE t.job_id = events.job_id AND t.first_idx < events.idx), 0);
    UPDATE jobs SET line_count = (
        SELECT coalesce(sum(length(text) - length(replace(text, char(10), ''))), 0)
        FROM search_text WHERE search_text.job_id = jobs.id);
    CREATE TABLE sections (
        job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        id INTEGER NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        title TEXT NOT NULL,
        start_index INTEGER NOT NULL,
        start_line INTEGER NOT NULL,
        end_index INTEGER,
        end_line INTEGER,
        depth INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        collapsed INTEGER NOT NULL,
        PRIMARY KEY (job_id, id)
    ) WITHOUT ROWID;
    """,
    # 6: the change feed (core/changes.py): each user's counter and floor, the changes,
    # and each job's bookkeeping (existing jobs start with nothing pending).
    """
    ALTER TABLE jobs ADD COLUMN change_ms INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN change_count INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN grew_seq INTEGER;
    UPDATE jobs SET change_count = event_count;
    CREATE TABLE change_heads (
        user_id INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        floor INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE job_changes (
        user_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        job_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        line BLOB NOT NULL,
        PRIMARY KEY (user_id, seq)
    ) WITHOUT ROWID;
    """,
)


def pragmas(sync: str) -> str:
    return (
        "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON; "
        f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'};"
    )


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations not yet applied; safe to run on every start."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        current = row[0] or 0
        for version, script in enumerate(MIGRATIONS, start=1):
            if version > current:
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return len(MIGRATIONS)
