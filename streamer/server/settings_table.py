"""The settings table: every knob of the server declared once, with its default,
environment variable, flag, help and the least value that makes sense.

The same rows drive the flags and their ``--help`` (``option_help``: what it is, its
environment variable, its default, wherever the flag appears), the environment
variables, the validation in ``settings.load_settings`` and the README's settings
tables, so they cannot drift apart (a test checks the README, another every
``--help``). The client commands' two (``STREAMER_URL``, ``STREAMER_API_KEY``) are
in ``CLIENT_SETTINGS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs


def default_db_path() -> str:
    """The SQLite file lives in the user's data directory, never the current one."""
    return str(Path(platformdirs.user_data_dir("streamer")) / "streamer.db")


@dataclass(frozen=True)
class Setting:
    """One row of the settings table."""

    name: str
    default: Any
    help: str
    flag: str | None = None
    choices: tuple[str, ...] = ()
    minimum: float | None = None  # the least value that makes sense; below it is refused

    @property
    def env(self) -> str:
        return "STREAMER_" + self.name.upper()

    @property
    def kind(self) -> type:
        return type(self.default) if self.default is not None else str

    def documented_default(self) -> str:
        """The default as the README's table shows it, the same on every machine."""
        if self.name == "db":
            return "streamer.db in the user data dir"
        return repr(self.default)

    def shown_default(self) -> str:
        """The default as ``--help`` shows it: for the database, the real path here."""
        if self.name == "db":
            return f"streamer.db in the user data dir, here {default_db_path()}"
        return str(self.default) if self.default != "" else "none"


def option_help(setting: Setting) -> str:
    """The ``--help`` text of a setting's flag, the same wherever the flag appears.

    ``%`` is doubled: argparse formats help strings with it.
    """
    text = f"{setting.help} (env {setting.env}; default: {setting.shown_default()})"
    return text.replace("%", "%%")


SETTINGS: tuple[Setting, ...] = (
    Setting("db", "", "SQLite file path or postgresql:// URL", "--db"),
    Setting("host", "127.0.0.1", "address to listen on", "--host"),
    Setting("port", 8000, "TCP port to listen on", "--port"),
    Setting(
        "sync",
        "normal",
        "SQLite synchronous mode: normal (survives process crash) or full "
        "(also survives power loss, one fsync per commit group)",
        "--sync",
        ("normal", "full"),
    ),
    Setting(
        "retention",
        "",
        "delete finished jobs older than this (e.g. 30d) once an hour; empty keeps everything",
    ),
    Setting("pg_pool_size", 10, "PostgreSQL connections per process (plus one for LISTEN)"),
    Setting("max_body_bytes", 1 << 20, "largest request body accepted (413 above)"),
    Setting("max_event_bytes", 1 << 20, "largest `data` of one event, UTF-8 bytes (413 above)"),
    Setting("max_batch_events", 10_000, "most events in one batch append (413 above)"),
    Setting("max_page_events", 1_000, "most events one page of GET /events returns"),
    Setting("keepalive_seconds", 15.0, "idle time before a stream sends a keepalive"),
    Setting(
        "subscriber_buffer",
        4_096,
        "live events buffered per reader before it is switched to catch-up from storage",
    ),
    Setting(
        "send_timeout_seconds",
        10.0,
        "a stream whose client takes longer than this to accept a write is closed (it can resume)",
    ),
    Setting("shutdown_seconds", 10.0, "grace period for open streams on SIGTERM / Ctrl-C"),
    Setting(
        "stream_token_seconds",
        300.0,
        "how long a browser stream token may be used to connect (an open stream outlives it)",
    ),
    Setting(
        "allowed_origins",
        "",
        "comma-separated browser origins allowed to open WebSockets "
        "(the service's own origin is always allowed)",
    ),
    Setting(
        "cors_origins",
        "",
        "comma-separated origins whose pages may call the JSON API (CORS, exact match, "
        "no credentials; '*' is refused); empty sends no CORS headers",
    ),
    Setting(
        "ws_max_message_bytes",
        64 * 1024,
        "largest WebSocket message a client may send (close 1009 above)",
        minimum=1,
    ),
    Setting(
        "ws_max_pings_per_second",
        10,
        "pings a WebSocket client may send in one second (close 1008 above)",
        minimum=1,
    ),
    Setting(
        "max_streams_per_user",
        100,
        "open SSE, WebSocket and text-log streams per user and node (429 / close 1013 above)",
        minimum=1,
    ),
    Setting(
        "append_rate",
        0.0,
        "appended events per second per API key and node (token bucket; 429 above); 0 is off",
        minimum=0,
    ),
    Setting(
        "append_burst",
        10_000,
        "events an idle key may append at once when append_rate is on (the bucket's size)",
        minimum=1,
    ),
    Setting(
        "max_job_bytes",
        256 << 20,
        "stored bytes of one job's log (413 above; a short complete event always fits)",
        minimum=1,
    ),
    Setting(
        "auth_recheck_seconds",
        2.0,
        "how often open streams re-check that their key is unrevoked and its user active",
    ),
    Setting(
        "max_stream_starts_per_second",
        0.0,
        "new SSE, WebSocket and text-log streams per second on this node, all users together "
        "(token bucket; 503 + Retry-After / close 1013 above); 0 is off",
        minimum=0,
    ),
    Setting(
        "stream_start_burst",
        200,
        "streams that may start at once when max_stream_starts_per_second is on "
        "(the bucket's size)",
        minimum=1,
    ),
    Setting(
        "redact_patterns",
        "default",
        "token formats masked as [REDACTED] in every event before it is stored: "
        "whitespace-separated regexes; 'default' stands for the built-in set (streamer "
        "keys and stream tokens, GitHub, GitLab, AWS, Slack, Google, npm, PyPI, Stripe, "
        "JWTs, bearer tokens, private keys), 'none' for none",
    ),
    Setting(
        "max_job_sections",
        10_000,
        "sections one job's index holds (GET /jobs/{id}/sections); later markers stay plain lines",
        minimum=1,
    ),
    Setting(
        "max_search_matches",
        1_000,
        "most matches one page of GET /jobs/{id}/search returns (its limit's cap)",
        minimum=1,
    ),
    Setting(
        "max_jobs_per_stream",
        100,
        "jobs one multi-job stream (GET /streams/events, its WebSocket) may follow at once; "
        "the connection counts as one stream against max_streams_per_user",
        minimum=1,
    ),
    Setting(
        "feed_growth_interval_seconds",
        0.5,
        "a job's growth is recorded in the change feed at most this often (the last growth "
        "always is); 0 records every append",
        minimum=0,
    ),
    Setting(
        "feed_keep_changes",
        10_000,
        "changes kept per user in the change feed; a resume point older than them is 410 Gone",
        minimum=1,
    ),
    Setting(
        "feed_snapshot_jobs",
        1_000,
        "newest jobs in a change feed's snapshot=true (the snapshot says when it is truncated)",
        minimum=1,
    ),
    Setting(
        "live_buffer_bytes",
        8 << 20,
        "stored bytes of recent events kept per job for its live readers; a reader further "
        "behind reads storage",
        minimum=1,
    ),
    Setting(
        "stream_buffer_bytes",
        1 << 20,
        "bytes of events queued for one reader on the ASGI path (any ASGI server) before "
        "its stream waits",
        minimum=1,
    ),
    Setting(
        "header_timeout_seconds",
        5.0,
        "a request's head (request line and headers) must arrive within this (408 and close)",
    ),
    Setting(
        "request_timeout_seconds",
        30.0,
        "a request's body must arrive within this after its head (408 and close)",
    ),
    Setting(
        "keepalive_timeout_seconds",
        5.0,
        "an idle keep-alive connection is closed after this",
    ),
    Setting(
        "max_pipelined_requests",
        16,
        "requests one connection may queue behind the one being answered; past it the "
        "server stops reading that connection",
        minimum=1,
    ),
    Setting(
        "max_request_head_bytes",
        16 * 1024,
        "request line and headers (431 above)",
        minimum=1,
    ),
    Setting(
        "max_request_headers",
        100,
        "headers in one request (431 above)",
        minimum=1,
    ),
    Setting(
        "write_high_water_bytes",
        64 * 1024,
        "response bytes buffered per connection before its writers wait; a WebSocket client "
        "that sends pings without reading past it is closed",
        minimum=1,
    ),
    Setting(
        "max_connections_per_client",
        256,
        "open connections from one client address (more are closed at once), except the "
        "addresses in unlimited_clients",
        minimum=1,
    ),
    Setting(
        "unlimited_clients",
        "127.0.0.1,::1",
        "comma-separated client addresses without a connection cap: the machine itself, "
        "where a reverse proxy (whose connections all come from one address) runs",
    ),
    Setting(
        "fd_reserve",
        64,
        "file descriptors kept free for the database and logs; at the budget the oldest idle "
        "connection is closed, or the new one gets 503",
    ),
    Setting(
        "memory_trim_seconds",
        10.0,
        "how often freed memory is handed back to the OS (glibc malloc_trim), so RSS falls "
        "after a burst; 0 is off",
    ),
    Setting(
        "ds_anonymous_user",
        "",
        "email of an existing user as whom requests without credentials to the Durable "
        "Streams routes (/v1/stream/) are served: anyone who can reach the port can then "
        "read, write and delete that user's streams; empty (off) answers them 401",
    ),
    Setting(
        "ds_long_poll_seconds",
        20.0,
        "how long a Durable Streams long-poll read waits for data before answering 204",
    ),
    Setting(
        "ds_read_bytes",
        1 << 20,
        "most message bytes in one Durable Streams catch-up or long-poll answer (at least "
        "one message is always sent)",
        minimum=1,
    ),
    Setting(
        "http",
        "builtin",
        "builtin (streamer's own server: the lean path and every connection bound) or "
        "uvicorn (the ASGI app under uvicorn, for comparison)",
        "--http",
        ("builtin", "uvicorn"),
    ),
    Setting(
        "log_format",
        "text",
        "text (one readable line per request and per stream start and end) or json (one JSON "
        "object per line, for log collectors)",
        "--log-format",
        ("text", "json"),
    ),
)

# The client commands (follow, run, jobs) read these; they never reach the server.
CLIENT_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "url",
        "http://127.0.0.1:8000",
        "the server's URL, as `streamer serve` prints it; also `url` in the config file",
        "--url",
    ),
    Setting(
        "api_key",
        "",
        "an API key (stk_...): `streamer serve` prints the first one, `streamer keys create` "
        "makes more; also `api_key` in the config file",
        "--api-key",
    ),
)
