"""The write rules of ``core.journal``, without a database: every backend runs these."""

from __future__ import annotations

import orjson
import pytest

from streamer.core import journal
from streamer.core.errors import Conflict, PayloadTooLarge
from streamer.core.journal import COMPLETE_DATA_ALLOWANCE, JobState
from streamer.core.models import Job, NewEvent

NOW = "2026-12-04T10:00:00.000000Z"
LATER = "2026-12-04T10:00:01.000000Z"


def state(status: str = "queued", count: int = 0, **fields: object) -> JobState:
    job = Job("j1", 1, "job", status, {}, NOW, NOW, event_count=count)
    return JobState(job, **fields)  # type: ignore[arg-type]


def log(n: int, text: str = "x") -> list[NewEvent]:
    return [NewEvent("log", f"{text}{i}\n", None) for i in range(n)]


def test_append_numbers_events_from_the_next_index_and_starts_a_queued_job() -> None:
    s = state(count=3)
    appended = journal.append(s, log(2), NOW)
    assert [e.index for e in appended.events] == [3, 4]
    assert [orjson.loads(e.line)["index"] for e in appended.events] == [3, 4]
    assert (s.job.status, s.job.event_count, s.job.started_at) == ("running", 5, NOW)
    assert s.byte_count == appended.size == sum(len(e.line) for e in appended.events)


def test_a_complete_event_makes_the_job_final_and_closes_the_log() -> None:
    s = state("running")
    journal.append(s, [*log(1), NewEvent("complete", None, False)], NOW)
    assert (s.job.status, s.job.finished_at) == ("failed", NOW)
    with pytest.raises(Conflict) as refused:
        journal.append(s, log(1), LATER)
    assert refused.value.extra["next_index"] == 2


def test_expected_index_must_be_the_next_index_and_stores_nothing_otherwise() -> None:
    s = state(count=4)
    with pytest.raises(Conflict) as refused:
        journal.append(s, log(1), NOW, expected_index=3)
    assert refused.value.extra["next_index"] == 4
    assert (s.job.event_count, s.byte_count, s.job.status) == (4, 0, "queued")
    assert journal.append(s, log(1), NOW, expected_index=4).events[0].index == 4


def test_timestamps_never_go_back_when_the_clock_does() -> None:
    s = state(last_timestamp=LATER)
    appended = journal.append(s, log(1), NOW)
    assert orjson.loads(appended.events[0].line)["timestamp"] == LATER
    assert s.last_timestamp == LATER


def test_the_byte_cap_refuses_growth_but_not_a_short_complete_event() -> None:
    s = state(byte_count=1000)
    with pytest.raises(PayloadTooLarge):
        journal.append(s, log(1), NOW, byte_limit=1000)
    assert (s.job.event_count, s.byte_count) == (0, 1000)  # refused: nothing changed
    closing = NewEvent("complete", "y" * COMPLETE_DATA_ALLOWANCE, True)
    journal.append(s, [closing], NOW, byte_limit=1000)
    assert s.job.status == "completed"


@pytest.mark.parametrize(
    ("start", "target", "allowed"),
    [
        ("queued", "running", True),
        ("queued", "cancelled", True),
        ("queued", "completed", False),
        ("running", "completed", True),
        ("running", "failed", True),
        ("running", "queued", False),
        ("completed", "running", False),
        ("cancelled", "failed", False),
    ],
)
def test_status_changes_follow_the_state_machine(start: str, target: str, allowed: bool) -> None:
    s = state(start, count=1)
    if not allowed:
        with pytest.raises(Conflict):
            journal.change(s, {"status": target}, NOW)
        assert s.job.status == start
        return
    appended = journal.change(s, {"status": target}, NOW)
    assert s.job.status == target
    if target in ("completed", "failed", "cancelled"):
        assert appended is not None
        [closing] = appended.events
        assert (closing.index, closing.type) == (1, "complete")
        assert orjson.loads(closing.line)["success"] is (target == "completed")
        assert s.job.event_count == 2 and s.job.finished_at == NOW
    else:
        assert appended is None and s.job.started_at == NOW


def test_runner_fields_change_without_a_status() -> None:
    s = state("running")
    assert journal.change(s, {"container_id": "c1", "runner": None}, NOW) is None
    assert (s.job.container_id, s.job.runner, s.job.updated_at) == ("c1", None, NOW)


def test_new_job_ids_are_random_and_never_look_like_options() -> None:
    ids = {journal.new_job_id() for _ in range(2000)}
    assert len(ids) == 2000 and not any(i.startswith("-") for i in ids)
