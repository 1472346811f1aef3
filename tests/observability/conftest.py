"""OpenTelemetry SDK in-memory reader/exporter, and managers on memory:// and the session Redis server."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import lockapi
from lockapi import observers
from lockapi.observability.install import Instrumentation
from tests.servers.redis import RedisServer

Point = tuple[str, frozenset[tuple[str, Any]]]


@dataclass
class Otel:
    reader: InMemoryMetricReader
    exporter: InMemorySpanExporter
    meter_provider: MeterProvider
    tracer_provider: TracerProvider

    def metrics(self) -> dict[str, Any]:
        """{metric name: SDK Metric} of one collection."""
        data = self.reader.get_metrics_data()
        found: dict[str, Any] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found[metric.name] = metric
        return found

    def points(self, name: str, **match: str) -> list[Any]:
        """The data points of ``name`` whose attributes include ``match``."""
        metric = self.metrics().get(name)
        if metric is None:
            return []
        return [p for p in metric.data.data_points if all(p.attributes.get(k) == v for k, v in match.items())]

    def value(self, name: str, **match: str) -> float:
        """Sum of the matching counter/gauge points (0 if none)."""
        return sum(p.value for p in self.points(name, **match))

    def count(self, name: str, **match: str) -> int:
        """Sum of the matching histogram points' counts."""
        return sum(p.count for p in self.points(name, **match))

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]


@pytest.fixture
def otel() -> Iterator[Otel]:
    reader = InMemoryMetricReader()
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Otel(reader, exporter, MeterProvider(metric_readers=[reader]), tracer_provider)
    assert observers.installed() == (), "a test left process-wide observers installed"


@pytest.fixture
def instrumented(otel: Otel) -> Iterator[Instrumentation]:
    handle = lockapi.instrument(otel.meter_provider, otel.tracer_provider)
    yield handle
    handle.uninstrument()


@pytest.fixture(params=["memory", "redis"])
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return f"memory://obs-{secrets.token_hex(4)}"
    server: RedisServer = request.getfixturevalue("redis_standalone")
    return server.url


@pytest.fixture
def prefix() -> str:
    """A fresh family per test, so tests on the shared Redis never see each other's names."""
    return f"t{secrets.token_hex(4)}"


def wait_until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll a condition that another thread makes true (bounded; fails with ``what``)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)
