"""Reader positions: parsing what clients send, and where a reader starts.

Every route that takes a position (``from_index``, ``tail``, ``Last-Event-ID``,
``expected_index``, ``limit``) parses it here, and every reader start goes through
``start_index``, so "a cursor beyond the next index is a 416 naming it" is one rule.
"""

from __future__ import annotations

import re

from .errors import BadRequest, CursorAhead
from .models import Job

CURSOR = re.compile(r"[0-9]{1,15}")


def parse_cursor(name: str, raw: str | None) -> int | None:
    """A base-10, non-negative integer below 10**15, or a 400 naming the parameter."""
    if raw is None:
        return None
    if not CURSOR.fullmatch(raw):
        raise BadRequest(f"{name} must be a non-negative base-10 integer below 10^15", field=name)
    return int(raw)


def check_not_ahead(job: Job, from_index: int) -> None:
    """A reader may start at the job's next index (tail from now), not beyond it: the
    client is ahead of the server (a restore, another deployment), and waiting would
    hang silently, so it is a 416 naming the next index."""
    if from_index > job.event_count:
        raise CursorAhead(
            f"from_index {from_index} is beyond the job's next index {job.event_count}",
            field="from_index",
            next_index=job.event_count,
        )


def start_index(
    job: Job, from_index: str | None, tail: str | None, last_event_id: str | None
) -> int | None:
    """Where a reader starts; ``None`` means it is already past the ``complete`` event.

    ``Last-Event-ID`` wins over everything and means "after this one"; ``tail=N``
    starts N events before the end; ``from_index`` is "starting at this one". A 416
    names the parameter the position came from, with the client's own value.
    """
    resume = parse_cursor("Last-Event-ID", last_event_id)
    start = parse_cursor("from_index", from_index)
    back = parse_cursor("tail", tail)
    if resume is not None:
        if resume >= job.event_count:
            raise CursorAhead(
                f"Last-Event-ID {resume} is beyond the job's last index {job.event_count - 1}",
                field="Last-Event-ID",
                next_index=job.event_count,
            )
        start = resume + 1
    elif back is not None:
        if start is not None:
            raise BadRequest("give from_index or tail, not both", field="tail")
        start = max(0, job.event_count - back)
    start = start or 0
    check_not_ahead(job, start)
    if job.is_final and start >= job.event_count:
        return None
    return start
