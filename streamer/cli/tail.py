"""``streamer follow --tail N``: where the last N lines of a job's log begin.

People count lines, not events: one event may hold many lines or part of one, and
the ``complete`` event that ends every log prints nothing. The server's ``tail=``
counts events, which is the unit for ``--json`` (there an event is a line of output),
so for text the client finds the start itself: it reads the stored log backwards, a
page at a time, counting newlines, and returns the event, and the character within
it, where the N-th last line begins. ``follow`` then streams from that event, live
afterwards, dropping that event's first characters.

Exact: a line is text up to a newline, wherever events cut it, and a last line that
has no newline yet counts (like ``tail -n``); the stored events below the job's
next index never change, so nothing can shift between the walk and the stream.
Bounded: one page in memory at a time, pages of at most ``PAGE`` events, growing
from N + 1 (one line per event is the common case), so it reads at most one page
more than it prints.
"""

from __future__ import annotations

from typing import Any

from .client import Client

PAGE = 500  # events; under the server's default page limit, so one request per page


class LineCounter:
    """Walks a log backwards, event by event, to where its last ``lines`` lines begin."""

    def __init__(self, lines: int) -> None:
        assert lines > 0
        self.needed = lines
        self.seen_text = False

    def back(self, data: str | None) -> int | None:
        """The offset in ``data`` where the tail starts, if it starts in this event.

        Counting the newlines from the end: the N-th one before the log's final line
        ends the line before the tail. The newline that ends the log itself (if it
        ends in one) closes the last line, so it is not counted.
        """
        if not data:
            return None
        end = len(data)
        if not self.seen_text:
            self.seen_text = True
            if data.endswith("\n"):
                end -= 1
        while (newline := data.rfind("\n", 0, end)) >= 0:
            self.needed -= 1
            if self.needed == 0:
                return newline + 1
            end = newline
        return None


async def tail_start(client: Client, job_id: str, lines: int) -> tuple[int, int]:
    """``(index, offset)``: the last ``lines`` lines of the job's log start at character
    ``offset`` of event ``index`` (``(next_index, 0)`` for none: live from now)."""
    end = int((await client.get_job(job_id))["next_index"])
    if lines == 0:
        return end, 0
    counter = LineCounter(lines)
    size = lines + 1
    while end > 0:
        size = min(size, PAGE)
        start = max(0, end - size)
        for event in reversed(await _read(client, job_id, start, end)):
            offset = counter.back(event["data"])
            if offset is not None:
                return int(event["index"]), offset
        end, size = start, size * 2
    return 0, 0


async def _read(client: Client, job_id: str, start: int, end: int) -> list[dict[str, Any]]:
    """Events ``start`` to ``end - 1``, in as many requests as the server's page limit needs."""
    events: list[dict[str, Any]] = []
    while start < end:
        params = {"from_index": start, "limit": end - start}
        page = (await client.request("GET", f"/jobs/{job_id}/events", params=params)).json()
        got = page["events"][: end - start]
        if not got:
            break  # cannot happen below the next index; never loop on it
        events += got
        start = int(got[-1]["index"]) + 1
    return events
