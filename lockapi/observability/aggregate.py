"""An in-process aggregate of the catalogue's metrics: counters, gauges and bucketed histograms.

What the Prometheus adapter exposes through a custom collector when a process serves its own metrics
(an update is a dict change under a lock and, for a histogram, one ``bisect``: a fraction of
prometheus_client's per-update cost). Values are cumulative from process start, like a Prometheus
client's.
"""

from __future__ import annotations

import bisect
import threading
import weakref
from typing import TYPE_CHECKING

from lockapi.observability.catalogue import HISTOGRAM, METRICS, Metric

if TYPE_CHECKING:
    from lockapi.observability.metrics import Labels, MetricsObserver

Histogram = list[float]
"""[count per bucket (one per bound, then +Inf)..., sum, count]."""


class Aggregate:
    """A :class:`~lockapi.observability.metrics.Sink` that keeps the values itself. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[Metric, dict[Labels, float]] = {m: {} for m in METRICS if m.instrument != HISTOGRAM}
        self._histograms: dict[Metric, dict[Labels, Histogram]] = {m: {} for m in METRICS
                                                                   if m.instrument == HISTOGRAM}
        self.observers: weakref.WeakSet[MetricsObserver] = weakref.WeakSet()

    def attach(self, observer: MetricsObserver) -> None:
        self.observers.add(observer)

    def add(self, metric: Metric, labels: Labels, amount: float) -> None:
        values = self._values[metric]
        with self._lock:
            values[labels] = values.get(labels, 0) + amount

    def record(self, metric: Metric, labels: Labels, value: float) -> None:
        index = bisect.bisect_left(metric.buckets, value)  # the first bound >= value ("le"), else +Inf
        histograms = self._histograms[metric]
        with self._lock:
            histogram = histograms.get(labels)
            if histogram is None:
                histogram = histograms[labels] = [0.0] * (len(metric.buckets) + 3)
            histogram[index] += 1
            histogram[-2] += value
            histogram[-1] += 1

    def drain(self) -> None:
        """Apply every attached observer's queued updates."""
        for observer in list(self.observers):
            observer.drain()

    def values(self, metric: Metric) -> list[tuple[Labels, float]]:
        with self._lock:
            return list(self._values[metric].items())

    def histograms(self, metric: Metric) -> list[tuple[Labels, Histogram]]:
        with self._lock:
            return [(labels, list(h)) for labels, h in self._histograms[metric].items()]
