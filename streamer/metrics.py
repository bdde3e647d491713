"""``/metrics`` in the Prometheus text format, read off counters the parts already keep.

The hot paths (append, fan-out) only bump plain integers they own; this collector
turns them into metric families at scrape time. So a scrape costs the work, not every
append, and there is no process-global registry: each app has its own. No label
holds a job id, user or key, so cardinality stays fixed.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from .context import Context

TRANSPORTS = ("sse", "ws", "text")


class StreamerCollector(Collector):
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        ctx, hub = self.ctx, self.ctx.hub
        open_by = {t: [s for s in ctx.open_streams if s.transport == t] for t in TRANSPORTS}

        readers = GaugeMetricFamily(
            "streamer_live_readers", "Open streams by transport", labels=["transport"]
        )
        started = CounterMetricFamily(
            "streamer_streams", "Streams ended, by transport", labels=["transport"]
        )
        delivered = CounterMetricFamily(
            "streamer_events_delivered", "Events written to readers", labels=["transport"]
        )
        for t in TRANSPORTS:
            readers.add_metric([t], len(open_by[t]))
            started.add_metric([t], ctx.finished[f"{t}:streams"])
            delivered.add_metric([t], ctx.finished[f"{t}:events"] + sum(s.sent for s in open_by[t]))
        yield from (readers, started, delivered)

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


def registry_for(ctx: Context) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StreamerCollector(ctx))
    return registry


async def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics
    return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")
