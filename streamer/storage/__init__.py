"""Storage backends, chosen by the database URL's scheme.

SQL lives here and nowhere else. The transactions and queries are written once
(``transactions.py``, ``identity.py``, ``jobs.py``) over a small ``Database``
interface (``commands.py``); ``sqlite/`` and ``postgres/`` each provide one, with
their schema and the few commands whose best SQL differs. No backend imports the
other.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from ..core.changes import ChangePolicy
from ..core.ports import Storage

# asyncpg is a default dependency; it is missing only after `pip install --no-deps`.
DRIVER_MISSING = "PostgreSQL needs its driver, asyncpg, which is not installed: pip install asyncpg"


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def redact_url(url: str) -> str:
    """The database URL without its password: for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def open_storage(
    url: str,
    *,
    sync: str = "normal",
    pg_pool_size: int = 10,
    policy: ChangePolicy | None = None,
) -> Storage:
    """``postgresql://...`` selects PostgreSQL; anything else is a SQLite file path.

    Each backend's driver is imported only when a URL asks for it. ``policy``: the
    change feed's bounds (the defaults when None).
    """
    if is_postgres(url):
        try:
            from .postgres import PostgresStorage
        except ImportError as exc:
            if exc.name != "asyncpg":
                raise
            raise SystemExit(DRIVER_MISSING) from None
        return PostgresStorage(url, pool_size=pg_pool_size, policy=policy)
    from .sqlite import SQLiteStorage

    path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
    return SQLiteStorage(path, sync, policy)


__all__ = ["Storage", "is_postgres", "open_storage", "redact_url"]
