"""A log line as a person reads it: ANSI escapes and control characters removed.

Search matches this text (a word split by a colour change still matches), section
titles are made of it, and ``search_text`` is what ingest stores for each event,
once, so a search never strips escapes again. Newlines and tabs stay: lines are
what search results and line numbers are made of.
"""

from __future__ import annotations

import re

# CSI (colours, erase, cursor), OSC (hyperlinks, titles, ended by BEL or ST), the
# two- and three-byte escapes, then any control character but tab and newline.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[()][0-9A-Za-z]"
    r"|\x1b[@-_]?"
    r"|[\x00-\x08\x0b-\x1f\x7f]"
)
# What makes a text differ from its plain form: checked before any regex runs.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def plain_text(data: str) -> str:
    """``data`` without escapes and control characters (tab and newline kept)."""
    if "\x1b" not in data and CONTROL.search(data) is None:
        return data
    return _ESCAPES.sub("", data)


def search_text(data: str | None) -> bytes:
    """What ingest stores for search: the plain text, UTF-8 (surrogates kept as-is)."""
    if not data:
        return b""
    return plain_text(data).encode("utf-8", "surrogatepass")
