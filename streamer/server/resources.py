"""What one running app owns, built in its lifespan and kept on ``app.state``.

``Resources`` only holds the parts; each part owns its behaviour: storage, the hub,
the open streams (``StreamRegistry``), authentication with its key-use bookkeeping
(``Authenticator``), the append rate limit, and the counters ``/metrics`` reads.
There are no module globals, so every test can run an app next to another one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from ..core import redact
from ..core.forks import ForkingReader
from ..core.hub import Hub
from ..core.limits import AppendRate, StreamSlots, StreamStartRate
from ..core.ports import Storage
from ..core.stats import Histogram
from .credentials import Authenticator
from .settings import Settings
from .streams import StreamRegistry

# Appends are acknowledged after COMMIT: a group commit takes about a millisecond when
# idle, tens of milliseconds under load, seconds only when the disk stalls.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Resources:
    settings: Settings
    storage: Storage
    hub: Hub
    streams: StreamRegistry
    auth: Authenticator
    append_rate: AppendRate
    append_latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    origin_allowlist: frozenset[str] = frozenset()  # the setting's, parsed once
    changes_published: int = 0  # change-feed entries handed to the hub (apart from events)
    redaction: redact.Rules | None = None  # made on first use: its key is in the database

    async def rules(self) -> redact.Rules:
        """The server's redaction rules, with the key jobs' secrets are sealed with (a
        server secret every node shares, so any node can redact any job)."""
        rules = self.redaction
        if rules is None:
            key = await self.storage.identity.server_secret(redact.SECRET_NAME)
            rules = self.redaction = redact.Rules.from_setting(self.settings.redact_patterns, key)
        return rules

    @classmethod
    def build(cls, settings: Settings, storage: Storage, hub: Hub) -> Resources:
        streams = StreamRegistry(
            ForkingReader(storage.jobs, storage.streams),
            storage.identity,
            hub,
            StreamSlots(settings.max_streams_per_user),
            StreamStartRate(settings.max_stream_starts_per_second, settings.stream_start_burst),
            settings.max_page_events,
            settings.send_timeout_seconds,
        )
        return cls(
            settings,
            storage,
            hub,
            streams,
            Authenticator(storage.identity),
            AppendRate(settings.append_rate, settings.append_burst),
            origin_allowlist=settings.origin_allowlist,
        )


def resources(conn: HTTPConnection) -> Resources:
    found: Resources = conn.app.state.resources
    return found
