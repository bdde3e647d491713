"""``streamer follow JOB --grep PATTERN``: matching lines of a job, stored then live.

What is stored is searched by the server (``GET /search``, a page at a time, no
download of the log); from where that search ended the job is followed like any
``streamer follow``, and each new event's lines are matched here with the same
matcher the server uses (``core.search``), numbered like the raw log. So the output
is the stored matches, then new ones as they arrive, each line once.
"""

from __future__ import annotations

from typing import TextIO

from ..core.search import Query, joined
from ..core.text import search_text
from .client import Client

PAGE = 1000


class GrepPrinter:
    """``LINE: text`` per matching line, the number dimmed on a colour terminal."""

    def __init__(self, out: TextIO, color: bool) -> None:
        self.out = out
        self.color = color

    def write(self, line: int, text: str) -> None:
        number = f"\x1b[2m{line}:\x1b[0m" if self.color else f"{line}:"
        self.out.write(f"{number} {text}\n")


async def grep(
    client: Client, job_id: str, query: Query, printer: GrepPrinter, from_index: int = 0
) -> bool:
    """Print matches from ``from_index`` until the job completes; its success."""
    matcher = query.compile()  # a bad pattern fails here, before any request
    params = {
        "q": query.text,
        "regex": "true" if query.regex else "false",
        "case": "sensitive" if query.case_sensitive else "insensitive",
        "limit": str(PAGE),
    }
    start = from_index
    while True:
        page = (
            await client.request(
                "GET", f"/jobs/{job_id}/search", params={**params, "from_index": str(start)}
            )
        ).json()
        for match in page["matches"]:
            printer.write(match["line"], match["text"])
        printer.out.flush()
        if page["next_index"] == start or not page["matches"]:
            start = page["next_index"]
            break
        start = page["next_index"]
    at = (await client.request("GET", f"/jobs/{job_id}/lines", params={"index": str(start)})).json()
    line = at["line"]
    success: bool | None = None
    async for batch in client.events(job_id, from_index=start):
        for event in batch:
            if event.data:
                found, _ = matcher.scan(joined([search_text(event.data)]), event.index, 1 << 30)
                for match in found:
                    printer.write(line + match.line, match.text)
                line += event.data.count("\n")
            if event.type == "complete":
                success = bool(event.success)
        printer.out.flush()
    if success is None:
        success = (await client.get_job(job_id))["status"] == "completed"
    return success
