"""The section parser (``core/sections.py``), without a database: real marker lines of
each CI system, broken ones, markers split across events, nesting, and the end."""

from __future__ import annotations

from typing import Any

import pytest

from streamer.core import journal
from streamer.core.models import NewEvent
from streamer.core.sections import Section

E = "\x1b["
T0 = "2026-11-22T10:00:00.000000Z"


def run(*batches: list[NewEvent]) -> tuple[journal.JobState, list[list[Any]]]:
    """Append ``batches`` to a fresh job; the state and each stored event's JSON."""
    state = journal.JobState(journal.new_job(1, "j", {}, T0))
    stored: list[list[Any]] = []
    for n, batch in enumerate(batches):
        appended = journal.append(state, batch, f"2026-11-22T10:00:{n:02d}.000000Z")
        stored.extend([e.decode() for e in appended.events] for _ in [0])
    return state, stored


def sections_of(*batches: list[NewEvent]) -> list[dict[str, Any]]:
    """Every section the batches open, as the index keeps them (last state of each)."""
    state = journal.JobState(journal.new_job(1, "j", {}, T0))
    index: dict[int, Section] = {}
    for n, batch in enumerate(batches):
        appended = journal.append(state, batch, f"2026-11-22T10:00:{n:02d}.000000Z")
        index.update({s.id: s for s in appended.sections})
    return [index[k].public() for k in sorted(index)]


def logs(*data: str) -> list[NewEvent]:
    return [NewEvent("log", d, None) for d in data]


def brief(found: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    keys = ("title", "start_index", "end_index", "start_line", "end_line", "depth")
    return [tuple(s[k] for k in keys) for s in found]


# (what the producer printed, one event per item) -> sections as brief() shows them
MARKER_TABLE: list[tuple[str, list[str], list[tuple[Any, ...]]]] = [
    (
        "github group",
        ["::group::Install deps\n", "npm ci\n", "::endgroup::\n", "after\n"],
        [("Install deps", 0, 2, 1, 3, 0)],
    ),
    (
        "github group, indented, CRLF",
        ["  ::group::Build\r\n", "make\r\n", "::endgroup::\r\n"],
        [("Build", 0, 2, 1, 3, 0)],
    ),
    ("github endgroup with nothing open is ignored", ["::endgroup::\n", "x\n"], []),
    ("github lookalike mid-line is no marker", ["echo ::group::x\n"], []),
    (
        "gitlab section with collapsed option and header",
        [
            f"{E}0Ksection_start:1700000000:build_app[collapsed=true]\r{E}0K{E}36mBuilding{E}0m\n",
            "cc -o app\n",
            f"{E}0Ksection_end:1700000009:build_app\r{E}0K\n",
        ],
        [("Building", 0, 2, 1, 3, 0)],
    ),
    (
        "gitlab nested, closed by name",
        [
            f"{E}0Ksection_start:1:outer\r{E}0KOuter\n",
            f"{E}0Ksection_start:2:inner\r{E}0KInner\n",
            f"{E}0Ksection_end:3:inner\r{E}0K\n",
            f"{E}0Ksection_end:4:outer\r{E}0K\n",
        ],
        [("Outer", 0, 3, 1, 4, 0), ("Inner", 1, 2, 2, 3, 1)],
    ),
    (
        "gitlab end of the outer closes the inner too",
        [
            f"{E}0Ksection_start:1:outer\r{E}0KOuter\n",
            f"{E}0Ksection_start:2:inner\r{E}0KInner\n",
            f"{E}0Ksection_end:4:outer\r{E}0K\n",
        ],
        [("Outer", 0, 2, 1, 3, 0), ("Inner", 1, 2, 2, 3, 1)],
    ),
    (
        "gitlab header-less start is titled by its name",
        [f"{E}0Ksection_start:1:prepare_script\r{E}0K\n"],
        [("prepare_script", 0, None, 1, None, 0)],
    ),
    ("gitlab end of an unknown name is ignored", [f"{E}0Ksection_end:1:nope\r{E}0K\n"], []),
    ("gitlab start with a bad timestamp is no marker", ["section_start:abc:x\n"], []),
    (
        "buildkite headers close each other",
        ["--- :hammer: Build\n", "make\n", "+++ Test\n", "ok\n", "~~~ Deploy\n"],
        [
            (":hammer: Build", 0, 1, 1, 2, 0),
            ("Test", 2, 3, 3, 4, 0),
            ("Deploy", 4, None, 5, None, 0),
        ],
    ),
    ("buildkite needs a title: a bare --- (YAML) is no marker", ["---\n", "a: 1\n"], []),
    (
        "buildkite in one multi-line event",
        ["--- One\nx\n--- Two\ny\n"],
        [("One", 0, 0, 1, 2, 0), ("Two", 0, None, 3, None, 0)],
    ),
]


@pytest.mark.parametrize(("printed", "expected"), [(p, e) for _, p, e in MARKER_TABLE])
def test_marker_lines_of_each_ci_system(printed: list[str], expected: list[Any]) -> None:
    assert brief(sections_of(logs(*printed))) == expected
    # one event per append gives the same index as one batch
    assert brief(sections_of(*[logs(p) for p in printed])) == expected


def test_markers_split_oddly_across_events_are_joined() -> None:
    """A marker line cut anywhere (even inside ESC[0K) counts once its line is complete."""
    whole = f"{E}0Ksection_start:1700000000:deps[collapsed=true]\r{E}0KDeps\nnpm ci\n"
    for cut in range(1, len(whole) - 1):
        found = sections_of(logs(whole[:cut]), logs(whole[cut:]))
        assert [(s["title"], s["collapsed"], s["start_line"]) for s in found] == [
            ("Deps", True, 1)
        ], cut
    github = "::group::Compile\n"
    for cut in range(1, len(github)):
        assert [s["title"] for s in sections_of(logs(github[:cut]), logs(github[cut:]))] == [
            "Compile"
        ]


def test_typed_events_steps_groups_and_the_job_end() -> None:
    """step closes the previous step; group/endgroup nest; complete closes the rest.
    (A typed event's data is raw log too: "pytest" without a newline would make the
    next marker's line "pytest::group::inner", no marker.)"""
    events = [
        NewEvent("step", "Set up", None),
        NewEvent("log", "a\n", None),
        NewEvent("step", "Test\n", None),
        NewEvent("group", "pytest\n", None),
        NewEvent("log", "::group::inner\n", None),
        NewEvent("log", "b\n", None),
        NewEvent("endgroup", None, None),
        NewEvent("log", "c\n", None),
        NewEvent("complete", None, False),
    ]
    found = sections_of(events)
    assert [(s["name"], s["start_index"], s["end_index"], s["depth"]) for s in found] == [
        ("Set up", 0, 1, 0),
        ("Test", 2, 8, 0),
        ("pytest", 3, 6, 1),
        ("inner", 4, 6, 2),
    ]
    assert all(s["duration_seconds"] == 0.0 for s in found)  # one append: one timestamp


def test_open_sections_close_at_the_last_index_with_durations() -> None:
    state, stored = run(
        logs("::group::Long\n"),
        [NewEvent("step", "Step", None)],
        logs("x\n"),
        [NewEvent("complete", None, True)],
    )
    complete = stored[-1][0]
    closed = complete["section"]["closed"]
    assert [(s["title"], s["end_index"], s["duration_seconds"]) for s in closed] == [
        ("Step", 3, 2.0),
        ("Long", 3, 3.0),
    ]
    assert state.sections is not None  # the next id is kept even when nothing is open


def test_events_name_what_they_open_and_close_and_data_stays_byte_exact() -> None:
    printed = ["::group::A\n", "x\n", "::endgroup::\n"]
    _, stored = run(logs(*printed))
    events = stored[0]
    assert [e["data"] for e in events] == printed
    assert [s["title"] for s in events[0]["section"]["opened"]] == ["A"]
    assert events[0]["section"]["closed"] == []
    assert "section" not in events[1]
    closed = events[2]["section"]["closed"]
    assert [(s["end_index"], s["finished_at"]) for s in closed] == [(2, events[2]["timestamp"])]


def test_line_numbers_count_raw_lines_across_multi_line_and_partial_events() -> None:
    state = journal.JobState(journal.new_job(1, "j", {}, T0))
    appended = journal.append(state, logs("a\nb\n", "par", "tial\n", "", "c\n"), T0)
    assert appended.lines == [1, 3, 3, 4, 4]
    assert state.line_count == 4
    assert journal.append(state, logs("d"), T0).lines == [5]


def test_a_job_holds_at_most_its_section_limit() -> None:
    """Past the limit, markers stay plain lines: the index stays bounded."""
    state = journal.JobState(journal.new_job(1, "j", {}, T0))
    printed = [NewEvent("log", f"::group::g{i}\n::endgroup::\n", None) for i in range(7)]
    appended = journal.append(state, printed, T0, section_limit=5)
    assert [s.title for s in appended.sections] == [f"g{i}" for i in range(5)]
    more = journal.append(state, logs("--- late\n"), T0, section_limit=5)
    assert more.sections == [] and "section" not in more.events[0].decode()
