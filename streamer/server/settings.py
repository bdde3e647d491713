"""Settings: one table of (name, default, env var, help), read once.

Every knob of the server is declared exactly once in ``SETTINGS``, and the client
commands' two (``STREAMER_URL``, ``STREAMER_API_KEY``) in ``CLIENT_SETTINGS``. The
same rows drive the flags and their ``--help`` (``option_help``: what it is, its
environment variable, its default, wherever the flag appears), the environment
variables and the README's settings tables, so they cannot drift apart (a test
checks the README, another every ``--help``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from ..core.changes import ChangePolicy


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
    ),
    Setting(
        "ws_max_pings_per_second",
        10,
        "pings a WebSocket client may send in one second (close 1008 above)",
    ),
    Setting(
        "max_streams_per_user",
        100,
        "open SSE, WebSocket and text-log streams per user and node (429 / close 1013 above)",
    ),
    Setting(
        "append_rate",
        0.0,
        "appended events per second per API key and node (token bucket; 429 above); 0 is off",
    ),
    Setting(
        "append_burst",
        10_000,
        "events an idle key may append at once when append_rate is on (the bucket's size)",
    ),
    Setting(
        "max_job_bytes",
        256 << 20,
        "stored bytes of one job's log (413 above; a short complete event always fits)",
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
    ),
    Setting(
        "stream_start_burst",
        200,
        "streams that may start at once when max_stream_starts_per_second is on "
        "(the bucket's size)",
    ),
    Setting(
        "max_jobs_per_stream",
        100,
        "jobs one multi-job stream (GET /streams/events, its WebSocket) may follow at once; "
        "the connection counts as one stream against max_streams_per_user",
    ),
    Setting(
        "feed_growth_interval_seconds",
        0.5,
        "a job's growth is recorded in the change feed at most this often (the last growth "
        "always is); 0 records every append",
    ),
    Setting(
        "feed_keep_changes",
        10_000,
        "changes kept per user in the change feed; a resume point older than them is 410 Gone",
    ),
    Setting(
        "feed_snapshot_jobs",
        1_000,
        "newest jobs in a change feed's snapshot=true (the snapshot says when it is truncated)",
    ),
    Setting(
        "live_buffer_bytes",
        8 << 20,
        "stored bytes of recent events kept per job for its live readers; a reader further "
        "behind reads storage",
    ),
    Setting(
        "stream_buffer_bytes",
        1 << 20,
        "bytes of events queued for one reader on the ASGI path (any ASGI server) before "
        "its stream waits",
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
    ),
    Setting("max_request_head_bytes", 16 * 1024, "request line and headers (431 above)"),
    Setting("max_request_headers", 100, "headers in one request (431 above)"),
    Setting(
        "write_high_water_bytes",
        64 * 1024,
        "response bytes buffered per connection before its writers wait; a WebSocket client "
        "that sends pings without reading past it is closed",
    ),
    Setting(
        "max_connections_per_client",
        256,
        "open connections from one client address (more are closed at once), except the "
        "addresses in unlimited_clients",
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


@dataclass(frozen=True)
class Settings:
    """The resolved settings of one server. Immutable; build a new one to change it."""

    db: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    sync: str = "normal"
    retention: str = ""
    pg_pool_size: int = 10
    max_body_bytes: int = 1 << 20
    max_event_bytes: int = 1 << 20
    max_batch_events: int = 10_000
    max_page_events: int = 1_000
    keepalive_seconds: float = 15.0
    subscriber_buffer: int = 4_096
    send_timeout_seconds: float = 10.0
    shutdown_seconds: float = 10.0
    stream_token_seconds: float = 300.0
    allowed_origins: str = ""
    cors_origins: str = ""
    ws_max_message_bytes: int = 64 * 1024
    ws_max_pings_per_second: int = 10
    max_streams_per_user: int = 100
    append_rate: float = 0.0
    append_burst: int = 10_000
    max_job_bytes: int = 256 << 20
    auth_recheck_seconds: float = 2.0
    max_stream_starts_per_second: float = 0.0
    stream_start_burst: int = 200
    max_jobs_per_stream: int = 100
    feed_growth_interval_seconds: float = 0.5
    feed_keep_changes: int = 10_000
    feed_snapshot_jobs: int = 1_000
    live_buffer_bytes: int = 8 << 20
    stream_buffer_bytes: int = 1 << 20
    header_timeout_seconds: float = 5.0
    request_timeout_seconds: float = 30.0
    keepalive_timeout_seconds: float = 5.0
    max_pipelined_requests: int = 16
    max_request_head_bytes: int = 16 * 1024
    max_request_headers: int = 100
    write_high_water_bytes: int = 64 * 1024
    max_connections_per_client: int = 256
    unlimited_clients: str = "127.0.0.1,::1"
    fd_reserve: int = 64
    memory_trim_seconds: float = 10.0
    ds_anonymous_user: str = ""
    ds_long_poll_seconds: float = 20.0
    ds_read_bytes: int = 1 << 20
    http: str = "builtin"
    log_format: str = "text"
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def db_url(self) -> str:
        return self.db or default_db_path()

    @property
    def origin_allowlist(self) -> frozenset[str]:
        return frozenset(o.strip() for o in self.allowed_origins.split(",") if o.strip())

    @property
    def unlimited_client_set(self) -> frozenset[str]:
        return frozenset(a.strip() for a in self.unlimited_clients.split(",") if a.strip())

    @property
    def cors_allowlist(self) -> list[str]:
        return sorted({o.strip() for o in self.cors_origins.split(",") if o.strip()})

    @property
    def change_policy(self) -> ChangePolicy:
        """The change feed's bounds, as storage applies them."""
        keep, ms = self.feed_keep_changes, round(self.feed_growth_interval_seconds * 1000)
        return ChangePolicy(ms, keep, min(keep, ChangePolicy.trim_every))

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _convert(setting: Setting, raw: str) -> Any:
    kind = setting.kind
    try:
        return kind(raw)
    except ValueError as exc:
        raise SystemExit(f"{setting.env}: expected {kind.__name__}, got {raw!r}") from exc


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Defaults, then environment variables, then explicit overrides (CLI flags)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.env in env:
            values[setting.name] = _convert(setting, env[setting.env])
    values.update({k: v for k, v in overrides.items() if v is not None})
    settings = Settings(**values)
    if settings.retention:
        from ..core.retention import parse_duration

        try:
            parse_duration(settings.retention)
        except ValueError as exc:
            raise SystemExit(f"STREAMER_RETENTION: {exc}") from exc
    for setting in SETTINGS:
        value = getattr(settings, setting.name)
        if setting.choices and value not in setting.choices:
            raise SystemExit(f"{setting.env} must be {' or '.join(setting.choices)}, got {value!r}")
    if any("*" in origin for origin in settings.cors_allowlist):
        raise SystemExit("STREAMER_CORS_ORIGINS must list exact origins; '*' is refused")
    if settings.max_stream_starts_per_second < 0:
        raise SystemExit("STREAMER_MAX_STREAM_STARTS_PER_SECOND must be >= 0")
    for name in (
        "ws_max_message_bytes",
        "max_streams_per_user",
        "append_burst",
        "max_job_bytes",
        "stream_start_burst",
        "live_buffer_bytes",
        "stream_buffer_bytes",
        "max_pipelined_requests",
        "max_request_head_bytes",
        "max_request_headers",
        "write_high_water_bytes",
        "ws_max_pings_per_second",
        "ws_max_pings_per_second",
        "max_connections_per_client",
        "ds_read_bytes",
        "max_jobs_per_stream",
        "feed_keep_changes",
        "feed_snapshot_jobs",
    ):
        if getattr(settings, name) < 1:
            raise SystemExit(f"STREAMER_{name.upper()} must be at least 1")
    if settings.ds_long_poll_seconds <= 0:
        raise SystemExit("STREAMER_DS_LONG_POLL_SECONDS must be > 0")
    if settings.feed_growth_interval_seconds < 0:
        raise SystemExit("STREAMER_FEED_GROWTH_INTERVAL_SECONDS must be >= 0")
    if settings.append_rate < 0 or settings.auth_recheck_seconds <= 0:
        raise SystemExit("STREAMER_APPEND_RATE must be >= 0, STREAMER_AUTH_RECHECK_SECONDS > 0")
    return settings
