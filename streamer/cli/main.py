"""``streamer ...``: the one entry point. ``main(argv) -> int`` so tests run it in process.

Here: the parser, ``serve`` and the client commands (``follow``, ``run``, ``jobs``),
which talk HTTP to ``STREAMER_URL`` with ``STREAMER_API_KEY``. The admin commands
that work on the database directly are in ``admin``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ..core.errors import StreamerError
from ..core.models import STATUSES
from ..server import access_log
from ..server.settings import SETTINGS, load_settings
from ..storage import is_postgres, redact_url
from . import admin
from .client import Client, ClientError, load_client_settings, stderr_notice
from .terminal import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    LogPrinter,
    print_rows,
    use_color,
)


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
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes (PostgreSQL only: each worker is a node of the cluster)",
    )


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
    ulist = users.add_parser("list", help="list users (active or not)")
    ulist.add_argument("--json", action="store_true")
    ulist.add_argument("--db")
    deactivate = users.add_parser(
        "deactivate",
        help="deactivate a user: its keys stop working and its open streams close",
    )
    deactivate.add_argument("--email", required=True)
    deactivate.add_argument("--db")

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

    gc = sub.add_parser("gc", help="delete finished jobs older than a duration, with their events")
    gc.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 30d, 12h, 90m")
    gc.add_argument("--db")
    backup = sub.add_parser(
        "backup", help="a consistent online copy of the SQLite database (appends may go on)"
    )
    backup.add_argument("path", help="the copy to write; must not exist")
    backup.add_argument("--db")
    _client_parsers(sub)
    return parser


def _count(raw: str) -> int:
    if not raw.isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {raw!r}")
    return int(raw)


def _client_parsers(sub: Any) -> None:
    """``follow``, ``run`` and ``jobs``: they talk HTTP to a server, sharing these options."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="server URL (STREAMER_URL; default http://127.0.0.1:8000)")
    common.add_argument("--api-key", help="API key (STREAMER_API_KEY)")
    common.add_argument(
        "--retry-for",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="keep retrying through an outage this long before giving up (default: 300)",
    )
    follow = sub.add_parser(
        "follow",
        parents=[common],
        help="print a job's log live; exit 0 if it succeeded, 1 if it failed",
        description="Print a job's log as it is written, reconnecting and resuming by itself. "
        "Several jobs: their lines interleaved, each behind its job's name, over one "
        "connection; the exit status is the worst of theirs.",
    )
    follow.add_argument("job_id", nargs="+")
    start = follow.add_mutually_exclusive_group()
    start.add_argument("--from-index", type=_count, metavar="N", help="start at event N")
    start.add_argument("--tail", type=_count, metavar="N", help="start N events before the end")
    follow.add_argument("--json", action="store_true", help="one event JSON per line")
    follow.add_argument("--timestamps", action="store_true", help="prefix lines with event time")
    follow.add_argument("--color", choices=["auto", "always", "never"], default="auto")

    run = sub.add_parser(
        "run",
        parents=[common],
        help="run a command, streaming its output into a new job",
        usage="streamer run [--name N] [--quiet] -- CMD [ARGS...]",
    )
    run.add_argument("--name", help="job name (default: the command line)")
    run.add_argument("--quiet", "-q", action="store_true", help="do not echo CMD's output here")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="the command and its arguments")

    jobs = sub.add_parser("jobs", help="the caller's jobs").add_subparsers(
        dest="action", required=True
    )
    jlist = jobs.add_parser("list", parents=[common], help="newest first")
    jlist.add_argument("--status", choices=STATUSES)
    jlist.add_argument("--limit", type=_count, default=20, help="at most this many (default 20)")
    jlist.add_argument("--json", action="store_true")
    watch = jobs.add_parser(
        "watch", parents=[common], help="print changes of your jobs as they happen"
    )
    watch.add_argument("--json", action="store_true", help="each change's JSON, one per line")
    watch.add_argument("--after", type=_count, metavar="SEQ", help="from after change SEQ")
    watch.add_argument("--snapshot", action="store_true", help="list the jobs first")
    for action, text in (("show", "one job"), ("cancel", "cancel a queued or running job")):
        parser = jobs.add_parser(action, parents=[common], help=text)
        parser.add_argument("job_id")
        parser.add_argument("--json", action="store_true")


def cmd_serve(args: argparse.Namespace) -> int:
    from ..server.run import build_server, tune_gc
    from ..server.workers import serve_workers

    settings = load_settings(**{s.name: getattr(args, s.name, None) for s in SETTINGS})
    if args.workers < 1:
        print("streamer: --workers must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    if args.workers > 1 and not is_postgres(settings.db_url):
        print(
            "streamer: --workers > 1 needs PostgreSQL (STREAMER_DB=postgresql://...): with "
            "SQLite one process owns the database and live events do not cross processes",
            file=sys.stderr,
        )
        return EXIT_USAGE
    key = asyncio.run(admin.ensure_first_user(settings))
    print(f"streamer: database {redact_url(settings.db_url)}", file=sys.stderr)
    if key is not None:
        print(
            "streamer: created user admin@localhost; its API key (shown once):\n"
            f"\n    {key}\n\n"
            f"streamer: export STREAMER_API_KEY={key}",
            file=sys.stderr,
        )
    print(f"streamer: dashboard at http://{settings.host}:{settings.port}/", file=sys.stderr)
    if args.workers > 1:
        return serve_workers(settings, args.workers, args.log_level)
    server = build_server(settings, log_level=args.log_level)
    tune_gc()
    access_log.configure(settings.log_format)  # before uvicorn's first line, which is JSON too
    server.run()
    return EXIT_OK


def _client(args: argparse.Namespace) -> Client:
    settings = load_client_settings(args.url, args.api_key)
    return Client(settings, retry_for=args.retry_for, notice=stderr_notice)


def cmd_follow(args: argparse.Namespace) -> int:
    if len(args.job_id) > 1:
        from .watch import follow_many

        async def follow_logs() -> int:
            async with _client(args) as client:
                return await follow_many(
                    client,
                    args.job_id,
                    sys.stdout,
                    from_index=args.from_index,
                    tail=args.tail,
                    color=use_color(args.color, sys.stdout),
                    as_json=args.json,
                    err=sys.stderr,
                )

        return asyncio.run(follow_logs())
    args.job_id = args.job_id[0]

    async def follow_log() -> int:
        out = sys.stdout
        printer = LogPrinter(
            out,
            color=use_color(args.color, out),
            timestamps=args.timestamps,
            as_json=args.json,
        )
        success: bool | None = None
        async with _client(args) as client:
            try:
                async for batch in client.events(
                    args.job_id, from_index=args.from_index, tail=args.tail
                ):
                    printer.write(batch)
                    if batch[-1].type == "complete":
                        success = bool(batch[-1].success)
            finally:
                printer.close()
            if success is None:  # 204: already past the end; the job's status says how
                success = (await client.get_job(args.job_id))["status"] == "completed"
        return EXIT_OK if success else EXIT_FAILED

    return asyncio.run(follow_log())


def cmd_run(args: argparse.Namespace) -> int:
    from .runner import Runner

    argv = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not argv:
        print("streamer run: give a command after --, e.g. streamer run -- make", file=sys.stderr)
        return EXIT_USAGE

    async def run() -> int:
        async with _client(args) as client:
            runner = Runner(client, argv, name=args.name, quiet=args.quiet, notice=stderr_notice)
            return await runner.run()

    return asyncio.run(run())


def cmd_jobs(args: argparse.Namespace) -> int:
    from .jobs import jobs_command

    async def run() -> int:
        async with _client(args) as client:
            return await jobs_command(client, args, print_rows)

    return asyncio.run(run())


def exit_status(error: ClientError) -> int:
    """Bad input is a usage error, a conflict a failure; the rest means "cannot reach"."""
    if error.status in (400, 416, 422) or error.usage:
        return EXIT_USAGE
    if error.status == 409:
        return EXIT_FAILED
    return EXIT_UNREACHABLE


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": cmd_serve,
    "users": admin.cmd_users,
    "keys": admin.cmd_keys,
    "follow": cmd_follow,
    "run": cmd_run,
    "jobs": cmd_jobs,
    "gc": admin.cmd_gc,
    "backup": admin.cmd_backup,
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
    except ClientError as exc:
        print(f"streamer: {exc.message}", file=sys.stderr)
        return exit_status(exc)
    except BrokenPipeError:
        return _reader_left()
    except KeyboardInterrupt:
        return 130


def _reader_left() -> int:
    """``streamer follow J | head``: the reader left. Exit like a tool killed by SIGPIPE.

    stdout is pointed at /dev/null first, or the interpreter's final flush fails again.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass  # not a real file descriptor (tests): nothing will flush to it
    return 128 + 13


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
