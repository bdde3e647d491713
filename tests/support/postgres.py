"""A PostgreSQL for tests: a fresh database per test on ``STREAMER_TEST_PG``, dropped
after it; when no server answers, the tests that need one skip with the reason."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest

PG_URL = os.environ.get("STREAMER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
_pg_reachable: dict[str, str] = {}  # "url" -> a working admin URL, or "skip" -> why not


# --- PostgreSQL helpers (also used by tests/test_postgres_*.py) ------------------------


def with_url_part(url: str, *, user: str | None = None, database: str | None = None) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if user is not None:
        host = netloc.rpartition("@")[2]
        netloc = f"{user}@{host}"
    path = f"/{database}" if database is not None else parts.path
    return urlunsplit(parts._replace(netloc=netloc, path=path))


async def pg_admin_url() -> str:
    """A URL that reaches the test server (user postgres, else root), or skip with why."""
    if "url" in _pg_reachable:
        return _pg_reachable["url"]
    if "skip" in _pg_reachable:
        pytest.skip(_pg_reachable["skip"])
    asyncpg = pytest.importorskip("asyncpg", reason="asyncpg is not installed")
    candidates = [PG_URL]
    if "STREAMER_TEST_PG" not in os.environ:
        candidates.append(with_url_part(PG_URL, user="root"))
    problems = []
    for url in candidates:
        try:
            conn = await asyncpg.connect(url, timeout=5)
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            problems.append(f"{url}: {exc}")
            continue
        await conn.close()
        _pg_reachable["url"] = url
        return url
    _pg_reachable["skip"] = "PostgreSQL unreachable (set STREAMER_TEST_PG): " + "; ".join(problems)
    pytest.skip(_pg_reachable["skip"])


async def pg_admin(sql: str, *args: object) -> list[object]:
    """Run one statement on the admin database (never on the database under test)."""
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(await pg_admin_url(), timeout=5)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def pg_database() -> AsyncIterator[tuple[str, str]]:
    """A fresh, empty database ``streamer_test_<random>``: (its URL, its name); dropped after."""
    admin = await pg_admin_url()
    name = f"streamer_test_{secrets.token_hex(6)}"
    await pg_admin(f'CREATE DATABASE "{name}" TEMPLATE template0')
    try:
        yield with_url_part(admin, database=name), name
    finally:
        await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
