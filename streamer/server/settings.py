"""Settings: one table of (name, default, env var, help), read once.

Every knob of the server is declared exactly once in ``SETTINGS``. The same table
drives ``streamer serve --help``, the environment variables and the README's
settings section, so the three cannot drift apart (a test checks the README).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from ..core.redact import parse_patterns


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

    @property
    def env(self) -> str:
        return "STREAMER_" + self.name.upper()

    @property
    def kind(self) -> type:
        return type(self.default) if self.default is not None else str


SETTINGS: tuple[Setting, ...] = (
    Setting("db", "", "SQLite file path or postgresql:// URL (default: the user data dir)", "--db"),
    Setting("host", "127.0.0.1", "address to listen on", "--host"),
    Setting("port", 8000, "TCP port to listen on", "--port"),
    Setting(
        "sync",
        "normal",
        "SQLite synchronous mode: normal (survives process crash) or full "
        "(also survives power loss, one fsync per commit group)",
        "--sync",
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
        "redact_patterns",
        "default",
        "token formats masked as [REDACTED] in every event before it is stored: "
        "whitespace-separated regexes; 'default' stands for the built-in set (streamer "
        "keys and stream tokens, GitHub, GitLab, AWS, Slack, Google, npm, PyPI, Stripe, "
        "JWTs, bearer tokens, private keys), 'none' for none",
    ),
    Setting(
        "max_search_matches",
        1_000,
        "most matches one page of GET /jobs/{id}/search returns (its limit's cap)",
    ),
    Setting(
        "log_format",
        "text",
        "text (one readable line per request and per stream start and end) or json (one JSON "
        "object per line, for log collectors)",
        "--log-format",
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
    max_streams_per_user: int = 100
    append_rate: float = 0.0
    append_burst: int = 10_000
    max_job_bytes: int = 256 << 20
    auth_recheck_seconds: float = 2.0
    max_stream_starts_per_second: float = 0.0
    stream_start_burst: int = 200
    redact_patterns: str = "default"
    max_search_matches: int = 1_000
    log_format: str = "text"
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def db_url(self) -> str:
        return self.db or default_db_path()

    @property
    def origin_allowlist(self) -> frozenset[str]:
        return frozenset(o.strip() for o in self.allowed_origins.split(",") if o.strip())

    @property
    def cors_allowlist(self) -> list[str]:
        return sorted({o.strip() for o in self.cors_origins.split(",") if o.strip()})

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
    if settings.sync not in ("normal", "full"):
        raise SystemExit(f"STREAMER_SYNC must be normal or full, got {settings.sync!r}")
    if any("*" in origin for origin in settings.cors_allowlist):
        raise SystemExit("STREAMER_CORS_ORIGINS must list exact origins; '*' is refused")
    if settings.log_format not in ("text", "json"):
        raise SystemExit(f"STREAMER_LOG_FORMAT must be text or json, got {settings.log_format!r}")
    try:
        parse_patterns(settings.redact_patterns)
    except re.error as exc:
        raise SystemExit(f"STREAMER_REDACT_PATTERNS: {exc}") from exc
    if settings.max_stream_starts_per_second < 0:
        raise SystemExit("STREAMER_MAX_STREAM_STARTS_PER_SECOND must be >= 0")
    for name in (
        "ws_max_message_bytes",
        "max_streams_per_user",
        "append_burst",
        "max_job_bytes",
        "stream_start_burst",
        "max_search_matches",
    ):
        if getattr(settings, name) < 1:
            raise SystemExit(f"STREAMER_{name.upper()} must be at least 1")
    if settings.append_rate < 0 or settings.auth_recheck_seconds <= 0:
        raise SystemExit("STREAMER_APPEND_RATE must be >= 0, STREAMER_AUTH_RECHECK_SECONDS > 0")
    return settings
