"""The open streams of one app: their slots, their credentials, their log lines.

Open streams are tracked with the ``Credential`` that opened them, which is what
lets one periodic query (``close_revoked``) end every stream of a revoked key or a
deactivated user, on every node, and what the per-user stream limit counts.
``registered()`` is also where every stream's start and end are logged and counted
(``streamer.stream`` lines, the totals behind ``/metrics``), however it ends.

A connection that carries several jobs (``transports/multi.py``) is a
``StreamGroup``: one slot of the user's limit for the connection, however many jobs
it follows (at most ``max_members``, so it cannot hold unbounded memory); each job
is still its own follow, logged and counted like any other. Shutdown and revocation
end a group as a whole, even one that follows nothing at the moment.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..core.errors import BadRequest
from ..core.follow import Follow, Outlet
from ..core.hub import Hub
from ..core.keys import ANONYMOUS_KEY, Credential
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
        send_timeout: float,
    ) -> None:
        self.reader = reader
        self.keys = keys
        self.hub = hub
        self.slots = slots
        self.start_rate = start_rate
        self.page_size = page_size
        self.send_timeout = send_timeout
        self.open_streams: set[Follow] = set()
        self.groups: set[StreamGroup] = set()
        self.grouped: dict[Follow, StreamGroup] = {}
        self.credentials: dict[Follow, Credential] = {}
        self.started: dict[Follow, float] = {}  # monotonic start time of each open stream
        self.totals = {transport: Totals() for transport in TRANSPORTS}
        self.replayed = 0  # events read from storage by streams that ended

    def open(
        self,
        job: Job,
        from_index: int,
        transport: str,
        credential: Credential,
        outlet: Outlet,
        *,
        live: bool = True,
        group: StreamGroup | None = None,
    ) -> Follow:
        """Start a ``Follow`` of ``job`` from ``from_index`` into ``outlet``, counted
        against its user's limit (``TooManyRequests`` past it, before anything is
        sent: a refusal is still a 429, not a stream) and tracked until it ends,
        however it ends: then its slot is released, its end logged with how long it
        ran, what it sent and why it ended, and it is counted for /metrics.
        ``group``: the connection it shares, which holds the slot instead."""
        return self.open_log(
            job.id,
            from_index,
            transport,
            credential,
            outlet,
            live=live and not job.is_final,
            group=group,
        )

    def open_log(
        self,
        key: str,
        from_index: int,
        transport: str,
        credential: Credential,
        outlet: Outlet,
        *,
        live: bool = True,
        reader: EventReader | None = None,
        group: StreamGroup | None = None,
    ) -> Follow:
        """``open`` for any log: a job's (its id), or one ``reader`` reads by ``key``
        (a user's change feed)."""
        if group is None:
            self.slots.acquire(credential.user_id)
        else:
            group.admit()
        stream = Follow(
            reader or self.reader,
            self.hub,
            key,
            from_index,
            live=live,
            page_size=self.page_size,
            transport=transport,
            send_timeout=self.send_timeout,
        )
        self.open_streams.add(stream)
        self.credentials[stream] = credential
        self.started[stream] = time.monotonic()
        if group is not None:
            self.grouped[stream] = group
        if stream_log.isEnabledFor(logging.INFO):
            access_log.emit(
                stream_log,
                "stream_start",
                f"stream start {transport} job={key} user={credential.user_id} from={from_index}",
                job_id=key,
                user_id=credential.user_id,
                key_id=credential.key_id,
                transport=transport,
                from_index=from_index,
            )
        stream.on_end = self._ended
        stream.start(outlet)
        return stream

    def _ended(self, stream: Follow) -> None:
        self.open_streams.discard(stream)
        began = self.started.pop(stream, time.monotonic())
        credential = self.credentials.pop(stream, None)
        group = self.grouped.pop(stream, None)
        if group is not None:
            group.members -= 1
        elif credential is not None:
            self.slots.release(credential.user_id)
        reason = stream.closed or "done"  # complete, or the stored events of a non-tailing read
        totals = self.totals.setdefault(stream.transport, Totals())
        totals.streams += 1
        totals.events += stream.sent
        totals.send_timeouts += reason == "send_timeout"
        self.replayed += stream.replayed
        if stream_log.isEnabledFor(logging.INFO):
            user_id = credential.user_id if credential is not None else None
            took = round(time.monotonic() - began, 3)
            access_log.emit(
                stream_log,
                "stream_end",
                f"stream end {stream.transport} job={stream.job_id} user={user_id} "
                f"duration={took}s sent={stream.sent} replayed={stream.replayed} "
                f"next={stream.next_index} complete={stream.complete} reason={reason}",
                job_id=stream.job_id,
                user_id=user_id,
                key_id=credential.key_id if credential is not None else None,
                transport=stream.transport,
                duration_s=took,
                events_sent=stream.sent,
                events_replayed=stream.replayed,
                next_index=stream.next_index,
                complete=stream.complete,
                reason=reason,
            )

    def open_group(
        self,
        credential: Credential,
        transport: str,
        max_members: int,
        on_close: Callable[[str], None],
    ) -> StreamGroup:
        """A connection that will carry several follows: one slot of the user's limit
        (429 past it) until ``StreamGroup.release``; ``on_close(reason)`` when the
        registry ends it (shutdown, revocation)."""
        self.slots.acquire(credential.user_id)
        group = StreamGroup(self, credential, transport, max_members, on_close)
        self.groups.add(group)
        return group

    def close_streams(self, reason: str) -> None:
        for group in list(self.groups):
            group.on_close(reason)
        for stream in list(self.open_streams):
            stream.close(reason)

    async def close_revoked(self) -> int:
        """End every open stream whose key was revoked or whose user was deactivated.

        One query for all open streams, whatever process made the change: this is
        what makes revocation reach streams on every node within a re-check period.
        Streams opened without a key (``ANONYMOUS_KEY``) have none to revoke.
        """
        keyed = {s: c for s, c in self.credentials.items() if c.key_id != ANONYMOUS_KEY}
        keys = {c.key_id for c in keyed.values()}
        keys.update(
            g.credential.key_id for g in self.groups if g.credential.key_id != ANONYMOUS_KEY
        )
        if not keys:
            return 0
        alive = await self.keys.active_keys(keys)
        groups = [g for g in list(self.groups) if g.credential.key_id not in alive]
        for group in groups:
            if group.credential.key_id != ANONYMOUS_KEY:
                group.on_close("revoked")
        revoked = [s for s, c in keyed.items() if c.key_id not in alive]
        for stream in revoked:
            stream.close("revoked")
        return len(revoked) + len(groups)


class StreamGroup:
    """Several follows on one connection: one slot of the user's stream limit."""

    def __init__(
        self,
        registry: StreamRegistry,
        credential: Credential,
        transport: str,
        max_members: int,
        on_close: Callable[[str], None],
    ) -> None:
        self.registry = registry
        self.credential = credential
        self.transport = transport
        self.max_members = max_members
        self.on_close = on_close
        self.members = 0  # follows open on it
        self.released = False

    def admit(self) -> None:
        """One more follow on this connection, or a 400 naming the cap."""
        if self.members >= self.max_members:
            raise BadRequest(
                f"a stream carries at most {self.max_members} jobs (max_jobs_per_stream)",
                field="jobs",
                limit=self.max_members,
            )
        self.members += 1

    def release(self) -> None:
        """The connection is over: its slot is free (once)."""
        if not self.released:
            self.released = True
            self.registry.groups.discard(self)
            self.registry.slots.release(self.credential.user_id)
