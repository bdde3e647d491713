"""Settings: the resolved values of one server, read once.

``settings_table.SETTINGS`` declares every knob; ``load_settings`` reads its
defaults, then the environment, then flags, and refuses values outside the bounds
the rows declare.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.changes import ChangePolicy
from ..core.redact import parse_patterns
from .settings_table import SETTINGS, Setting, default_db_path


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
    redact_patterns: str = "default"
    max_job_sections: int = 10_000
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
        if setting.minimum is not None and value < setting.minimum:
            raise SystemExit(f"{setting.env} must be at least {setting.minimum:g}, got {value!r}")
    if any("*" in origin for origin in settings.cors_allowlist):
        raise SystemExit("STREAMER_CORS_ORIGINS must list exact origins; '*' is refused")
    try:
        parse_patterns(settings.redact_patterns)
    except re.error as exc:
        raise SystemExit(f"STREAMER_REDACT_PATTERNS: {exc}") from exc
    if settings.ds_long_poll_seconds <= 0:
        raise SystemExit("STREAMER_DS_LONG_POLL_SECONDS must be > 0")
    if settings.auth_recheck_seconds <= 0:
        raise SystemExit("STREAMER_AUTH_RECHECK_SECONDS must be > 0")
    return settings
