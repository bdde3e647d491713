"""The command line's grammar and its ``--help``: every command, option and exit status.

Options that are settings (``--db``, ``--url``, ``--sync`` ...) take their help, their
environment variable, their default and their choices from the settings table
(``server/settings_table.py``), so ``--db`` says the same on every command that has it.
``tests/cli/test_help.py`` walks every parser and fails on an option without help
or one missing from its usage line.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from ..core.keys import parse_email
from ..core.models import STATUSES
from ..server.settings_table import CLIENT_SETTINGS, SETTINGS, Setting, option_help
from . import exits
from .client import FIRST_CONTACT_BUDGET, config_path

EXAMPLES = """\
examples:
  streamer serve                     # prints the two `export` lines for the others
  export STREAMER_URL=http://127.0.0.1:8000 STREAMER_API_KEY=stk_...
  streamer run --name t -- make test # run a command, its output stored as a job
  streamer jobs list                 # your jobs, newest first
  streamer follow JOB_ID --tail 20   # the last 20 lines of a job's log, then live"""

MORE = "`streamer COMMAND --help` describes a command; the HTTP API is docs/api.md."


def para(text: str) -> str:
    """A description, wrapped once here (the formatter keeps descriptions as written)."""
    return textwrap.fill(text, 79)


def release() -> str:
    try:
        return version("streamer")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Lists subcommands one per line, without argparse's ``{a,b,c}`` heading line."""

    def _format_action(self, action: argparse.Action) -> str:
        if isinstance(action, argparse._SubParsersAction):
            return "".join(self._format_action(a) for a in action._get_subactions())
        return super()._format_action(action)


def _flag(parser: argparse.ArgumentParser | Any, setting: Setting, dest: str | None = None) -> None:
    """A setting's flag: its help, environment variable, default and choices from the table."""
    assert setting.flag is not None
    parser.add_argument(
        setting.flag,
        dest=dest or setting.name,
        type=setting.kind,
        choices=setting.choices or None,
        metavar=None if setting.choices else setting.name.split("_")[-1].upper(),
        help=option_help(setting),
    )


def _setting(name: str, table: Iterable[Setting] = SETTINGS) -> Setting:
    return next(s for s in table if s.name == name)


def _epilog(*lines: str) -> str:
    return "\n".join([*lines, "" if lines else "", exits.help_text()]).lstrip("\n")


def _count(raw: str) -> int:
    if not raw.isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {raw!r}")
    return int(raw)


def _email(raw: str) -> str:
    try:
        return parse_email(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


class Commands:
    """Adds commands to a subparsers action, each with the same formatter and exit table."""

    def __init__(self, parser: argparse.ArgumentParser, dest: str, title: str) -> None:
        self.sub = parser.add_subparsers(
            dest=dest, required=True, title=title, metavar=dest.upper()
        )

    def add(self, name: str, summary: str, *, epilog: str | None = None, **kwargs: Any) -> Any:
        return self.sub.add_parser(
            name,
            help=summary,
            description=para(kwargs.pop("description", summary[0].upper() + summary[1:] + ".")),
            epilog=_epilog() if epilog is None else epilog,
            formatter_class=Formatter,
            **kwargs,
        )

    def group(self, name: str, summary: str, title: str) -> Commands:
        parser = self.add(name, summary, epilog=_epilog())
        return Commands(parser, "action", title)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamer",
        description=para(
            "Append-only job logs: written over HTTP, read live over Server-Sent Events, "
            "WebSocket or plain text, resuming with no gap and no duplicate."
        ),
        epilog="\n\n".join([EXAMPLES, exits.help_text(), MORE]),
        formatter_class=Formatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"streamer {release()}", help="print the version"
    )
    commands = Commands(parser, "command", "commands")
    _serve(commands)
    _client_commands(commands)
    _admin_commands(commands)
    return parser


def _serve(commands: Commands) -> None:
    unflagged = [s for s in SETTINGS if not s.flag]
    serve = commands.add(
        "serve",
        "run the service (SQLite, or PostgreSQL by URL)",
        description="Run the service. On a database with no users it creates admin@localhost "
        "and prints its API key once, with the two `export` lines the other commands need. "
        "Every setting is also an environment variable; the flag wins.",
        epilog=_epilog(
            "settings without a flag (environment variables):",
            *(f"  {s.env}={s.default}\n      {s.help}" for s in unflagged),
        ),
    )
    for setting in SETTINGS:
        if setting.flag:
            _flag(serve, setting)
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="what reaches the log on stderr: info is one line per request and per stream "
        "start and end; warning drops those (default: info)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes (PostgreSQL only: each worker is a node of the cluster; default: 1)",
    )


def _connection(parser: Any) -> None:
    """The options of every command that talks HTTP to a server."""
    group = parser.add_argument_group(
        "connection", f"Flags win over the environment, which wins over {config_path()}."
    )
    for setting in CLIENT_SETTINGS:
        _flag(group, setting)
    group.add_argument(
        "--retry-for",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="keep retrying through network errors and server restarts this long before "
        f"giving up with exit status 3 (default: 300); until the server has answered once, "
        f"at most {FIRST_CONTACT_BUDGET:g} s, so a wrong --url fails fast",
    )


def _client_commands(commands: Commands) -> None:
    follow = commands.add(
        "follow",
        "print a job's log live; exit 0 if the job succeeded",
        description="Print a job's log as it is written, from the start (or --from-index, or "
        "the last --tail lines), until the job completes; network errors and server restarts "
        "are ridden out, resuming with no gap and no duplicate. Colours and `\\r` progress "
        "lines render on a terminal as the program's own terminal showed them; other control "
        "sequences, and everything in a pipe, are shown escaped, never executed. Several "
        "jobs: their lines interleaved as they are written, each behind its job's name (like "
        "docker compose logs -f), over one connection; the exit status is the worst of theirs.",
    )
    follow.add_argument(
        "job_id", metavar="JOB_ID", nargs="+", help="the job's id (`streamer jobs list`)"
    )
    start = follow.add_mutually_exclusive_group()
    start.add_argument(
        "--from-index", type=_count, metavar="N", help="start at event N (0 is the first event)"
    )
    start.add_argument(
        "--tail",
        type=_count,
        metavar="N",
        help="start with the last N lines of the log, then follow (like tail -n N -f); a line "
        "is text up to a newline, wherever events split it, and the final complete event is "
        "not one; with --json, the last N events",
    )
    follow.add_argument(
        "--json",
        action="store_true",
        help="print each event as one line of JSON (index, type, data, success, timestamp)",
    )
    follow.add_argument(
        "--timestamps",
        action="store_true",
        help="prefix each line with the server's time of the event that wrote it",
    )
    follow.add_argument(
        "--color",
        choices=["auto", "always", "never"],
        default="auto",
        help="the log's colours and styles: auto shows them on a terminal unless NO_COLOR is "
        "set (default: auto)",
    )
    follow.add_argument(
        "--grep",
        metavar="PATTERN",
        help="print only the lines matching PATTERN (escapes ignored, case-insensitive), as "
        "'LINE: text' with the line's number in the raw log: the server searches what is "
        "stored, then new lines are matched as they arrive",
    )
    follow.add_argument("--regex", action="store_true", help="PATTERN is an RE2 regex")
    follow.add_argument("--case-sensitive", action="store_true", help="match case exactly")
    _connection(follow)

    run = commands.add(
        "run",
        "run a command, storing its output live as a new job",
        description="Create a job, run CMD with its stdout and stderr streamed into the job "
        "(and echoed here), then complete the job with CMD's result. CMD finds its job id in "
        "STREAMER_JOB_ID. Output is buffered (up to 8 MiB) while the server is away and "
        "stored exactly once, in order. Ctrl-C is passed to CMD and the job marked cancelled.",
    )
    run.add_argument("--name", help="the job's name (default: the command line)")
    run.add_argument(
        "--quiet", "-q", action="store_true", help="do not echo CMD's output here; only store it"
    )
    _connection(run)
    run.add_argument(
        "cmd",
        nargs=argparse.REMAINDER,
        metavar="CMD",
        help="the command and its arguments, after -- (streamer run -- make -j4)",
    )
    run.usage = (
        run.format_usage().removeprefix("usage: ").strip().replace(" ...", " -- CMD [ARG ...]")
    )

    jobs = commands.group("jobs", "list, show, cancel or watch your jobs", "actions")
    jlist = jobs.add("list", "your jobs, newest first, as a table (--json for scripts)")
    jlist.add_argument("--status", choices=STATUSES, help="only jobs with this status")
    jlist.add_argument(
        "--limit", type=_count, default=20, metavar="N", help="at most N jobs (default: 20)"
    )
    shown = jlist.add_mutually_exclusive_group()
    shown.add_argument(
        "--json", action="store_true", help="a JSON array of the server's job objects"
    )
    shown.add_argument("--quiet", "-q", action="store_true", help="only the job ids, one a line")
    _connection(jlist)
    watch = jobs.add("watch", "print each change of your jobs as it happens, until Ctrl-C")
    watch.add_argument("--json", action="store_true", help="each change's JSON, one a line")
    watch.add_argument("--after", type=_count, metavar="SEQ", help="from after change SEQ")
    watch.add_argument("--snapshot", action="store_true", help="list your jobs first")
    _connection(watch)
    for action, summary in (
        ("show", "one job, a field a line"),
        ("cancel", "cancel a queued or running job (already cancelled: says so, exit 0)"),
    ):
        parser = jobs.add(action, summary)
        parser.add_argument("job_id", metavar="JOB_ID", help="the job's id (`streamer jobs list`)")
        parser.add_argument("--json", action="store_true", help="print the job as JSON")
        _connection(parser)


def _database(parser: Any) -> None:
    """``--db`` of the commands that open the database directly (give the server's)."""
    _flag(parser, _setting("db"))


def _admin_commands(commands: Commands) -> None:
    users = commands.group("users", "create, list or deactivate users (on the database)", "actions")
    create = users.add(
        "create",
        "create a user; its first API key is printed once, alone on the last line",
    )
    create.add_argument("--name", required=True, help="the user's name, for people")
    create.add_argument(
        "--email", required=True, type=_email, help="the user's email address: their identity"
    )
    _database(create)
    ulist = users.add("list", "every user, active or not")
    ulist.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    _database(ulist)
    deactivate = users.add(
        "deactivate",
        "deactivate a user: their keys are refused and open streams close within seconds",
    )
    deactivate.add_argument("--email", required=True, type=_email, help="the user's email")
    _database(deactivate)

    keys = commands.group("keys", "create, list or revoke API keys (on the database)", "actions")
    kcreate = keys.add("create", "another API key for a user, printed once on the last line")
    kcreate.add_argument("--email", required=True, type=_email, help="the owner's email")
    kcreate.add_argument(
        "--name", required=True, help="what the key is for (ci, laptop), shown in keys list"
    )
    _database(kcreate)
    klist = keys.add("list", "a user's keys: id, name, prefix, last use (never the key)")
    klist.add_argument("--email", required=True, type=_email, help="the owner's email")
    klist.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    _database(klist)
    krevoke = keys.add(
        "revoke", "revoke an API key by id: refused at once, its streams close within seconds"
    )
    krevoke.add_argument("key_id", type=int, metavar="KEY_ID", help="the id from `keys list`")
    _database(krevoke)

    gc = commands.add(
        "gc",
        "delete finished jobs older than an age",
        description="Delete the jobs that finished (completed, failed or cancelled) longer "
        "ago than --older-than, with their events. STREAMER_RETENTION does this hourly in "
        "the server instead.",
    )
    gc.add_argument(
        "--older-than",
        required=True,
        metavar="AGE",
        help="a number and a unit: 2w, 30d, 12h, 90m",
    )
    _database(gc)
    backup = commands.add(
        "backup",
        "copy the live SQLite database (PostgreSQL: pg_dump)",
        description="Write a consistent copy of the live SQLite database (appends go on "
        "meanwhile). To restore: stop the server, put the copy at the STREAMER_DB path "
        "(removing any -wal and -shm files beside the old one), start it.",
    )
    backup.add_argument("path", metavar="PATH", help="where to write the copy; must not exist")
    _database(backup)
