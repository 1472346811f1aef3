"""The Prometheus adapter (extra ``lockapi[prometheus]``): the catalogue's metrics through prometheus_client.

``instrument_prometheus()`` registers them (once per registry) and installs the observer; ``serve()``
starts an HTTP endpoint in this process. In one process the values live in an
:class:`~lockapi.observability.aggregate.Aggregate` exposed by a custom collector (cheaper per update
than prometheus_client's own metric objects). Processes without an endpoint of their own (cron jobs,
workers) run prometheus_client's multi-process mode instead: with ``PROMETHEUS_MULTIPROC_DIR`` set,
lockapi uses prometheus_client's metric objects, which write to that directory, and
``lockapi serve-metrics`` (:func:`serve_directory`) serves what all processes wrote there. Up-down
counters are gauges in ``livesum`` mode: a dead process's held leases drop out.
"""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

import lockapi
from lockapi.errors import ConfigError
from lockapi.observability.aggregate import Aggregate
from lockapi.observability.catalogue import COUNTER, HISTOGRAM, METRICS, Metric
from lockapi.observability.deferred import Deferred
from lockapi.observability.families import DEFAULT_LIMIT, Families, FamilyFunction
from lockapi.observability.install import Instrumentation, install
from lockapi.observability.metrics import Labels, MetricsObserver, Update


def _doc(metric: Metric) -> str:
    return f"{metric.description} ({metric.name}, {metric.unit})"


class AggregateCollector(Collector):
    """Exposes an :class:`Aggregate` (after draining its observers' queued updates)."""

    def __init__(self, aggregate: Aggregate) -> None:
        self.aggregate = aggregate

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        aggregate = self.aggregate
        aggregate.drain()
        families: list[Any] = []
        for metric in METRICS:
            name, labels = metric.prometheus_name, list(metric.labels)
            if metric.instrument == HISTOGRAM:
                histogram = HistogramMetricFamily(name, _doc(metric), labels=labels, unit="seconds")
                bounds = [*(repr(float(b)) for b in metric.buckets), "+Inf"]
                for values, h in aggregate.histograms(metric):
                    running, cumulative = 0.0, []
                    for bound, count in zip(bounds, h[:-2], strict=True):
                        running += count
                        cumulative.append((bound, running))
                    histogram.add_metric(list(values), cumulative, h[-2])
                families.append(histogram)
                continue
            family = (CounterMetricFamily if metric.instrument == COUNTER else GaugeMetricFamily)(
                name, _doc(metric), labels=labels)
            for values, value in aggregate.values(metric):
                family.add_metric(list(values), value)
            families.append(family)
        return families


class PrometheusSink:
    """prometheus_client's own metric objects (the multi-process mode needs them); label children are
    cached, so an update is one ``inc``/``observe``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._metrics: dict[Metric, Any] = {}
        self._children: dict[tuple[Metric, Labels], Any] = {}
        self.deferred = Deferred()
        registry.register(_DrainFirst(self.deferred))  # before the metrics: a registry collects in order
        for metric in METRICS:
            kwargs: dict[str, Any] = {"labelnames": metric.labels, "registry": registry}
            name, doc = metric.prometheus_name, _doc(metric)
            if metric.instrument == COUNTER:
                self._metrics[metric] = Counter(name, doc, **kwargs)
            elif metric.instrument == HISTOGRAM:
                self._metrics[metric] = Histogram(name, doc, buckets=metric.buckets, unit="seconds", **kwargs)
            else:
                self._metrics[metric] = Gauge(name, doc, multiprocess_mode="livesum", **kwargs)

    def _child(self, metric: Metric, labels: Labels) -> Any:
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._metrics[metric].labels(*labels)
        return child

    def add(self, metric: Metric, labels: Labels, amount: float) -> None:
        self._child(metric, labels).inc(amount)

    def record(self, metric: Metric, labels: Labels, value: float) -> None:
        self._child(metric, labels).observe(value)

    def counter(self, metric: Metric, labels: Labels) -> Update:
        return self._child(metric, labels).inc  # type: ignore[no-any-return]

    def histogram(self, metric: Metric, labels: Labels) -> Update:
        return self._child(metric, labels).observe  # type: ignore[no-any-return]


class _DrainFirst(Collector):
    """Registered ahead of the metrics: each collection applies the observers' queued updates first."""

    def __init__(self, deferred: Deferred) -> None:
        self._deferred = deferred

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        self._deferred.drain()
        return []


_sinks: weakref.WeakKeyDictionary[CollectorRegistry, Aggregate | PrometheusSink] = weakref.WeakKeyDictionary()
_sinks_lock = threading.Lock()


def multiprocess_mode() -> bool:
    """True when prometheus_client writes its values to ``$PROMETHEUS_MULTIPROC_DIR``."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def _sink(registry: CollectorRegistry) -> Aggregate | PrometheusSink:
    with _sinks_lock:
        sink = _sinks.get(registry)
        if sink is None:
            if multiprocess_mode():
                sink = PrometheusSink(registry)
            else:
                sink = Aggregate()
                registry.register(AggregateCollector(sink))
            _sinks[registry] = sink
        return sink


def instrument(registry: CollectorRegistry | None = None, name_label: FamilyFunction | None = None, *,
               manager: lockapi.LockManager | None = None, family_limit: int = DEFAULT_LIMIT) -> Instrumentation:
    """See :func:`lockapi.instrument_prometheus`."""
    families = Families(name_label, family_limit)
    observer = MetricsObserver(_sink(registry or prometheus_client.REGISTRY), families)
    return install("prometheus", (observer,), manager)


class Endpoint:
    """A running metrics HTTP endpoint; ``close()`` stops it."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.port: int = server.server_port
        self.addr: str = server.server_address[0]

    def __repr__(self) -> str:
        return f"<metrics endpoint http://{self.addr}:{self.port}/metrics>"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def serve(port: int, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None) -> Endpoint:
    """Serve ``registry`` (default: prometheus_client's) at ``http://addr:port/metrics`` from a daemon
    thread of this process. Port 0 picks a free port (``endpoint.port``)."""
    try:
        server, thread = prometheus_client.start_http_server(port, addr, registry or prometheus_client.REGISTRY)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}") from exc
    return Endpoint(server, thread)


class _LiveProcesses(Collector):
    """prometheus_client's multi-process collector, after dropping the live gauges of dead processes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._collector = prometheus_multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
            None, path=str(path))

    def collect(self) -> Any:
        for pid in {_pid(f) for f in self._path.glob("gauge_live*_*.db")} - {None}:
            if not _alive(pid):
                prometheus_multiprocess.mark_process_dead(pid, str(self._path))  # type: ignore[no-untyped-call]
        return self._collector.collect()  # type: ignore[no-untyped-call]


def _pid(path: Path) -> int | None:
    tail = path.stem.rpartition("_")[2]
    return int(tail) if tail.isdigit() else None


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def serve_directory(directory: str | os.PathLike[str], port: int, addr: str = "127.0.0.1") -> Endpoint:
    """Serve the metrics every process writes to ``directory`` (prometheus_client's multi-process mode,
    ``PROMETHEUS_MULTIPROC_DIR``), summed over processes; live gauges count live processes only."""
    path = Path(directory)
    if not path.is_dir():
        raise ConfigError(f"metrics directory {path} does not exist: create it, and set "
                          "PROMETHEUS_MULTIPROC_DIR to it in the processes that report metrics")
    registry = CollectorRegistry()
    registry.register(_LiveProcesses(path))
    return serve(port, addr, registry)
