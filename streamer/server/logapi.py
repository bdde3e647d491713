"""Routes that read what the service understood of a log: sections, search, lines.

All three answer from what ingest indexed (``core/journal.py``): the section index,
each event's plain text and the raw-log line each event starts on. ``api.py``
mounts them with their OpenAPI ``Operation`` (``DOCS``).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..core.cursor import check_not_ahead, parse_cursor
from ..core.errors import BadRequest
from ..core.models import Job
from ..core.search import Query
from .openapi import Operation
from .requests import json_response
from .resources import resources

SEARCH_LIMIT = 100
TRUE, FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})


async def _job(request: Request) -> Job:
    res = resources(request)
    caller = await res.auth.caller(request)
    return await res.storage.jobs.get_job(caller.user_id, request.path_params["job_id"])


def _flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return False
    if raw.lower() not in TRUE | FALSE:
        raise BadRequest(f"{name} must be true or false", field=name)
    return raw.lower() in TRUE


def _query(request: Request) -> Query:
    params = request.query_params
    case = params.get("case", "insensitive")
    if case not in ("sensitive", "insensitive"):
        raise BadRequest("case must be sensitive or insensitive", field="case")
    return Query(params.get("q", ""), _flag(request, "regex"), case == "sensitive")


async def get_sections(request: Request) -> Response:
    """The job's section index, in start order."""
    job = await _job(request)
    sections = await resources(request).storage.jobs.sections(job.id)
    return json_response({"sections": [s.public() for s in sections]})


async def search(request: Request) -> Response:
    """Matching lines of what is stored, in index order, a page at a time."""
    res = resources(request)
    job = await _job(request)
    matcher = _query(request).compile()
    params = request.query_params
    start = parse_cursor("from_index", params.get("from_index")) or 0
    check_not_ahead(job, start)
    limit = parse_cursor("limit", params.get("limit"))
    if limit == 0:
        raise BadRequest("limit must be at least 1", field="limit")
    limit = min(limit or SEARCH_LIMIT, res.settings.max_search_matches)
    jobs = res.storage.jobs
    found, starts, stop = await jobs.search(job.id, matcher, start, job.event_count, limit)
    texts = not _flag(request, "no_text")
    matches = [
        {"index": f.index, "line": starts.get(f.index, 1) + f.line, "text": f.text}
        if texts
        else {"index": f.index, "line": starts.get(f.index, 1) + f.line}
        for f in found
    ]
    next_index = job.event_count if stop is None else stop
    body = {"matches": matches, "next_index": next_index, "complete": stop is None and job.is_final}
    if _flag(request, "count"):
        rest = (
            0 if stop is None else await jobs.count_matches(job.id, matcher, stop, job.event_count)
        )
        body["total"] = len(found) + rest
    return json_response(body)


async def lines(request: Request) -> Response:
    """Where an event starts in the raw log (``?index=``, default 0; past the end:
    where the next event will start), or which event holds a raw line (``?line=``,
    which wins when both are given; past the end: the last event): how a viewer
    numbers lines and resolves ``#L120``."""
    res = resources(request)
    job = await _job(request)
    params = request.query_params
    index = parse_cursor("index", params.get("index"))
    line = parse_cursor("line", params.get("line"))
    if line is not None:
        found = await res.storage.jobs.index_of_line(job.id, max(line, 1))
        if found is not None:
            return json_response({"index": found[0], "line": found[1]})
        index = 0
    index = min(index or 0, job.event_count)
    first = await res.storage.jobs.line_of(job.id, index)
    return json_response({"index": index, "line": first})


JOB = ("job_id",)
DOCS: dict[str, dict[str, Operation]] = {
    "/jobs/{job_id}/sections": {
        "GET": Operation(
            "the job's sections (GitHub, GitLab, Buildkite markers and typed events), "
            "in start order",
            (200, 404),
            JOB,
            result="SectionList",
        ),
    },
    "/jobs/{job_id}/search": {
        "GET": Operation(
            "matching lines of the stored log (ANSI-blind), a page at a time",
            (200, 400, 404, 416),
            (*JOB, "q", "regex", "case", "from_index", "limit", "count", "no_text"),
            result="SearchPage",
        ),
    },
    "/jobs/{job_id}/lines": {
        "GET": Operation(
            "the raw-log line an event starts on (index=), or the event holding a line (line=)",
            (200, 400, 404),
            (*JOB, "index", "line"),
            result="LineAt",
        ),
    },
}
