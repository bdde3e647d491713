"""``/metrics`` in the Prometheus text format, read off counters the parts already keep.

The hot paths (append, fan-out, the writer) only bump plain integers they own, and
histograms are fixed arrays of bucket counters (``core.stats.Histogram``); this
collector turns them into metric families at scrape time. So a scrape costs the work, not every
append, and there is no process-global registry: each app has its own. No label
holds a job id, user or key (labels are transports only), so cardinality is fixed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

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

from ..core.stats import Histogram
from .resources import Resources


def histogram(values: Histogram, name: str, documentation: str) -> HistogramMetricFamily:
    return HistogramMetricFamily(
        name, documentation, buckets=list(values.cumulative()), sum_value=values.total
    )


def task_count() -> int:
    """asyncio tasks alive in the server's loop (a leak shows up here first)."""
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # no running loop: scraped from another thread
        return 0


class StreamerCollector(Collector):
    def __init__(self, resources: Resources) -> None:
        self.resources = resources

    def collect(self) -> Iterator[Metric]:
        res, hub = self.resources, self.resources.hub
        streams = res.streams
        totals = streams.totals
        open_by = {t: [s for s in streams.open_streams if s.transport == t] for t in totals}

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
        for t, total in totals.items():
            readers.add_metric([t], len(open_by[t]))
            catching_up.add_metric([t], sum(1 for s in open_by[t] if s.replaying))
            started.add_metric([t], total.streams)
            slow.add_metric([t], total.send_timeouts)
            delivered.add_metric([t], total.events + sum(s.sent for s in open_by[t]))
        yield from (readers, catching_up, started, slow, delivered)
        yield CounterMetricFamily(
            "streamer_stream_starts_refused",
            "Stream starts refused by max_stream_starts_per_second (503 / close 1013)",
            streams.start_rate.refused,
        )
        yield GaugeMetricFamily("streamer_tasks", "asyncio tasks in the server", task_count())

        yield CounterMetricFamily(
            "streamer_events_published",
            "Committed events handed to the hub",
            hub.published - res.changes_published,
        )
        yield CounterMetricFamily(
            "streamer_changes_published",
            "Committed changes of users' change feeds handed to the hub",
            res.changes_published,
        )
        yield CounterMetricFamily(
            "streamer_reader_lags",
            "Times a reader's live buffer overflowed and it caught up from storage",
            hub.lag_events,
        )
        yield CounterMetricFamily(
            "streamer_replay_events_read",
            "Events read from storage by readers (replay and catch-up)",
            streams.replayed + sum(s.replayed for s in streams.open_streams),
        )
        yield histogram(
            res.append_latency,
            "streamer_append_latency_seconds",
            "Time from an append request's arrival to its 2xx (sent after COMMIT)",
        )
        writer = getattr(res.storage, "writer_stats", None)
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
        sizes = getattr(res.storage, "group_sizes", None)  # the SQLite writer's
        if sizes is not None:
            yield histogram(
                sizes(),
                "streamer_commit_group_size",
                "Write operations per committed group (SQLite)",
            )


def registry_for(resources: Resources) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StreamerCollector(resources))
    # process_resident_memory_bytes, process_open_fds, CPU seconds: from /proc, at scrape.
    ProcessCollector(registry=registry)
    return registry


async def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics
    return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")
