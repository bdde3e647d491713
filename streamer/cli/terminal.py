"""Printing remote log text on a local terminal without letting it take the terminal over.

A job's log is written by whatever ran the job, so a CLI that prints it verbatim lets
that program move the cursor, clear the screen, rewrite lines already shown (a lone
carriage return is enough), set the window title or hyperlinks (OSC), or answer-back
tricks on some emulators. python-websockets' CLI escapes control characters before
printing remote data for the same reason. The policy here:

- ``\\n`` and ``\\t`` print as they are; so does ``\\r\\n``.
- SGR (colour and style, ``ESC [ ... m``) and erase-to-end-of-line (``ESC [ K``,
  which ``grep`` and ``gcc`` put after colours) pass through when colour is on, and
  are removed when it is off.
- Every other C0 or C1 control character, including a lone ``\\r`` and the ``ESC``
  that starts cursor movement or OSC, is shown escaped (``\\x1b[2J``), so what the
  log tried to do is visible and harmless.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, TextIO

import orjson

# One alternation, tried left to right: allowed styling first, then a CRLF (kept),
# then any single control character (escaped).
_TOKEN = re.compile(
    r"(?P<style>\x1b\[[0-9;:]{0,32}m|\x1b\[0?K)"
    r"|(?P<crlf>\r\n)"
    r"|(?P<control>[\x00-\x08\x0b-\x1f\x7f-\x9f])"
)
_C1 = re.compile(r"[\x80-\x9f\u2028\u2029]")
RESET = "\x1b[0m"


def _escaped(char: str) -> str:
    if char == "\r":
        return "\\r"
    return f"\\x{ord(char):02x}"


def sanitize(text: str, *, color: bool) -> str:
    """``text`` made safe to print on a terminal; see the module docstring for the policy."""

    def replace(match: re.Match[str]) -> str:
        if match.lastgroup == "style":
            return match.group() if color else ""
        if match.lastgroup == "crlf":
            return match.group()
        return _escaped(match.group())

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
    remembers whether it stands at the start of a line.
    """

    def __init__(
        self, out: TextIO, *, color: bool, timestamps: bool = False, as_json: bool = False
    ) -> None:
        self.out = out
        self.color = color
        self.timestamps = timestamps
        self.as_json = as_json
        self.at_line_start = True
        self.styled = False

    def _text(self, event: LogEvent) -> str:
        data = event.data
        if not data:
            return ""
        text = sanitize(data, color=self.color)
        if self.color and "\x1b[" in text:
            self.styled = True
        if not self.timestamps:
            return text
        prefix = f"{event.timestamp} "
        lines = text.split("\n")
        out = [(prefix if self.at_line_start else "") + lines[0]]
        out += [prefix + line for line in lines[1:-1]]
        if len(lines) > 1:
            out.append(prefix + lines[-1] if lines[-1] else "")  # "" after a final newline
        self.at_line_start = text.endswith("\n")
        return "\n".join(out)

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


# --- what a command prints and returns ---------------------------------------------

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


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
