"""The Prometheus adapter (extra ``lockapi[prometheus]``): the catalogue's metrics through prometheus_client.

``instrument_prometheus()`` registers them (once per registry) and installs the observer; ``serve()``
starts an HTTP endpoint in this process. Processes without an endpoint of their own (cron jobs,
workers) run prometheus_client's multi-process mode instead: set ``PROMETHEUS_MULTIPROC_DIR`` in their
environment, and let ``lockapi serve-metrics`` (:func:`serve_directory`) serve what they all write
there. Up-down counters are gauges in ``livesum`` mode: a dead process's held leases drop out.
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
from prometheus_client.registry import Collector

import lockapi
from lockapi.errors import ConfigError
from lockapi.observability.catalogue import COUNTER, HISTOGRAM, METRICS, Metric
from lockapi.observability.families import DEFAULT_LIMIT, Families, FamilyFunction
from lockapi.observability.install import Instrumentation, install
from lockapi.observability.metrics import Labels, MetricsObserver


class PrometheusSink:
    """The catalogue's metrics in one registry; label children are cached (an update is one ``inc``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._metrics: dict[Metric, Any] = {}
        self._children: dict[tuple[Metric, Labels], Any] = {}
        for metric in METRICS:
            kwargs: dict[str, Any] = {"labelnames": metric.labels, "registry": registry}
            name, doc = metric.prometheus_name, f"{metric.description} ({metric.name}, {metric.unit})"
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


_sinks: weakref.WeakKeyDictionary[CollectorRegistry, PrometheusSink] = weakref.WeakKeyDictionary()
_sinks_lock = threading.Lock()


def _sink(registry: CollectorRegistry) -> PrometheusSink:
    with _sinks_lock:
        sink = _sinks.get(registry)
        if sink is None:
            sink = _sinks[registry] = PrometheusSink(registry)
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
