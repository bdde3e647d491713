"""``/metrics`` in the Prometheus text format, read off counters the parts already keep.

The hot paths (append, fan-out, the writer) only bump plain integers they own, and
histograms are fixed arrays of bucket counters (``Histogram``); this collector turns
them into metric families at scrape time. So a scrape costs the work, not every
append, and there is no process-global registry: each app has its own. No label
holds a job id, user or key (labels are transports only), so cardinality is fixed.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

if TYPE_CHECKING:  # the storage writer imports Histogram; context imports storage
    from .context import Context

TRANSPORTS = ("sse", "ws", "text")
# Appends are acknowledged after COMMIT: a group commit takes ~1 ms idle, tens of ms
# under load, seconds only when the disk stalls.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Operations per commit group: 1 when idle, up to the writer's MAX_GROUP (2,000).
GROUP_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


class Histogram:
    """Fixed buckets, plain counters: ``observe`` is a bisect and two additions.

    Owned by one thread (the event loop), so no lock; read at scrape time.
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le: a value on a bound counts
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        cumulative, running = [], 0
        for bound, count in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            cumulative.append((bound, running))
        return HistogramMetricFamily(name, documentation, buckets=cumulative, sum_value=self.total)


def task_count() -> int:
    """asyncio tasks alive in the server's loop (a leak shows up here first)."""
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # no running loop: scraped from another thread
        return 0


class StreamerCollector(Collector):
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        ctx, hub = self.ctx, self.ctx.hub
        open_by = {t: [s for s in ctx.open_streams if s.transport == t] for t in TRANSPORTS}

        readers = GaugeMetricFamily(
            "streamer_live_readers", "Open streams by transport", labels=["transport"]
        )
        catching_up = GaugeMetricFamily(
            "streamer_readers_catching_up",
            "Open streams reading stored events right now (replay, or catch-up after "
            "falling behind the live buffer)",
            labels=["transport"],
        )
        started = CounterMetricFamily(
            "streamer_streams", "Streams ended, by transport", labels=["transport"]
        )
        slow = CounterMetricFamily(
            "streamer_slow_reader_closes",
            "Streams closed because the client took longer than send_timeout_seconds "
            "to accept a write",
            labels=["transport"],
        )
        delivered = CounterMetricFamily(
            "streamer_events_delivered", "Events written to readers", labels=["transport"]
        )
        for t in TRANSPORTS:
            readers.add_metric([t], len(open_by[t]))
            catching_up.add_metric([t], sum(1 for s in open_by[t] if s.replaying))
            started.add_metric([t], ctx.finished[f"{t}:streams"])
            slow.add_metric([t], ctx.finished[f"{t}:send_timeout"])
            delivered.add_metric([t], ctx.finished[f"{t}:events"] + sum(s.sent for s in open_by[t]))
        yield from (readers, catching_up, started, slow, delivered)
        yield CounterMetricFamily(
            "streamer_stream_starts_refused",
            "Stream starts refused by max_stream_starts_per_second (503 / close 1013)",
            ctx.start_rate.refused,
        )
        yield GaugeMetricFamily("streamer_tasks", "asyncio tasks in the server", task_count())

        yield CounterMetricFamily(
            "streamer_events_published", "Committed events handed to the hub", hub.published
        )
        yield CounterMetricFamily(
            "streamer_reader_lags",
            "Times a reader's live buffer overflowed and it caught up from storage",
            hub.lag_events,
        )
        yield CounterMetricFamily(
            "streamer_replay_events_read",
            "Events read from storage by readers (replay and catch-up)",
            ctx.finished["replayed"] + sum(s.replayed for s in ctx.open_streams),
        )
        yield ctx.append_latency.family(
            "streamer_append_latency_seconds",
            "Time from an append request's arrival to its 2xx (sent after COMMIT)",
        )
        writer = getattr(ctx.storage, "writer_stats", None)
        if writer is not None:
            groups, ops, failed = writer()
            yield CounterMetricFamily(
                "streamer_commit_groups", "Write transactions committed", groups
            )
            yield CounterMetricFamily(
                "streamer_commit_group_operations", "Writes committed in groups", ops
            )
            yield CounterMetricFamily(
                "streamer_storage_errors", "Commit groups that failed", failed
            )
        sizes = group_sizes(ctx)
        if sizes is not None:
            yield sizes.family(
                "streamer_commit_group_size", "Write operations per committed group (SQLite)"
            )


def group_sizes(ctx: Context) -> Histogram | None:
    """The SQLite writer's group-size histogram; ``None`` on PostgreSQL (no writer)."""
    sizes = getattr(ctx.storage, "group_sizes", None)
    return sizes() if sizes is not None else None


def registry_for(ctx: Context) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StreamerCollector(ctx))
    # process_resident_memory_bytes, process_open_fds, CPU seconds: from /proc, at scrape.
    ProcessCollector(registry=registry)
    return registry


async def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics
    return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")
