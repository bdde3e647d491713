"""Storage backends, chosen by the database URL's scheme."""

from __future__ import annotations

from ..config import Settings
from .base import Storage


def open_storage(url: str, settings: Settings) -> Storage:
    """``postgresql://...`` selects PostgreSQL; anything else is a SQLite file path."""
    if url.startswith(("postgresql://", "postgres://")):
        raise SystemExit("PostgreSQL support is not available in this version")
    from .sqlite import SQLiteStorage

    path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
    return SQLiteStorage(path, settings.sync)


__all__ = ["Storage", "open_storage"]
