"""The OpenTelemetry adapter (extra ``lockapi[otel]``, built on opentelemetry-api only).

Metrics: the metrics observer queues what happened and applies it off the caller's thread
(:mod:`lockapi.observability.deferred`). Counters and up-down counters are kept by lockapi (a dict
update under a lock) and reported through observable instruments; the two histograms are synchronous
instruments with lockapi's bucket bounds as advice. Every collection first drains the queue: the SDK
runs observable callbacks before it reads the synchronous instruments, so a reader never misses a
value. Traces: one span per operation (``lockapi.<op>``), current while the backend client runs, so a
client that instruments itself (psycopg, SQLAlchemy, redis-py's pipelines...) parents its spans under it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, TracerProvider

import lockapi
from lockapi.observability.catalogue import COUNTER, HISTOGRAM, METRICS, Metric
from lockapi.observability.deferred import Deferred
from lockapi.observability.families import DEFAULT_LIMIT, Families, FamilyFunction
from lockapi.observability.install import Instrumentation, install
from lockapi.observability.metrics import ACQUIRES, Labels, MetricsObserver, Update, adder
from lockapi.observers import Observer, Operation

SCOPE = "lockapi"
"""The instrumentation scope (meter and tracer name)."""


class OtelSink:
    """The catalogue's metrics on one meter. One per meter provider (instruments cannot be re-created)."""

    def __init__(self, meter: Meter) -> None:
        self.deferred = Deferred()
        self._values: dict[Metric, dict[Labels, float]] = {}
        self._histograms: dict[Metric, Any] = {}
        self._attributes: dict[tuple[Metric, Labels], dict[str, str]] = {}
        for metric in METRICS:
            if metric.instrument == HISTOGRAM:
                self._histograms[metric] = meter.create_histogram(
                    metric.name, unit=metric.unit, description=metric.description,
                    explicit_bucket_boundaries_advisory=list(metric.buckets))
                continue
            self._values[metric] = {}
            create = (meter.create_observable_counter if metric.instrument == COUNTER
                      else meter.create_observable_up_down_counter)
            create(metric.name, callbacks=[self._observe(metric)], unit=metric.unit, description=metric.description)

    def _attrs(self, metric: Metric, labels: Labels) -> dict[str, str]:
        key = (metric, labels)
        attributes = self._attributes.get(key)
        if attributes is None:
            attributes = self._attributes[key] = dict(zip(metric.labels, labels, strict=True))
        return attributes

    def _observe(self, metric: Metric) -> Callable[[CallbackOptions], Iterable[Observation]]:
        values = self._values[metric]

        def callback(options: CallbackOptions) -> Iterable[Observation]:
            self.deferred.drain()
            snapshot = list(values.items())  # one step: the drainer may be adding meanwhile
            return [Observation(value, self._attrs(metric, labels)) for labels, value in snapshot]

        return callback

    def add(self, metric: Metric, labels: Labels, amount: float) -> None:
        self.counter(metric, labels)(amount)

    def record(self, metric: Metric, labels: Labels, value: float) -> None:
        self._histograms[metric].record(value, self._attrs(metric, labels))

    def counter(self, metric: Metric, labels: Labels) -> Update:
        return adder(self._values[metric], labels)

    def histogram(self, metric: Metric, labels: Labels) -> Update:
        record, attributes = self._histograms[metric].record, self._attrs(metric, labels)

        def update(value: float) -> None:  # positional: cheaper than a partial with a keyword
            record(value, attributes)

        return update


class TracingObserver(Observer):
    """One span per operation, current (attached to the context) from start to finish.

    Without a tracer provider (the API's no-op tracer, or the global proxy while no provider is set)
    an operation costs a type test: no span, no attributes, no context change.
    """

    def __init__(self, tracer: Tracer, families: Families) -> None:
        self.tracer = tracer
        self.family = families
        self._proxy = isinstance(tracer, trace.ProxyTracer)
        """The global provider's tracer: spans are no-ops until a provider is set (checked per operation)."""
        self._noop = isinstance(tracer, trace.NoOpTracer)

    def __repr__(self) -> str:
        return "<TracingObserver>"

    def start(self, op: Operation) -> Any:
        if self._noop:
            return None
        if self._proxy:
            if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
                return None  # no provider set yet: every span would be a no-op
            self._proxy = False
        attributes: dict[str, Any] = {"lockapi.op": op.op, "lockapi.backend": op.backend}
        if op.names:
            attributes["lockapi.names.count"] = len(op.names)
        else:
            attributes["lockapi.lock.name"] = op.name
            attributes["lockapi.lock.family"] = self.family(op.name)
        if op.attributes:
            attributes.update((f"lockapi.{key}", value) for key, value in op.attributes.items())
        parent = op.parent if isinstance(op.parent, otel_context.Context) else None
        span = self.tracer.start_span(f"lockapi.{op.op}", context=parent, kind=SpanKind.INTERNAL,
                                      attributes=attributes)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return span, token

    def waiting(self, op: Operation, state: Any) -> None:
        if state is not None:
            state[0].add_event("lockapi.waiting")

    def finish(self, op: Operation, state: Any) -> None:
        if state is None:
            return
        span, token = state
        otel_context.detach(token)
        if span.is_recording():
            span.set_attribute("lockapi.outcome", op.outcome)
            if op.token is not None:
                span.set_attribute("lockapi.token", op.token)
            if op.op in ACQUIRES:
                span.set_attribute("lockapi.wait.seconds", op.seconds)
            if op.names:
                span.set_attribute("lockapi.granted.count", len(op.granted))
            if op.error is not None:
                span.record_exception(op.error)
                span.set_status(Status(StatusCode.ERROR, type(op.error).__name__))
        span.end()

    def context(self) -> Any:
        return otel_context.get_current()


_sinks: weakref.WeakKeyDictionary[Any, OtelSink] = weakref.WeakKeyDictionary()
_sinks_lock = threading.Lock()


def _sink(provider: MeterProvider) -> OtelSink:
    with _sinks_lock:
        sink = _sinks.get(provider)
        if sink is None:
            sink = _sinks[provider] = OtelSink(provider.get_meter(SCOPE, lockapi.__version__))
        return sink


def instrument(meter_provider: MeterProvider | None = None, tracer_provider: TracerProvider | None = None,
               name_label: FamilyFunction | None = None, *, manager: lockapi.LockManager | None = None,
               metrics_enabled: bool = True, traces_enabled: bool = True,
               family_limit: int = DEFAULT_LIMIT) -> Instrumentation:
    """See :func:`lockapi.instrument`."""
    families = Families(name_label, family_limit)
    installed: list[Observer] = []
    if metrics_enabled:
        installed.append(MetricsObserver(_sink(meter_provider or metrics.get_meter_provider()), families))
    if traces_enabled:
        provider = tracer_provider or trace.get_tracer_provider()
        installed.append(TracingObserver(provider.get_tracer(SCOPE, lockapi.__version__), families))
    return install("otel", tuple(installed), manager)
