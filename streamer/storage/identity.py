"""Users, API keys and server secrets, for every backend (``ports.Identity``)."""

from __future__ import annotations

from collections.abc import Collection

from ..core.models import APIKey, User
from . import transactions as txn
from .commands import Database
from .guards import findable, storable
from .rows import KEY_COLUMNS, USER_COLUMNS, USER_COLUMNS_U, key_from_row, user_from_row


class Identity:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._secrets: dict[str, bytes] = {}

    async def create_user(self, name: str, email: str) -> User:
        storable("name", name)
        storable("email", email)
        return await self.db.transact(txn.create_user(name, email))

    async def count_users(self) -> int:
        rows = await self.db.fetch("SELECT count(*) FROM users")
        return int(rows[0][0])

    async def get_user_by_email(self, email: str) -> User | None:
        if not findable(email):
            return None
        rows = await self.db.fetch(f"SELECT {USER_COLUMNS} FROM users WHERE email = ?", (email,))
        return user_from_row(rows[0]) if rows else None

    async def get_user(self, user_id: int) -> User | None:
        rows = await self.db.fetch(f"SELECT {USER_COLUMNS} FROM users WHERE id = ?", (user_id,))
        return user_from_row(rows[0]) if rows else None

    async def list_users(self) -> list[User]:
        rows = await self.db.fetch(f"SELECT {USER_COLUMNS} FROM users ORDER BY id")
        return [user_from_row(row) for row in rows]

    async def deactivate_user(self, email: str) -> User | None:
        if not findable(email):
            return None
        return await self.db.transact(txn.deactivate_user(email))

    async def server_secret(self, name: str) -> bytes:
        """Created once per database, then kept: a secret never changes."""
        cached = self._secrets.get(name)
        if cached is None:
            rows = await self.db.fetch("SELECT value FROM secrets WHERE name = ?", (name,))
            cached = bytes(rows[0][0]) if rows else await self.db.transact(txn.create_secret(name))
            self._secrets[name] = cached
        return cached

    async def create_key(self, user_id: int, name: str, prefix: str, key_hash: str) -> APIKey:
        storable("name", name)
        return await self.db.transact(txn.create_key(user_id, name, prefix, key_hash))

    async def list_keys(self, user_id: int) -> list[APIKey]:
        rows = await self.db.fetch(
            f"SELECT {KEY_COLUMNS} FROM api_keys WHERE user_id = ? ORDER BY id", (user_id,)
        )
        return [key_from_row(row) for row in rows]

    async def get_key(self, key_id: int) -> APIKey | None:
        rows = await self.db.fetch(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,))
        return key_from_row(rows[0]) if rows else None

    async def revoke_key(self, key_id: int) -> bool:
        return await self.db.transact(txn.revoke_key(key_id))

    async def key_candidates(self, prefix: str) -> list[tuple[str, int, User]]:
        if not findable(prefix):
            return []
        # Every request: no cache (ports.py, guarantee 8), so it must be cheap.
        rows = await self.db.point(
            f"SELECT k.key_hash, k.id, {USER_COLUMNS_U} FROM api_keys k "
            "JOIN users u ON u.id = k.user_id "
            "WHERE k.prefix = ? AND k.revoked_at IS NULL AND u.active",
            (prefix,),
        )
        return [(row[0], row[1], user_from_row(row[2:])) for row in rows]

    async def active_keys(self, key_ids: Collection[int]) -> set[int]:
        if not key_ids:
            return set()
        condition, ids = self.db.id_list("k.id", key_ids)
        rows = await self.db.fetch(
            "SELECT k.id FROM api_keys k JOIN users u ON u.id = k.user_id "
            f"WHERE {condition} AND k.revoked_at IS NULL AND u.active",
            (ids,),
        )
        return {row[0] for row in rows}

    async def touch_key(self, key_id: int, when: str) -> None:
        await self.db.transact(txn.touch_key(key_id, when))
