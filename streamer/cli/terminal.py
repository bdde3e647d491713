"""Printing remote log text on a local terminal without letting it take the terminal over.

A job's log is written by whatever ran the job, so a CLI that prints it verbatim lets
that program move the cursor, clear the screen, rewrite lines already shown, set the
window title or hyperlinks (OSC), or answer-back tricks on some emulators.
python-websockets' CLI escapes control characters before printing remote data for
the same reason. The policy here:

- ``\\n`` and ``\\t`` print as they are; so does ``\\r\\n``.
- SGR (colour and style, ``ESC [ ... m``) passes through when colour is on, and is
  removed when it is off; so does erase-to-end-of-line (``ESC [ K``, which ``grep``
  and ``gcc`` put after colours) in a pipe.
- On a terminal, the controls that only edit the current line pass too: a lone
  ``\\r``, backspace, erase-in-line (``ESC [ K``) and moves along the line
  (``ESC [ n G|C|D``). They are what progress bars print, and the terminal then shows
  each line in its last state, as the producer's terminal did (and as the dashboard
  renders it); none of them can reach a line above. In a pipe they stay escaped, so
  a file or ``grep`` sees every state.
- Every other C0 or C1 control character, including the ``ESC`` that starts cursor
  movement between lines or OSC, is shown escaped (``\\x1b[2J``), so what the log
  tried to do is visible and harmless.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, TextIO

import orjson

# One alternation, tried left to right: styling, then a CRLF (kept), then the controls
# that edit the current line, then any single control character (escaped).
_TOKEN = re.compile(
    r"(?P<style>\x1b\[[0-9;:]{0,32}m)"
    r"|(?P<crlf>\r\n)"
    r"|(?P<line>\x1b\[[0-2]?K|\x1b\[[0-9]{0,4}[GCD]|\r|\x08)"
    r"|(?P<control>[\x00-\x08\x0b-\x1f\x7f-\x9f])"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Where a timestamp goes on a terminal: before text that starts a line, or that follows
# a lone CR (which sent the cursor back over the previous stamp).
_PIECES = re.compile(r"(\r\n|\n|\r)")
_C1 = re.compile(r"[\x80-\x9f\u2028\u2029]")
RESET = "\x1b[0m"


def _escaped(char: str) -> str:
    if char == "\r":
        return "\\r"
    return f"\\x{ord(char):02x}"


def sanitize(text: str, *, color: bool, terminal: bool = False) -> str:
    """``text`` made safe to print; see the module docstring for the policy.

    ``terminal``: the output is a terminal, which may apply the line-editing controls.
    """

    def replace(match: re.Match[str]) -> str:
        token, kind = match.group(), match.lastgroup
        if kind == "style":
            return token if color else ""
        if kind == "crlf" or (kind == "line" and terminal):
            return token
        if kind == "line" and token.startswith("\x1b") and token.endswith("K"):
            return token if color else ""  # travels with colours: grep, gcc
        return _CONTROL.sub(lambda c: _escaped(c.group()), token)

    return _TOKEN.sub(replace, text)


def json_safe(line: str) -> str:
    """A JSON line with C1 controls (and U+2028/9) as ``\\u`` escapes: the same value, safe.

    JSON already escapes C0 controls, but not C1 ones such as U+009B, which some
    terminals read as a one-byte CSI.
    """
    return _C1.sub(lambda m: f"\\u{ord(m.group()):04x}", line)


def use_color(mode: str, stream: TextIO) -> bool:
    """``always``, ``never``, or ``auto``: a terminal, unless ``NO_COLOR`` is set (no-color.org)."""
    if mode == "always":
        return True
    if mode == "never":
        return False
    return stream.isatty() and not os.environ.get("NO_COLOR")


class LogEvent(Protocol):
    """What the printer needs of an event (``client.Event`` has it)."""

    @property
    def data(self) -> str | None: ...

    @property
    def timestamp(self) -> str: ...

    @property
    def line(self) -> bytes: ...


class LogPrinter:
    """Writes events as log text (sanitized), or as JSON lines for scripts.

    ``--timestamps`` prefixes every line with the time of the event that starts it; an
    event whose data does not end a line continues the current one, so the printer
    remembers whether it stands at the start of a line. On a terminal a lone ``\\r``
    goes back over the stamp, so the text after it gets the stamp again (unless a
    ``\\n`` follows: that is a CRLF cut in two by the producer's events).
    """

    def __init__(
        self,
        out: TextIO,
        *,
        color: bool,
        timestamps: bool = False,
        as_json: bool = False,
        terminal: bool = False,
    ) -> None:
        self.out = out
        self.color = color
        self.timestamps = timestamps
        self.as_json = as_json
        self.terminal = terminal
        self.at_line_start = True
        self.after_cr = False
        self.styled = False

    def _text(self, event: LogEvent) -> str:
        data = event.data
        if not data:
            return ""
        text = sanitize(data, color=self.color, terminal=self.terminal)
        if self.color and "\x1b[" in text:
            self.styled = True
        return self._stamped(text, f"{event.timestamp} ") if self.timestamps else text

    def _stamped(self, text: str, prefix: str) -> str:
        out: list[str] = []
        for piece in _PIECES.split(text):
            if not piece:
                continue
            if piece in ("\n", "\r\n"):
                if self.at_line_start and not self.after_cr:
                    out.append(prefix)  # an empty line is stamped too
                self.at_line_start, self.after_cr = True, False
            elif piece == "\r":  # only raw on a terminal; escaped text otherwise
                self.at_line_start, self.after_cr = True, True
            else:
                if self.at_line_start:
                    out.append(prefix)
                self.at_line_start, self.after_cr = False, False
            out.append(piece)
        return "".join(out)

    def write(self, events: Iterable[LogEvent]) -> None:
        """Print a batch with one write and one flush, so a fast log stays cheap."""
        if self.as_json:
            chunk = "".join(json_safe(e.line.decode()) + "\n" for e in events)
        else:
            chunk = "".join([self._text(e) for e in events])
        if chunk:
            self.out.write(chunk)
            self.out.flush()

    def close(self) -> None:
        """Leave the terminal unstyled if the log left a colour switched on."""
        if self.styled:
            self.out.write(RESET)
            self.out.flush()
            self.styled = False


# --- what a command prints ------------------------------------------------------------


def program() -> str:
    """The command as the user typed it (``.venv/bin/streamer``), for "next step" hints
    they can paste; plain ``streamer`` when run some other way (tests, ``python -m``)."""
    typed = sys.argv[0] if sys.argv else ""
    return typed if os.path.basename(typed) == "streamer" else "streamer"


def print_rows(rows: list[dict[str, Any]], as_json: bool, columns: Sequence[str]) -> None:
    """A readable table for people, or a JSON array for scripts.

    Cells are sanitized: a job name is remote text, and must not drive the terminal.
    """
    if as_json:
        print(orjson.dumps(rows).decode())
        return
    cells = [[str(c).upper() for c in columns]]
    cells += [
        ["-" if row.get(c) is None else sanitize(str(row[c]), color=False) for c in columns]
        for row in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
