"""Searching a log: the query, and matching it over many events at once.

Ingest stores the plain text of each append's events (``text.search_text``: no
escapes, no control characters), joined with ``JOIN``: one row per append, however
many events it held. A search reads those rows for a range of events joined into
one bytes object, every two events separated by a line holding only ``SEPARATOR``,
and runs one RE2
scan over the whole of it: no Python work per event, only per match. RE2 runs in
time linear in the text whatever the pattern (no backtracking, so no pattern can
hold a worker), refuses what it cannot promise that for (backreferences,
look-arounds: a 400), and ``never_nl`` keeps every match inside one line, so a match
never spans two events. Offsets map back to event indexes by counting separators
between matches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import re2  # type: ignore[import-untyped]

from .errors import BadRequest
from .text import plain_text

SEPARATOR = b"\x1e"  # never in stored text: control characters are stripped at ingest
JOIN = b"\n\x1e\n"  # between two events' texts
JOIN_TEXT = JOIN.decode()
MAX_QUERY = 1000
MAX_TEXT = 2000  # characters of a matching line returned (a 1 MiB line is cut)
RE2_MEMORY = 32 << 20  # per compiled pattern; a pattern needing more is refused


@dataclass(frozen=True)
class Query:
    """What a reader searches for: text or a regex, case-insensitive by default."""

    text: str
    regex: bool = False
    case_sensitive: bool = False

    def compile(self) -> Matcher:
        """The compiled pattern, or ``BadRequest`` (field ``q``) saying what is wrong."""
        if not self.text:
            raise BadRequest("q is empty: give the text to search for", field="q")
        if len(self.text) > MAX_QUERY:
            raise BadRequest(f"q is longer than {MAX_QUERY} characters", field="q")
        if "\n" in self.text or "\x1e" in self.text:
            raise BadRequest("q must be one line", field="q")
        options = re2.Options()
        options.never_nl = True
        options.case_sensitive = self.case_sensitive
        options.literal = not self.regex
        options.max_mem = RE2_MEMORY
        options.log_errors = False
        pattern = f"(?m){self.text}" if self.regex else self.text
        try:
            return Matcher(re2.compile(pattern, options))
        except re2.error as exc:
            reason = exc.args[0] if exc.args else exc
            if isinstance(reason, bytes):
                reason = reason.decode("utf-8", "replace")
            raise BadRequest(
                f"q is not a regex this server runs (RE2 syntax, no backreferences "
                f"or look-arounds): {reason}",
                field="q",
            ) from exc


@dataclass(frozen=True)
class Found:
    """A matching line: its event, its line within the event (0-based), its text."""

    index: int
    line: int
    text: str


class Matcher:
    """A compiled query, applied to joined event texts (``scan``) or one event's data
    (``matches``, for readers following new events)."""

    def __init__(self, pattern: Any) -> None:
        self.pattern = pattern
        self.search = _span_search(pattern)

    def matches(self, data: str | None) -> bool:
        """Whether any line of one event's data matches (as ``scan`` would find it)."""
        if not data:
            return False
        return self._next_line(plain_text(data).encode("utf-8", "surrogatepass"), 0) is not None

    def _next_line(self, chunk: bytes, pos: int) -> tuple[int, int] | None:
        """(start, end) of the next non-empty line at or after ``pos`` that matches."""
        search = self.search
        size = len(chunk)
        while pos <= size:
            span = search(chunk, pos, size)
            if span is None:
                return None
            start, stop = span
            line_start = chunk.rfind(b"\n", 0, start) + 1
            line_end = chunk.find(b"\n", max(stop, line_start))
            if line_end < 0:
                line_end = size
            if line_end > line_start and chunk[line_start:line_end] != SEPARATOR:
                return line_start, line_end
            pos = line_end + 1
        return None

    def _lines(self, chunk: bytes, first: int) -> Iterator[tuple[int, int, int, int]]:
        """(event index, line in the event, start, end) of every matching line."""
        index, counted, event_start, pos = first, 0, 0, 0
        while (span := self._next_line(chunk, pos)) is not None:
            start, end = span
            pos = end + 1
            separators = chunk.count(SEPARATOR, counted, start)
            if separators:
                index += separators
                event_start = chunk.rfind(JOIN, 0, start) + len(JOIN)
            counted = start
            yield index, chunk.count(b"\n", event_start, start), start, end

    def count(self, chunk: bytes, first: int, start: int = 0, until: int = 1 << 62) -> int:
        """How many lines of events ``start`` to ``until - 1`` match in ``chunk`` (the
        texts of events ``first, first + 1, ...``): ``scan`` without limit or texts,
        and without the work per match that only a listed match needs."""
        total, index, counted, pos = 0, first, 0, 0
        while (span := self._next_line(chunk, pos)) is not None:
            begin, pos = span[0], span[1] + 1
            index += chunk.count(SEPARATOR, counted, begin)
            counted = begin
            if index >= until:
                break
            total += index >= start
        return total

    def scan(
        self, chunk: bytes, first: int, limit: int, start: int = 0, until: int = 1 << 62
    ) -> tuple[list[Found], int | None]:
        """Matching lines in ``chunk`` (the texts of events ``first, first + 1, ...``
        joined with ``JOIN``) of events ``start`` to ``until - 1``, in order, at most
        ``limit``.

        An event's matches are never split across pages: when the limit falls inside
        one, the page ends before that event. Only an event that alone holds more
        than ``limit`` matching lines is cut (its first ``limit`` are listed).
        Returns the matches and, when the limit stopped the scan, the index of the
        first event not listed; ``None`` when the whole chunk was read.
        """
        found: list[Found] = []
        for index, line, begin, end in self._lines(chunk, first):
            if index < start:
                continue
            if index >= until:
                break
            if len(found) >= limit:
                if found[-1].index != index:
                    return found, index
                if found[0].index != index:
                    return [f for f in found if f.index != index], index
                continue  # one event with more matching lines than a page holds
            text = chunk[begin:end].decode("utf-8", "replace")[:MAX_TEXT]
            found.append(Found(index, line, text))
        return found, None


def _span_search(pattern: Any) -> Callable[[bytes, int, int], tuple[int, int] | None]:
    """``search(chunk, pos, size)``: the span of the next match, or None.

    A count over a million lines makes one call per match, and the RE2 binding's own
    ``search`` (a generator and a match object per call) costs more than the match; its
    compiled program answers the same question directly. Where a release of the
    binding does not have it (or ``pattern`` is not RE2's), the public ``search``.
    """
    raw = getattr(pattern, "_regexp", None)
    anchor = getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)
    if raw is not None and anchor is not None and hasattr(raw, "Match"):
        match = raw.Match

        def direct(chunk: bytes, pos: int, size: int) -> tuple[int, int] | None:
            start, stop = match(anchor, chunk, pos, size)[0]
            return None if start < 0 else (start, stop)

        return direct

    def public(chunk: bytes, pos: int, size: int) -> tuple[int, int] | None:
        m = pattern.search(chunk, pos)
        return None if m is None else (m.start(), m.end())

    return public


def joined(texts: list[bytes]) -> bytes:
    """``texts`` as ``scan`` reads them (what the databases' aggregates build)."""
    return JOIN.join(texts)
