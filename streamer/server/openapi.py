"""The OpenAPI 3.1 document, built from the ``Operation`` each route declares.

Every route is declared next to its handler with an ``Operation`` (summary,
parameters, request schema, responses), and ``api._route`` refuses to build a
route without one; ``document()`` turns the declarations into the OpenAPI document
served at ``/api/v1/openapi.json``. So the document cannot drift from the routes: a
route without a declaration does not import, and ``tests/server/test_openapi.py`` checks
that every mounted route is in the document and nothing else is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.models import EVENT_TYPE, MAX_NAME, STATUSES

JSON = "application/json"
PROBLEM = "application/problem+json"

NULLABLE_TEXT: dict[str, Any] = {"type": ["string", "null"]}
TIMESTAMP: dict[str, Any] = {"type": "string", "description": "UTC, ISO 8601, microseconds, Z"}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details; extensions (field, limit, ...) may follow",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "field": {"type": "string"},
        },
    },
    "Job": {
        "type": "object",
        "required": ["id", "status", "event_count", "next_index", "created_at"],
        "properties": {
            "id": {"type": "string"},
            "name": NULLABLE_TEXT,
            "status": {"enum": list(STATUSES)},
            "metadata": {"type": "object"},
            "container_id": NULLABLE_TEXT,
            "runner": NULLABLE_TEXT,
            "event_count": {"type": "integer", "minimum": 0},
            "next_index": {"type": "integer", "minimum": 0},
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
            "started_at": {**TIMESTAMP, "type": ["string", "null"]},
            "finished_at": {**TIMESTAMP, "type": ["string", "null"]},
            "redactions": {"type": "integer", "minimum": 0},
        },
    },
    "JobList": {
        "type": "object",
        "required": ["jobs", "next_cursor"],
        "properties": {
            "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
            "next_cursor": NULLABLE_TEXT,
        },
    },
    "NewJob": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": {"type": ["string", "null"], "maxLength": MAX_NAME},
            "metadata": {"type": ["object", "null"], "description": "at most 16 KiB of JSON"},
            "secrets": {
                "type": ["array", "null"],
                "maxItems": 100,
                "items": {"type": "string", "minLength": 4, "maxLength": 65536},
                "description": "write-only: redacted from the job's log, never returned",
            },
        },
    },
    "JobPatch": {
        "type": "object",
        "additionalProperties": False,
        "minProperties": 1,
        "properties": {
            "status": {"enum": list(STATUSES)},
            "container_id": {"type": ["string", "null"], "maxLength": MAX_NAME},
            "runner": {"type": ["string", "null"], "maxLength": MAX_NAME},
        },
    },
    "NewEvent": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "type": {"type": "string", "pattern": f"^{EVENT_TYPE.pattern}$", "default": "log"},
            "data": NULLABLE_TEXT,
            "success": {
                "type": ["boolean", "null"],
                "description": "required (true/false) on a complete event, absent otherwise",
            },
        },
    },
    "Append": {
        "description": "one event, or a batch (a complete event only last)",
        "oneOf": [
            {"$ref": "#/components/schemas/NewEvent"},
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["events"],
                "properties": {
                    "events": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"$ref": "#/components/schemas/NewEvent"},
                    }
                },
            },
        ],
    },
    "Appended": {
        "type": "object",
        "required": ["first_index", "last_index"],
        "properties": {
            "first_index": {"type": "integer", "minimum": 0},
            "last_index": {"type": "integer", "minimum": 0},
        },
    },
    "Event": {
        "type": "object",
        "required": ["index", "type", "data", "success", "timestamp"],
        "properties": {
            "index": {"type": "integer", "minimum": 0},
            "type": {"type": "string"},
            "data": NULLABLE_TEXT,
            "success": {"type": ["boolean", "null"]},
            "timestamp": TIMESTAMP,
            "section": {
                "type": "object",
                "description": "only on events that open or close sections",
                "properties": {
                    "opened": {"type": "array", "items": {"$ref": "#/components/schemas/Section"}},
                    "closed": {"type": "array", "items": {"$ref": "#/components/schemas/Section"}},
                },
            },
        },
    },
    "Section": {
        "type": "object",
        "required": ["id", "name", "title", "start_index", "end_index", "depth", "collapsed"],
        "properties": {
            "id": {"type": "integer", "minimum": 0},
            "name": {"type": "string"},
            "title": {"type": "string"},
            "start_index": {"type": "integer", "minimum": 0},
            "end_index": {"type": ["integer", "null"]},
            "start_line": {"type": "integer", "minimum": 1},
            "end_line": {"type": ["integer", "null"]},
            "depth": {"type": "integer", "minimum": 0},
            "started_at": TIMESTAMP,
            "finished_at": {**TIMESTAMP, "type": ["string", "null"]},
            "duration_seconds": {"type": ["number", "null"]},
            "collapsed": {"type": "boolean"},
        },
    },
    "SectionList": {
        "type": "object",
        "required": ["sections"],
        "properties": {
            "sections": {"type": "array", "items": {"$ref": "#/components/schemas/Section"}}
        },
    },
    "SearchPage": {
        "type": "object",
        "required": ["matches", "next_index", "complete"],
        "properties": {
            "matches": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "line"],
                    "properties": {
                        "index": {"type": "integer", "minimum": 0},
                        "line": {"type": "integer", "minimum": 1},
                        "text": {"type": "string"},
                    },
                },
            },
            "next_index": {"type": "integer", "minimum": 0},
            "complete": {"type": "boolean"},
            "total": {"type": "integer", "minimum": 0},
        },
    },
    "LineAt": {
        "type": "object",
        "required": ["index", "line"],
        "properties": {
            "index": {"type": "integer", "minimum": 0},
            "line": {"type": "integer", "minimum": 1},
        },
    },
    "EventPage": {
        "type": "object",
        "required": ["events", "next_index", "complete"],
        "properties": {
            "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
            "next_index": {"type": "integer", "minimum": 0},
            "complete": {"type": "boolean"},
        },
    },
    "StreamToken": {
        "type": "object",
        "required": ["token", "expires_at"],
        "properties": {"token": {"type": "string"}, "expires_at": TIMESTAMP},
    },
    "Status": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}},
    },
}

CURSOR: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": 10**15 - 1}

PARAMETERS: dict[str, dict[str, Any]] = {
    "job_id": {"in": "path", "required": True, "schema": {"type": "string"}},
    "status": {"in": "query", "schema": {"enum": list(STATUSES)}},
    "limit": {"in": "query", "schema": {"type": "integer", "minimum": 1}},
    "cursor": {"in": "query", "schema": {"type": "string"}},
    "from_index": {"in": "query", "schema": CURSOR},
    "tail": {"in": "query", "schema": CURSOR, "description": "start N events before the end"},
    "expected_index": {
        "in": "query",
        "schema": CURSOR,
        "description": "append only if this is the job's next index (else 409)",
    },
    "follow": {"in": "query", "schema": {"enum": ["true", "false"]}},
    "token": {
        "in": "query",
        "schema": {"type": "string"},
        "description": "a stream token (never an API key) for clients that cannot send headers",
    },
    "Last-Event-ID": {"in": "header", "schema": CURSOR, "description": "resume after this index"},
    "q": {
        "in": "query",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 1000},
        "description": "text (or with regex=true an RE2 regex) to find in the log",
    },
    "regex": {"in": "query", "schema": {"enum": ["true", "false"]}},
    "count": {
        "in": "query",
        "schema": {"enum": ["true", "false"]},
        "description": "also count every match from from_index on (total)",
    },
    "no_text": {
        "in": "query",
        "schema": {"enum": ["true", "false"]},
        "description": "matches without their text (index and line only)",
    },
    "case": {"in": "query", "schema": {"enum": ["sensitive", "insensitive"]}},
    "index": {"in": "query", "schema": CURSOR, "description": "an event's index"},
    "line": {
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": 10**15 - 1},
        "description": "a line of the raw log (1-based)",
    },
    "path": {
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "a stream's path in the caller's namespace (may contain '/')",
    },
    "offset": {
        "in": "query",
        "schema": {"type": "string"},
        "description": "-1 (the start), now (the tail), or a Stream-Next-Offset",
    },
    "live": {"in": "query", "schema": {"enum": ["long-poll", "sse"]}},
    "after": {
        "in": "query",
        "schema": CURSOR,
        "description": "the change feed from after this sequence number (Last-Event-ID wins)",
    },
    "snapshot": {
        "in": "query",
        "schema": {"enum": ["true", "false"]},
        "description": "first the caller's job list, then the changes after it",
    },
    "jobs": {
        "in": "query",
        "schema": {"type": "string"},
        "description": "comma-separated job ids, each optionally with its from_index (ID:N)",
    },
    "Last-Event-ID (composite)": {
        "in": "header",
        "name": "Last-Event-ID",
        "schema": {"type": "string"},
        "description": "a multi-job stream's cursor, ID:N,ID:N (N: the job's next index)",
    },
}

STATUS_TEXT = {
    101: "Switching Protocols",
    200: "OK",
    201: "Created",
    204: "No Content",
    304: "Not Modified (If-None-Match)",
    400: "malformed parameter or body",
    401: "missing, malformed, revoked or inactive credentials",
    403: "WebSocket handshake from a browser origin that is not allowed; a stale producer epoch",
    404: "no such job (or another user's)",
    405: "method not allowed",
    409: "conflict (illegal transition, expected_index, log closed)",
    410: "a deleted stream that its forks still read; a change feed's resume point "
    "dropped by retention (resume with snapshot=true)",
    413: "a size limit (body, event, batch, job log)",
    416: "a position beyond the end (from_index past the next index, index or line past "
    "the log, after past the head)",
    422: "well-formed JSON with the wrong content",
    429: "a rate or concurrency limit; see Retry-After",
    503: "storage unavailable",
}


@dataclass(frozen=True)
class Operation:
    """What the document says about one method of one route."""

    summary: str
    statuses: tuple[int, ...]  # every status the route answers with, besides 401 / 503
    params: tuple[str, ...] = ()
    body: str | None = None  # a SCHEMAS name
    result: str | None = None  # SCHEMAS name of the 2xx JSON body
    media: str = JSON  # content type of the 2xx body
    auth: bool = True
    streaming: bool = False  # SSE, WebSocket, text log: left out of fuzzing
    tags: tuple[str, ...] = field(default_factory=tuple)

    def spec(self, name: str) -> dict[str, Any]:
        statuses = set(self.statuses) | ({401, 503} if self.auth else set())
        responses: dict[str, Any] = {}
        for status in sorted(statuses):
            response: dict[str, Any] = {"description": STATUS_TEXT[status]}
            if status >= 400:
                response["content"] = {
                    PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}
                }
            elif status in (200, 201) and self.result is not None:
                ref = {"$ref": f"#/components/schemas/{self.result}"}
                response["content"] = {self.media: {"schema": ref}}
            elif status in (200, 201):
                response["content"] = {self.media: {"schema": {"type": "string"}}}
            if status == 429:
                response["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
            responses[str(status)] = response
        spec: dict[str, Any] = {
            "operationId": name,
            "summary": self.summary,
            "responses": responses,
            "security": [{"bearer": []}] if self.auth else [],
        }
        if self.params:
            spec["parameters"] = [{"name": p, **PARAMETERS[p]} for p in self.params]
        if self.body is not None:
            ref = {"$ref": f"#/components/schemas/{self.body}"}
            spec["requestBody"] = {"required": True, "content": {JSON: {"schema": ref}}}
        if self.streaming:
            spec["x-streaming"] = True
        if self.tags:
            spec["tags"] = list(self.tags)
        return spec


def operation_name(method: str, path: str) -> str:
    """``GET /api/v1/jobs/{job_id}/events`` -> ``get_jobs_job_id_events``: stable ids."""
    parts = [p.strip("{}") for p in path.split("/") if p and p not in ("api", "v1")]
    return "_".join([method.lower(), *parts]).replace("-", "_").replace(".", "_")


def document(operations: Iterable[tuple[str, str, Operation]], version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``(path, method, operation)`` triples."""
    paths: dict[str, dict[str, Any]] = {}
    for path, method, op in operations:
        paths.setdefault(path, {})[method.lower()] = op.spec(operation_name(method, path))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "streamer",
            "version": version,
            "description": "Append-only job event logs, streamed over SSE, WebSocket and text.",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API key (stk_...): the Authorization header only",
                }
            },
        },
    }


def prefixed(
    prefix: str, docs: Mapping[str, Mapping[str, Operation]]
) -> list[tuple[str, str, Operation]]:
    return [
        (prefix + path, method, op)
        for path, methods in docs.items()
        for method, op in methods.items()
    ]
