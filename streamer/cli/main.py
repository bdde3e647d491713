"""``streamer ...``: the one entry point. ``main(argv) -> int`` so tests run it in process.

Here: ``serve`` and the client commands (``follow``, ``run``, ``jobs``), which talk
HTTP to ``STREAMER_URL`` with ``STREAMER_API_KEY``, and the one place where errors
become messages and exit statuses (``exits``). The grammar and ``--help`` are in
``parser``; the admin commands that work on the database directly in ``admin``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence

from ..core.errors import StreamerError
from ..server import access_log
from ..server.settings import Settings, load_settings
from ..server.settings_table import SETTINGS
from ..storage import is_postgres, redact_url
from . import admin, exits
from .client import Client, ClientError, Unreachable, load_client_settings, stderr_notice
from .parser import build_parser
from .terminal import LogPrinter, print_rows, program, use_color


def local_url(host: str, port: int) -> str:
    """The URL a client on this machine uses: a wildcard address becomes loopback."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - naming it, not binding it
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def announce(settings: Settings, key: str | None, db_flag: str | None = None) -> None:
    """What ``serve`` prints before it starts: the database, and the two lines to paste
    into another terminal so the client commands find this server."""
    url = local_url(settings.host, settings.port)
    db = f" --db {db_flag}" if db_flag else ""
    lines = [f"streamer: database {redact_url(settings.db_url)}"]
    if key is not None:
        lines.append(
            "streamer: created the user admin@localhost; its API key is shown only this once, "
            "in the STREAMER_API_KEY line below"
        )
    lines += [
        "streamer: to use this server from another terminal, paste:",
        f"export STREAMER_URL={url}",
    ]
    if key is not None:
        lines.append(f"export STREAMER_API_KEY={key}")
    else:
        lines.append(
            "streamer: and export STREAMER_API_KEY=<the key printed at first start>, or make a "
            f"key with `{program()} keys create{db} --email admin@localhost --name NAME`"
        )
    lines.append(f"streamer: dashboard at {url}/ (sign in with the API key)")
    print("\n".join(lines), file=sys.stderr, flush=True)


def cmd_serve(args: argparse.Namespace) -> int:
    from ..server.run import build_server, tune_gc
    from ..server.workers import serve_workers

    settings = load_settings(**{s.name: getattr(args, s.name, None) for s in SETTINGS})
    if args.workers < 1:
        print("streamer serve: --workers must be at least 1", file=sys.stderr)
        return exits.USAGE
    if args.workers > 1 and not is_postgres(settings.db_url):
        print(
            "streamer serve: --workers > 1 needs PostgreSQL (STREAMER_DB=postgresql://...): "
            "with SQLite one process owns the database and live events do not cross processes",
            file=sys.stderr,
        )
        return exits.USAGE
    announce(settings, asyncio.run(admin.ensure_first_user(settings)), args.db)
    if args.workers > 1:
        return serve_workers(settings, args.workers, args.log_level)
    server = build_server(settings, log_level=args.log_level)
    tune_gc()
    access_log.configure(settings.log_format)  # before uvicorn's first line, which is JSON too
    server.run()
    return exits.OK


def _client(args: argparse.Namespace) -> Client:
    settings = load_client_settings(args.url, args.api_key)
    return Client(settings, retry_for=args.retry_for, notice=stderr_notice)


def cmd_follow(args: argparse.Namespace) -> int:
    from .tail import tail_start

    if args.grep is not None:
        if len(args.job_id) > 1:
            print("streamer follow: --grep follows one job", file=sys.stderr)
            return exits.USAGE
        args.job_id = args.job_id[0]
        return cmd_grep(args)
    if len(args.job_id) > 1:
        from .watch import follow_many

        async def follow_logs() -> int:
            async with _client(args) as client:
                return await follow_many(client, args, sys.stdout, sys.stderr)

        return asyncio.run(follow_logs())
    args.job_id = args.job_id[0]

    async def follow_log() -> int:
        out = sys.stdout
        printer = LogPrinter(
            out,
            color=use_color(args.color, out),
            timestamps=args.timestamps,
            as_json=args.json,
            terminal=out.isatty(),
        )
        success: bool | None = None
        async with _client(args) as client:
            start, tail, skip = args.from_index, args.tail, 0
            if tail is not None and not args.json:  # lines, not events: found here
                (start, skip), tail = await tail_start(client, args.job_id, tail), None
            try:
                async for batch in client.events(args.job_id, from_index=start, tail=tail):
                    if skip and batch[0].data:  # the tail's first line starts inside it
                        batch[0] = dataclasses.replace(batch[0], data=batch[0].data[skip:])
                    skip = 0
                    printer.write(batch)
                    if batch[-1].type == "complete":
                        success = bool(batch[-1].success)
            finally:
                printer.close()
            if success is None:  # 204: already past the end; the job's status says how
                success = (await client.get_job(args.job_id))["status"] == "completed"
        return exits.OK if success else exits.FAILED

    return asyncio.run(follow_log())


def cmd_grep(args: argparse.Namespace) -> int:
    from ..core.errors import StreamerError
    from ..core.search import Query
    from .grep import GrepPrinter, grep

    query = Query(args.grep, args.regex, args.case_sensitive)
    try:
        query.compile()
    except StreamerError as exc:
        print(f"streamer follow: --grep: {exc.detail}", file=sys.stderr)
        return exits.USAGE
    if args.json or args.timestamps or args.tail is not None:
        print("streamer follow: --grep takes no --json, --timestamps or --tail", file=sys.stderr)
        return exits.USAGE

    async def run() -> int:
        printer = GrepPrinter(sys.stdout, use_color(args.color, sys.stdout))
        async with _client(args) as client:
            success = await grep(client, args.job_id, query, printer, args.from_index or 0)
        return exits.OK if success else exits.FAILED

    return asyncio.run(run())


def cmd_run(args: argparse.Namespace) -> int:
    from .runner import Runner

    argv = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not argv:
        print(
            f"streamer run: give a command after --, e.g. {program()} run -- make",
            file=sys.stderr,
        )
        return exits.USAGE

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


def next_step(error: ClientError) -> str | None:
    """What to try after a refusal, when the server's words do not say it."""
    if isinstance(error, Unreachable):
        return (
            "is the server running? Check --url / STREAMER_URL, "
            "or wait longer with --retry-for SECONDS"
        )
    if error.status == 401:
        return (
            "check --api-key / STREAMER_API_KEY; "
            f"`{program()} keys create --email EMAIL --name NAME` makes a new key"
        )
    if error.status == 404:
        return f"`{program()} jobs list` shows your jobs"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage error (or the help)
        return int(exc.code or 0) and exits.USAGE
    try:
        return COMMANDS[args.command](args)
    except StreamerError as exc:  # the admin commands, on the database
        print(f"streamer: {exc.detail}", file=sys.stderr)
        return exits.for_status(exc.status)
    except ClientError as exc:
        print(f"streamer: {exc.message}", file=sys.stderr)
        hint = next_step(exc)
        if hint:
            print(f"streamer: {hint}", file=sys.stderr)
        return exits.for_status(exc.status, exc.usage)
    except SystemExit as exc:  # a setting's value was refused (load_settings)
        if isinstance(exc.code, str):
            print(f"streamer: {exc.code}", file=sys.stderr)
            return exits.USAGE
        raise
    except BrokenPipeError:
        return _reader_left()
    except KeyboardInterrupt:
        return exits.INTERRUPTED


def _reader_left() -> int:
    """``streamer follow J | head``: the reader left. Exit like a tool killed by SIGPIPE.

    stdout is pointed at /dev/null first, or the interpreter's final flush fails again.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass  # not a real file descriptor (tests): nothing will flush to it
    return exits.READER_LEFT


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
