"""The exit status of every ``streamer`` command: one table, printed by ``--help``.

One meaning per number, whatever the command, so a script can act on it without
knowing which command ran: 1 is "it did not work out" (the job failed, or the
request was refused: not found, a conflict, a wrong key), 2 is "you asked wrong"
(fix the command line), 3 is "could not ask" (the server or the database did not
answer within the retry budget: try again later). An operation that finds its work
already done (deactivating an inactive user, revoking a revoked key, cancelling a
cancelled job) says so and exits 0: running it twice is safe in scripts.
"""

from __future__ import annotations

import textwrap

OK, FAILED, USAGE, UNREACHABLE = 0, 1, 2, 3
INTERRUPTED = 130  # 128 + SIGINT, like a shell
READER_LEFT = 128 + 13  # 128 + SIGPIPE: `streamer follow J | head` ended early

TABLE: tuple[tuple[int | str, str], ...] = (
    (OK, "done: the job succeeded, or the command did what it says (or found it already done)"),
    (
        FAILED,
        "the job failed or was cancelled, or the request was refused "
        "(not found, a conflict, an unknown or revoked API key)",
    ),
    (USAGE, "usage error: a bad option or value (the message names it); nothing was changed"),
    (
        UNREACHABLE,
        "the server or the database could not be reached, or kept failing, "
        "for longer than the retry budget (--retry-for)",
    ),
    ("run", "exits with CMD's own status once CMD ran (3 if its output could not all be stored)"),
    (INTERRUPTED, "interrupted (Ctrl-C)"),
    (READER_LEFT, "the reader of the output went away (`streamer follow J | head`)"),
)


def help_text() -> str:
    """The table as ``--help`` prints it (an argparse epilog, kept as written)."""
    rows = [
        textwrap.fill(what, 79, initial_indent=f"  {code:<4} ", subsequent_indent=" " * 7)
        for code, what in TABLE
    ]
    return "exit status (every command):\n" + "\n".join(rows)


def markdown() -> str:
    """The same table for the README (a test keeps the README's copy equal to this)."""
    rows = [f"| {code} | {_cell(what)} |" for code, what in TABLE]
    return "\n".join(["| exit status | meaning |", "|---|---|", *rows])


def _cell(text: str) -> str:
    """A Markdown table cell: a pipe, even in code, would end the cell."""
    return text.replace("|", "\\|")


def for_status(status: int | None, usage: bool = False) -> int:
    """The exit status of a refusal by the server (HTTP ``status``), or of no answer (None).

    Malformed input is a usage error; a refusal (401, 403, 404, 409, ...) a failure;
    no answer, or a server error that outlived the retries, "could not be reached".
    """
    if usage or status in (400, 413, 416, 422):
        return USAGE
    if status is None or status >= 500:
        return UNREACHABLE
    return FAILED
