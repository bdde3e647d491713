"""The open streams of one app: their slots, their credentials, their log lines.

Open streams are tracked with the ``Credential`` that opened them, which is what
lets one periodic query (``close_revoked``) end every stream of a revoked key or a
deactivated user, on every node, and what the per-user stream limit counts.
``registered()`` is also where every stream's start and end are logged and counted
(``streamer.stream`` lines, the totals behind ``/metrics``), however it ends.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from ..core.follow import Follow
from ..core.hub import Hub
from ..core.keys import Credential
from ..core.limits import StreamSlots, StreamStartRate
from ..core.models import Job
from ..core.ports import EventReader, KeyReader
from . import access_log

stream_log = logging.getLogger("streamer.stream")
TRANSPORTS = ("sse", "ws", "text")


@dataclass
class Totals:
    """What ended streams of one transport did, for ``/metrics``."""

    streams: int = 0
    events: int = 0
    send_timeouts: int = 0


class StreamRegistry:
    """Every open stream of this app, the limits on opening one, and their totals."""

    def __init__(
        self,
        reader: EventReader,
        keys: KeyReader,
        hub: Hub,
        slots: StreamSlots,
        start_rate: StreamStartRate,
        page_size: int,
    ) -> None:
        self.reader = reader
        self.keys = keys
        self.hub = hub
        self.slots = slots
        self.start_rate = start_rate
        self.page_size = page_size
        self.open_streams: set[Follow] = set()
        self.credentials: dict[Follow, Credential] = {}
        self.totals = {transport: Totals() for transport in TRANSPORTS}
        self.replayed = 0  # events read from storage by streams that ended

    def open(
        self,
        job: Job,
        from_index: int,
        transport: str,
        credential: Credential,
        *,
        live: bool = True,
    ) -> Follow:
        """A ``Follow`` of ``job`` from ``from_index``, counted against its user's limit
        (``TooManyRequests`` past it) and tracked, before the response starts: a refusal
        is still a 429, not a stream.

        The caller must then run the stream inside ``registered()``, which releases it.
        """
        self.slots.acquire(credential.user_id)
        stream = Follow(
            self.reader,
            self.hub,
            job.id,
            from_index,
            live=live and not job.is_final,
            page_size=self.page_size,
            transport=transport,
        )
        self.open_streams.add(stream)
        self.credentials[stream] = credential
        return stream

    @contextlib.contextmanager
    def registered(self, stream: Follow) -> Iterator[Follow]:
        """Track an open stream so shutdown (and revocation) can end it; release its
        slot when it ends, however it ends; log its start and its end (with how long
        it ran, what it sent and why it ended) and count it for /metrics."""
        self.open_streams.add(stream)
        credential = self.credentials.get(stream)
        user_id = credential.user_id if credential is not None else None
        key_id = credential.key_id if credential is not None else None
        began = time.monotonic()
        if stream_log.isEnabledFor(logging.INFO):
            access_log.emit(
                stream_log,
                "stream_start",
                f"stream start {stream.transport} job={stream.job_id} user={user_id} "
                f"from={stream.next_index}",
                job_id=stream.job_id,
                user_id=user_id,
                key_id=key_id,
                transport=stream.transport,
                from_index=stream.next_index,
            )
        try:
            yield stream
        finally:
            self.open_streams.discard(stream)
            credential = self.credentials.pop(stream, None)
            if credential is not None:
                self.slots.release(credential.user_id)
            # A live stream that ended neither complete nor closed for a reason was cut
            # off under it (the text log's response is cancelled when its client leaves).
            ended = stream.complete or not stream.live
            reason = stream.closed or ("done" if ended else "disconnect")
            stream.close(reason)
            totals = self.totals.setdefault(stream.transport, Totals())
            totals.streams += 1
            totals.events += stream.sent
            totals.send_timeouts += reason == "send_timeout"
            self.replayed += stream.replayed
            if stream_log.isEnabledFor(logging.INFO):
                took = round(time.monotonic() - began, 3)
                access_log.emit(
                    stream_log,
                    "stream_end",
                    f"stream end {stream.transport} job={stream.job_id} user={user_id} "
                    f"duration={took}s sent={stream.sent} replayed={stream.replayed} "
                    f"next={stream.next_index} complete={stream.complete} reason={reason}",
                    job_id=stream.job_id,
                    user_id=user_id,
                    key_id=key_id,
                    transport=stream.transport,
                    duration_s=took,
                    events_sent=stream.sent,
                    events_replayed=stream.replayed,
                    next_index=stream.next_index,
                    complete=stream.complete,
                    reason=reason,
                )

    def close_streams(self, reason: str) -> None:
        for stream in list(self.open_streams):
            stream.close(reason)

    async def close_revoked(self) -> int:
        """End every open stream whose key was revoked or whose user was deactivated.

        One query for all open streams, whatever process made the change: this is
        what makes revocation reach streams on every node within a re-check period.
        """
        if not self.credentials:
            return 0
        alive = await self.keys.active_keys({c.key_id for c in self.credentials.values()})
        revoked = [s for s, c in list(self.credentials.items()) if c.key_id not in alive]
        for stream in revoked:
            stream.close("revoked")
        return len(revoked)
