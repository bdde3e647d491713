"""Counters the hot paths keep for ``/metrics``, with no metrics library in the way.

The append path, the SQLite writer and the fan-out only bump plain numbers they own;
the server's collector turns them into metric families when ``/metrics`` is scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator


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

    def cumulative(self) -> Iterator[tuple[str, int]]:
        """``(upper bound, observations at or below it)``, ending with ``+Inf``."""
        running = 0
        for bound, count in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            yield bound, running
