"""Storage backends for the contract suites (``tests/storage/``): every test runs once
on SQLite (a temporary file) and once on PostgreSQL (a fresh database, dropped after
it; skipped with the reason when no server answers)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from streamer.storage import Storage, open_storage

from .postgres import pg_database


@dataclass
class Backend:
    """One database; ``instance()`` opens another storage on it, as another process would."""

    name: str
    url: str
    opened: list[Storage] = field(default_factory=list)

    async def instance(self) -> Storage:
        storage = open_storage(self.url)
        await storage.open()
        self.opened.append(storage)
        return storage

    async def close(self, storage: Storage) -> None:
        self.opened.remove(storage)
        await storage.close()

    async def close_all(self) -> None:
        while self.opened:
            await self.opened.pop().close()


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        backend = Backend("sqlite", str(tmp_path / "contract.db"))
        try:
            yield backend
        finally:
            await backend.close_all()
        return
    async with pg_database() as (url, _):
        backend = Backend("postgres", url)
        try:
            yield backend
        finally:
            await backend.close_all()


@pytest.fixture
async def storage(backend: Backend) -> Storage:
    return await backend.instance()


async def new_user(storage: Storage, name: str = "user") -> int:
    user = await storage.identity.create_user(name, f"{name}-{secrets.token_hex(4)}@example.com")
    return user.id
