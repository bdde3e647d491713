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

from ..core import keys
from ..core.ports import Storage
from ..server.settings import Settings, load_settings
from ..storage import is_postgres, open_storage
from .terminal import EXIT_FAILED, EXIT_OK, EXIT_USAGE, print_rows


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
        return EXIT_OK

    async def deactivate(storage: Storage) -> int:
        user = await storage.identity.deactivate_user(args.email)
        if user is None:
            print(f"streamer: no user with email {args.email}", file=sys.stderr)
            return EXIT_FAILED
        print(
            f"deactivated user {user.id} ({user.email}): its keys are refused now and its "
            "open streams close within a few seconds"
        )
        return EXIT_OK

    async def create(storage: Storage) -> int:
        if await storage.identity.get_user_by_email(args.email) is not None:
            print(f"streamer: a user with email {args.email} already exists", file=sys.stderr)
            return EXIT_USAGE
        user, key = await keys.create_user_with_key(storage.identity, args.name, args.email)
        print(f"created user {user.id} ({user.email}); API key (shown once):")
        print(key)
        return EXIT_OK

    actions = {"create": create, "list": listing, "deactivate": deactivate}
    return asyncio.run(with_storage(load_settings(db=args.db), actions[args.action]))


def cmd_keys(args: argparse.Namespace) -> int:
    async def action(storage: Storage) -> int:
        if args.action == "revoke":
            if await storage.identity.revoke_key(args.key_id):
                print(f"revoked key {args.key_id}")
                return EXIT_OK
            print(f"streamer: no active key with id {args.key_id}", file=sys.stderr)
            return EXIT_FAILED
        user = await storage.identity.get_user_by_email(args.email)
        if user is None:
            print(f"streamer: no user with email {args.email}", file=sys.stderr)
            return EXIT_FAILED
        if args.action == "create":
            key = await keys.issue_key(storage.identity, user.id, args.name)
            print(f"created key {args.name!r} for {user.email}; shown once:")
            print(key)
            return EXIT_OK
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
        return EXIT_OK

    return asyncio.run(with_storage(load_settings(db=args.db), action))


def cmd_gc(args: argparse.Namespace) -> int:
    from ..core.retention import parse_duration, sweep

    try:
        age = parse_duration(args.older_than)
    except ValueError as exc:
        print(f"streamer: --older-than: {exc}", file=sys.stderr)
        return EXIT_USAGE

    async def action(storage: Storage) -> int:
        print(
            f"deleted {await sweep(storage.jobs, age)} finished jobs older than {args.older_than}"
        )
        return EXIT_OK

    return asyncio.run(with_storage(load_settings(db=args.db), action))


def cmd_backup(args: argparse.Namespace) -> int:
    from ..storage.sqlite.backup import backup

    settings = load_settings(db=args.db)
    if is_postgres(settings.db_url):
        print("streamer: back up PostgreSQL with pg_dump; `backup` is for SQLite", file=sys.stderr)
        return EXIT_USAGE
    try:
        backup(settings.db_url, args.path)
    except (FileExistsError, OSError, sqlite3.Error) as exc:
        print(f"streamer: backup failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"backed up {settings.db_url} to {args.path}")
    return EXIT_OK
