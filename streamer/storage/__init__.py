"""Storage backends, chosen by the database URL's scheme."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from ..config import Settings
from .base import Storage

DRIVER_MISSING = "PostgreSQL needs the driver: pip install 'streamer[postgres]'"


def redact_url(url: str) -> str:
    """The database URL without its password: for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def open_storage(url: str, settings: Settings) -> Storage:
    """``postgresql://...`` selects PostgreSQL; anything else is a SQLite file path.

    The PostgreSQL driver is an optional extra, imported only when a URL asks for it,
    so a SQLite-only install never needs it and a missing one names the extra.
    """
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from .postgres import PostgresStorage
        except ImportError as exc:
            if exc.name != "asyncpg":
                raise
            raise SystemExit(DRIVER_MISSING) from None
        return PostgresStorage(url, pool_size=settings.pg_pool_size)
    from .sqlite import SQLiteStorage

    path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
    return SQLiteStorage(path, settings.sync)


__all__ = ["Storage", "open_storage", "redact_url"]
