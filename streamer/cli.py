"""``streamer ...``: the one entry point. ``main(argv) -> int`` so tests run it in process.

Admin commands (``users``, ``keys``) work on the database directly, like a
framework's manage commands; they need ``STREAMER_DB`` / ``--db`` to name the same
database as the server. Client commands (``follow``, ``run``, ``jobs``) talk HTTP to
``STREAMER_URL`` with ``STREAMER_API_KEY``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from . import auth
from .config import SETTINGS, Settings, load_settings
from .errors import StreamerError
from .storage import Storage, open_storage

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def _serve_parser(sub: Any) -> None:
    serve = sub.add_parser(
        "serve",
        help="run the service",
        description="Run the service. Every setting also reads its environment variable.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="settings (environment variables):\n"
        + "\n".join(f"  {s.env:32} {s.help} (default: {s.default!r})" for s in SETTINGS),
    )
    for setting in SETTINGS:
        if setting.flag:
            serve.add_argument(
                setting.flag, dest=setting.name, type=setting.kind, help=setting.help
            )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)

    users = sub.add_parser("users", help="manage users").add_subparsers(
        dest="action", required=True
    )
    create = users.add_parser("create", help="create a user and print a first API key")
    create.add_argument("--name", required=True)
    create.add_argument("--email", required=True)
    create.add_argument("--db")

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(
        dest="action", required=True
    )
    kcreate = keys.add_parser("create", help="create an API key; printed once, on the last line")
    kcreate.add_argument("--email", required=True)
    kcreate.add_argument("--name", required=True)
    kcreate.add_argument("--db")
    klist = keys.add_parser("list", help="list a user's keys (never the keys themselves)")
    klist.add_argument("--email", required=True)
    klist.add_argument("--json", action="store_true")
    klist.add_argument("--db")
    krevoke = keys.add_parser("revoke", help="revoke an API key by id")
    krevoke.add_argument("key_id", type=int)
    krevoke.add_argument("--db")
    return parser


async def _with_storage(settings: Settings, action: Callable[[Storage], Awaitable[int]]) -> int:
    storage = open_storage(settings.db_url, settings)
    await storage.open()
    try:
        return await action(storage)
    finally:
        await storage.close()


async def ensure_first_user(settings: Settings) -> str | None:
    """On a database with no users, create one and return its key (shown once)."""

    created: list[str] = []

    async def action(storage: Storage) -> int:
        if await storage.count_users() == 0:
            _, key = await auth.create_user_with_key(storage, "admin", "admin@localhost")
            created.append(key)
        return 0

    await _with_storage(settings, action)
    return created[0] if created else None


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import build_server

    settings = load_settings(**{s.name: getattr(args, s.name, None) for s in SETTINGS})
    key = asyncio.run(ensure_first_user(settings))
    print(f"streamer: database {settings.db_url}", file=sys.stderr)
    if key is not None:
        print(
            "streamer: created user admin@localhost; its API key (shown once):\n"
            f"\n    {key}\n\n"
            f"streamer: export STREAMER_API_KEY={key}",
            file=sys.stderr,
        )
    print(f"streamer: dashboard at http://{settings.host}:{settings.port}/", file=sys.stderr)
    build_server(settings, log_level=args.log_level).run()
    return EXIT_OK


def cmd_users(args: argparse.Namespace) -> int:
    async def create(storage: Storage) -> int:
        if await storage.get_user_by_email(args.email) is not None:
            print(f"streamer: a user with email {args.email} already exists", file=sys.stderr)
            return EXIT_USAGE
        user, key = await auth.create_user_with_key(storage, args.name, args.email)
        print(f"created user {user.id} ({user.email}); API key (shown once):")
        print(key)
        return EXIT_OK

    return asyncio.run(_with_storage(load_settings(db=args.db), create))


def cmd_keys(args: argparse.Namespace) -> int:
    async def action(storage: Storage) -> int:
        if args.action == "revoke":
            if await storage.revoke_key(args.key_id):
                print(f"revoked key {args.key_id}")
                return EXIT_OK
            print(f"streamer: no active key with id {args.key_id}", file=sys.stderr)
            return EXIT_FAILED
        user = await storage.get_user_by_email(args.email)
        if user is None:
            print(f"streamer: no user with email {args.email}", file=sys.stderr)
            return EXIT_FAILED
        if args.action == "create":
            key = await auth.issue_key(storage, user.id, args.name)
            print(f"created key {args.name!r} for {user.email}; shown once:")
            print(key)
            return EXIT_OK
        keys = await storage.list_keys(user.id)
        rows = [
            {
                "id": k.id,
                "name": k.name,
                "prefix": k.prefix,
                "created_at": k.created_at,
                "last_used_at": k.last_used_at,
                "active": k.active,
            }
            for k in keys
        ]
        print_rows(
            rows, args.json, ["id", "name", "prefix", "created_at", "last_used_at", "active"]
        )
        return EXIT_OK

    return asyncio.run(_with_storage(load_settings(db=args.db), action))


def print_rows(rows: list[dict[str, Any]], as_json: bool, columns: Sequence[str]) -> None:
    """A readable table for people, or a JSON array for scripts."""
    if as_json:
        import orjson

        print(orjson.dumps(rows).decode())
        return
    cells = [[str(c).upper() for c in columns]]
    cells += [["-" if row.get(c) is None else str(row[c]) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": cmd_serve,
    "users": cmd_users,
    "keys": cmd_keys,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) and EXIT_USAGE
    try:
        return COMMANDS[args.command](args)
    except StreamerError as exc:
        print(f"streamer: {exc.detail}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return 130


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
