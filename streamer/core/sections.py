"""Sections of a log, recognised as events arrive: a pure, incremental parser.

A CI log announces its structure in band. This module knows four dialects:

- GitHub Actions: a line ``::group::TITLE`` opens, ``::endgroup::`` closes the
  innermost GitHub group;
- GitLab: ``ESC[0Ksection_start:UNIX_TS:NAME[collapsed=true]\\rESC[0KHEADER`` opens,
  ``ESC[0Ksection_end:UNIX_TS:NAME\\rESC[0K`` closes the innermost open section of
  that name (anywhere in a line, several per line);
- Buildkite: a line ``--- TITLE`` or ``~~~ TITLE`` (collapsed) or ``+++ TITLE``
  (expanded) closes the previous Buildkite group and opens the next; ``^^^ +++``
  expands the current one;
- typed events: ``step`` (its data is the title) closes the previous step and opens
  the next; ``group`` / ``endgroup`` are an explicit, nestable pair; ``complete``
  closes everything still open, at its own index.

Closing a section closes every section opened inside it, at the same place.
Markers are lines of the raw log (the concatenated ``data``), so a marker split
across events is joined first: the unfinished last line of what has been seen is
carried with the job (bounded by ``MAX_CARRY``), and a marker split that way belongs
to the event that completes its line (where it became known). Line numbers are
1-based lines of the raw download.

``feed`` is called by ``journal`` inside the append's transaction, so the index is
exact under concurrency on every backend. It takes the state and the new events
and returns the state and the sections that changed, nothing else: no I/O, no
clock. ``quick_check`` lets the journal skip it for events that cannot hold a
marker, which is nearly all of them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from .text import plain_text

MAX_CARRY = 4096  # an unfinished line longer than this is no marker
MAX_TITLE = 500
TOO_LONG = "\x1f"  # the carry of a line that grew past MAX_CARRY: never a marker
MARKER_TYPES = frozenset({"step", "group", "endgroup", "complete"})
# A cheap test that a text (a batch's carry and data joined) may hold a marker: the
# markers' fixed parts, unanchored. It may say yes for nothing (``feed`` decides
# exactly), never no for a marker; with it, most appends never reach ``feed``.
HINT = re.compile(r"::|section_|--- |\+\+\+ |~~~ |\^\^\^")
_GITHUB = re.compile(r"[ \t]*::(group|endgroup)::(.*)")
_GITLAB = re.compile(
    r"section_(start|end):(\d{1,12}):([A-Za-z0-9_.-]{1,100})(?:\[([^\]\r\n]{0,200})\])?"
)
_GITLAB_HEADER = re.compile(r"\r?(?:\x1b\[0?K)?(.*?)(?=\x1b\[0?Ksection_|$)")
_BUILDKITE = re.compile(r"[ \t]*(---|\+\+\+|~~~)[ \t]+(\S.*)|[ \t]*\^\^\^ \+\+\+\s*$")


@dataclass
class Section:
    """One section: where it starts and (once closed) ends, by index and line."""

    id: int
    kind: str  # github, gitlab, buildkite, step, group
    name: str
    title: str
    start_index: int
    start_line: int
    depth: int
    started_at: str
    collapsed: bool
    end_index: int | None = None
    end_line: int | None = None
    finished_at: str | None = None

    def public(self) -> dict[str, Any]:
        """The section as ``GET /sections`` and the events' ``section`` member show it."""
        return {
            "id": self.id,
            "name": self.name,
            "title": self.title,
            "start_index": self.start_index,
            "end_index": self.end_index,
            "start_line": self.start_line,
            "end_line": self.end_line,
            "depth": self.depth,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_seconds": duration(self.started_at, self.finished_at),
            "collapsed": self.collapsed,
        }


def duration(started_at: str, finished_at: str | None) -> float | None:
    if finished_at is None:
        return None
    start = datetime.fromisoformat(started_at.replace("Z", "+00:00"))
    end = datetime.fromisoformat(finished_at.replace("Z", "+00:00"))
    return round((end - start).total_seconds(), 6)


@dataclass
class State:
    """What the parser keeps per job between appends (stored with the job)."""

    open: list[Section] = field(default_factory=list)
    next_id: int = 0

    def dump(self) -> str | None:
        if not self.open and not self.next_id:
            return None
        return orjson.dumps(
            {"next_id": self.next_id, "open": [vars(s) for s in self.open]}
        ).decode()

    @classmethod
    def load(cls, raw: str | None) -> State:
        if not raw:
            return cls()
        value = orjson.loads(raw)
        return cls([Section(**s) for s in value["open"]], value["next_id"])


@dataclass
class Change:
    """What one event did to the sections: its ``section`` member."""

    opened: list[Section] = field(default_factory=list)
    closed: list[Section] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        return {
            "opened": [s.public() for s in self.opened],
            "closed": [s.public() for s in self.closed],
        }


@dataclass
class Fed:
    """``feed``'s result: per event (position in the batch) its change, and every
    section touched (to store), in id order."""

    changes: dict[int, Change]
    touched: list[Section]


@dataclass(frozen=True)
class Incoming:
    """An event as the parser sees it."""

    index: int
    type: str
    data: str | None
    line: int  # the raw line its data starts on (1-based)
    timestamp: str


def carry_after(carry: str, data: str) -> str:
    """The unfinished last line after ``data``: what the next event continues."""
    cut = data.rfind("\n")
    if cut < 0:
        if carry == TOO_LONG:
            return TOO_LONG
        joined = carry + data
    else:
        joined = data[cut + 1 :]
    if len(joined) > MAX_CARRY:
        return TOO_LONG
    # Stored in a text column, which no database lets hold a NUL; no marker has one.
    return joined.replace("\x00", "") if "\x00" in joined else joined


class _Parser:
    def __init__(self, state: State, carry: str, limit: int | None = None) -> None:
        self.state = state
        self.carry = carry
        self.limit = limit
        self.changes: dict[int, Change] = {}
        self.touched: dict[int, Section] = {}
        self.position = 0

    def change(self) -> Change:
        found = self.changes.get(self.position)
        if found is None:
            found = self.changes[self.position] = Change()
        return found

    def open(
        self, kind: str, name: str, title: str, at: tuple[int, int], ts: str, collapsed: bool
    ) -> None:
        if self.limit is not None and self.state.next_id >= self.limit:
            return
        section = Section(
            self.state.next_id,
            kind,
            name[:MAX_TITLE],
            title[:MAX_TITLE],
            at[0],
            at[1],
            len(self.state.open),
            ts,
            collapsed,
        )
        self.state.next_id += 1
        self.state.open.append(section)
        self.change().opened.append(section)
        self.touched[section.id] = section

    def close_from(self, depth: int, end: tuple[int, int], ts: str) -> None:
        """Close the open sections at ``depth`` and deeper, innermost first."""
        while len(self.state.open) > depth:
            section = self.state.open.pop()
            section.end_index = max(end[0], section.start_index)
            section.end_line = max(end[1], section.start_line)
            section.finished_at = ts
            self.change().closed.append(section)
            self.touched[section.id] = section

    def innermost(self, kind: str, name: str | None = None) -> int | None:
        for depth in range(len(self.state.open) - 1, -1, -1):
            section = self.state.open[depth]
            if section.kind == kind and (name is None or section.name == name):
                return depth
        return None

    @staticmethod
    def before(at: tuple[int, int], event: Incoming) -> tuple[int, int]:
        """Where a section ends when the next one starts at ``at`` in ``event``: on the
        line before, in this event or (the header is its first line) the one before."""
        return (event.index if at[1] > event.line else event.index - 1, at[1] - 1)

    def line(self, text: str, at: tuple[int, int], event: Incoming) -> None:
        """One whole raw line that started at ``at`` = (index, line number)."""
        ts = event.timestamp
        if "::" in text:
            m = _GITHUB.match(text)
            if m is not None:
                if m.group(1) == "group":
                    title = plain_text(m.group(2)).strip()
                    self.open("github", title, title, at, ts, True)
                elif (depth := self.innermost("github")) is not None:
                    self.close_from(depth, (event.index, at[1]), ts)
                return
        if "section_" in text:
            for m in _GITLAB.finditer(text):
                kind, name, options = m.group(1), m.group(3), m.group(4) or ""
                if kind == "start":
                    header = _GITLAB_HEADER.match(text, m.end())
                    title = plain_text(header.group(1) if header else "").strip() or name
                    collapsed = "collapsed=true" in options
                    self.open("gitlab", name, title, at, ts, collapsed)
                elif (depth := self.innermost("gitlab", name)) is not None:
                    self.close_from(depth, (event.index, at[1]), ts)
            return
        m = _BUILDKITE.match(text)
        if m is not None:
            current = self.innermost("buildkite")
            if m.group(1) is None:  # ^^^ +++: expand the current group
                if current is not None:
                    self.state.open[current].collapsed = False
                    self.touched[self.state.open[current].id] = self.state.open[current]
                return
            if current is not None:
                self.close_from(current, self.before(at, event), ts)
            title = plain_text(m.group(2)).strip()
            self.open("buildkite", title, title, at, ts, m.group(1) != "+++")

    def typed(self, event: Incoming) -> None:
        at = (event.index, event.line)
        title = plain_text((event.data or "").partition("\n")[0]).strip()
        if event.type == "step":
            current = self.innermost("step")
            if current is not None:
                self.close_from(current, self.before(at, event), event.timestamp)
            self.open("step", title, title, at, event.timestamp, False)
        elif event.type == "group":
            self.open("group", title, title, at, event.timestamp, False)
        elif event.type == "endgroup":
            if (depth := self.innermost("group")) is not None:
                self.close_from(depth, at, event.timestamp)

    def event(self, event: Incoming) -> None:
        if event.type in MARKER_TYPES and event.type != "complete":
            self.typed(event)
        data = event.data
        if not data:
            return
        pieces = data.split("\n")
        for k, piece in enumerate(pieces[:-1]):
            text = piece
            if k == 0 and self.carry:
                text = "" if self.carry == TOO_LONG else self.carry + piece
            if text:
                self.line(text.removesuffix("\r"), (event.index, event.line + k), event)
        self.carry = carry_after(self.carry, data)


def feed(
    state: State, carry: str, events: Sequence[Incoming], limit: int | None = None
) -> tuple[Fed, str]:
    """Run ``events`` through the parser: the changes and the new carry.

    ``state`` is changed in place. A ``complete`` event closes every open section at
    its own index and on the log's last line. Once a job has ``limit`` sections, no
    more open (their markers stay plain lines): the index, and what ``GET
    /sections`` returns, stay bounded whatever a producer prints.
    """
    parser = _Parser(state, carry, limit)
    for position, event in enumerate(events):
        parser.position = position
        parser.event(event)
        if event.type == "complete":
            last = event.line - (0 if parser.carry else 1)
            parser.close_from(0, (event.index, max(last, 1)), event.timestamp)
    touched = [parser.touched[k] for k in sorted(parser.touched)]
    return Fed(parser.changes, touched), parser.carry
