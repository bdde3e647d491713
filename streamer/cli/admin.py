"""Admin commands: ``users``, ``keys``, ``gc``, ``backup``.

They work on the database directly, like a framework's manage commands, so they
need ``STREAMER_DB`` / ``--db`` to name the same database as the server; the client
commands (``follow``, ``run``, ``jobs``) talk HTTP instead and live in ``cli``.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..core import keys
from ..core.ports import Storage
from ..server.settings import Settings, load_settings
from ..storage import is_postgres, open_storage
from .exits import FAILED, OK, USAGE
from .terminal import print_rows, program


def refuse(message: str) -> int:
    """A refusal on stderr, in the command line's one voice; exit status 1."""
    print(f"streamer: {message}", file=sys.stderr)
    return FAILED


def no_user(email: str) -> int:
    return refuse(f"no user with email {email}; `{program()} users list` shows them all")


async def with_storage(settings: Settings, action: Callable[[Storage], Awaitable[int]]) -> int:
    storage = open_storage(settings.db_url, sync=settings.sync, pg_pool_size=settings.pg_pool_size)
    await storage.open()
    try:
        return await action(storage)
    finally:
        await storage.close()


async def ensure_first_user(settings: Settings) -> str | None:
    """On a database with no users, create one and return its key (shown once)."""

    created: list[str] = []

    async def action(storage: Storage) -> int:
        if await storage.identity.count_users() == 0:
            _, key = await keys.create_user_with_key(storage.identity, "admin", "admin@localhost")
            created.append(key)
        return 0

    await with_storage(settings, action)
    return created[0] if created else None


def cmd_users(args: argparse.Namespace) -> int:
    async def listing(storage: Storage) -> int:
        rows = [
            {
                "id": u.id,
                "name": u.name,
                "email": u.email,
                "active": u.active,
                "created_at": u.created_at,
            }
            for u in await storage.identity.list_users()
        ]
        print_rows(rows, args.json, ["id", "name", "email", "active", "created_at"])
        return OK

    async def deactivate(storage: Storage) -> int:
        before = await storage.identity.get_user_by_email(args.email)
        if before is None:
            return no_user(args.email)
        if not before.active:
            print(f"user {before.id} ({before.email}) was already deactivated")
            return OK
        user = await storage.identity.deactivate_user(args.email)
        assert user is not None  # users are never deleted
        print(
            f"deactivated user {user.id} ({user.email}): their keys are refused now and their "
            "open streams close within a few seconds"
        )
        return OK

    async def create(storage: Storage) -> int:
        if await storage.identity.get_user_by_email(args.email) is not None:
            return refuse(
                f"a user with email {args.email} already exists; give them another key with "
                f"`{program()} keys create --email {args.email} --name NAME`"
            )
        user, key = await keys.create_user_with_key(storage.identity, args.name, args.email)
        print(f"created user {user.id} ({user.email}); their API key, shown only this once:")
        print(key)
        return OK

    actions = {"create": create, "list": listing, "deactivate": deactivate}
    return asyncio.run(with_storage(load_settings(db=args.db), actions[args.action]))


def cmd_keys(args: argparse.Namespace) -> int:
    async def action(storage: Storage) -> int:
        if args.action == "revoke":
            found = await storage.identity.get_key(args.key_id)
            if found is None:
                return refuse(
                    f"no API key with id {args.key_id}; "
                    f"`{program()} keys list --email EMAIL` shows a user's keys"
                )
            if await storage.identity.revoke_key(args.key_id):
                print(
                    f"revoked key {found.id} ({found.name!r}): refused from now on, its open "
                    "streams close within a few seconds"
                )
            else:
                print(f"key {found.id} ({found.name!r}) was already revoked")
            return OK
        user = await storage.identity.get_user_by_email(args.email)
        if user is None:
            return no_user(args.email)
        if args.action == "create":
            key = await keys.issue_key(storage.identity, user.id, args.name)
            print(f"created key {args.name!r} for {user.email}, shown only this once:")
            print(key)
            return OK
        listed = await storage.identity.list_keys(user.id)
        rows = [
            {
                "id": k.id,
                "name": k.name,
                "prefix": k.prefix,
                "created_at": k.created_at,
                "last_used_at": k.last_used_at,
                "active": k.active,
            }
            for k in listed
        ]
        print_rows(
            rows, args.json, ["id", "name", "prefix", "created_at", "last_used_at", "active"]
        )
        return OK

    return asyncio.run(with_storage(load_settings(db=args.db), action))


def cmd_gc(args: argparse.Namespace) -> int:
    from ..core.retention import parse_duration, sweep

    try:
        age = parse_duration(args.older_than)
    except ValueError as exc:
        print(f"streamer gc: --older-than: {exc}", file=sys.stderr)
        return USAGE

    async def action(storage: Storage) -> int:
        print(
            f"deleted {await sweep(storage.jobs, age)} finished jobs older than {args.older_than}"
        )
        return OK

    return asyncio.run(with_storage(load_settings(db=args.db), action))


def cmd_backup(args: argparse.Namespace) -> int:
    from ..storage.sqlite.backup import backup

    settings = load_settings(db=args.db)
    if is_postgres(settings.db_url):
        print(
            "streamer backup: the database is PostgreSQL; back it up with pg_dump "
            "(`backup` copies SQLite files)",
            file=sys.stderr,
        )
        return USAGE
    if not Path(settings.db_url).is_file():
        return refuse(
            f"no SQLite database at {settings.db_url}; give the server's with --db or STREAMER_DB"
        )
    try:
        backup(settings.db_url, args.path)
    except FileExistsError:
        return refuse(f"backup not written: {args.path} already exists; choose a new path")
    except (OSError, sqlite3.Error) as exc:
        return refuse(f"backup of {settings.db_url} to {args.path} failed: {exc}")
    print(f"backed up {settings.db_url} to {args.path}")
    return OK
