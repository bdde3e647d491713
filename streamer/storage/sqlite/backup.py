"""Online backups of a SQLite database.

``VACUUM INTO`` takes a consistent snapshot inside one read transaction while appends
go on; a file copy of a live database can tear between the main file and its WAL.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def backup(db_path: str, target: str) -> None:
    """A consistent copy of a live SQLite database at ``target`` (which must not exist)."""
    if Path(target).exists():
        raise FileExistsError(f"{target} already exists; choose a new path")
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        source.execute("PRAGMA busy_timeout=10000")
        source.execute("VACUUM INTO ?", (target,))
    finally:
        source.close()
