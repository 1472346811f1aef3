"""An in-process aggregate of the catalogue's metrics: counters, gauges and bucketed histograms.

What the Prometheus adapter exposes through a custom collector when a process serves its own metrics
(an update is a dict change and, for a histogram, one ``bisect``, without a lock: only the queue's one
drainer writes; a fraction of prometheus_client's per-update cost). Values are cumulative from process
start, like a Prometheus client's.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING

from lockapi.observability.catalogue import HISTOGRAM, METRICS, Metric
from lockapi.observability.deferred import Deferred
from lockapi.observability.metrics import adder

if TYPE_CHECKING:
    from lockapi.observability.metrics import Labels, Update

Histogram = list[float]
"""[count per bucket (one per bound, then +Inf)..., sum, count]."""


class Aggregate:
    """A :class:`~lockapi.observability.metrics.Sink` that keeps the values itself. Written only by its
    queue's drainer; read (after a drain) by snapshots that copy in one step."""

    def __init__(self) -> None:
        self.deferred = Deferred()
        self._values: dict[Metric, dict[Labels, float]] = {m: {} for m in METRICS if m.instrument != HISTOGRAM}
        self._histograms: dict[Metric, dict[Labels, Histogram]] = {m: {} for m in METRICS
                                                                   if m.instrument == HISTOGRAM}

    def add(self, metric: Metric, labels: Labels, amount: float) -> None:
        self.counter(metric, labels)(amount)

    def record(self, metric: Metric, labels: Labels, value: float) -> None:
        self.histogram(metric, labels)(value)

    def counter(self, metric: Metric, labels: Labels) -> Update:
        return adder(self._values[metric], labels)

    def histogram(self, metric: Metric, labels: Labels) -> Update:
        histograms, buckets = self._histograms[metric], metric.buckets
        size = len(buckets) + 3

        def record(value: float) -> None:
            histogram = histograms.get(labels)
            if histogram is None:
                histogram = histograms[labels] = [0.0] * size
            histogram[bisect_left(buckets, value)] += 1  # the first bound >= value ("le"), else +Inf
            histogram[-2] += value
            histogram[-1] += 1

        return record

    def drain(self) -> None:
        """Apply every queued update."""
        self.deferred.drain()

    def values(self, metric: Metric) -> list[tuple[Labels, float]]:
        return list(self._values[metric].items())

    def histograms(self, metric: Metric) -> list[tuple[Labels, Histogram]]:
        with self.deferred.draining:  # a histogram's fields are updated one by one: read between updates
            return [(labels, list(h)) for labels, h in self._histograms[metric].items()]
