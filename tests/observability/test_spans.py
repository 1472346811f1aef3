"""Spans: around each operation, current while the backend client runs (its own spans become children),
and plugin steps reported through lockapi.spi."""

from __future__ import annotations

import threading
from pathlib import Path

from opentelemetry import trace

import lockapi
from lockapi import spi
from lockapi.observability.install import Instrumentation
from tests.observability.conftest import Otel


def test_a_self_instrumenting_client_parents_its_spans_under_the_lockapi_span(
        otel: Otel, instrumented: Instrumentation, tmp_path: Path) -> None:
    import sqlite3

    from opentelemetry.instrumentation.dbapi import trace_integration, unwrap_connect

    # The DB-API instrumentation of sqlite3, under SQLAlchemy: one span per statement.
    trace_integration(sqlite3.dbapi2, "connect", "sqlite", tracer_provider=otel.tracer_provider)
    try:
        with lockapi.connect(f"sqlite:///{tmp_path / 'locks.db'}") as mgr:
            otel.exporter.clear()
            mgr.acquire("invoice:1", ttl=10).release()
    finally:
        unwrap_connect(sqlite3.dbapi2, "connect")
    spans = otel.spans()
    [acquire] = [s for s in spans if s.name == "lockapi.acquire"]
    [release] = [s for s in spans if s.name == "lockapi.release"]
    assert acquire.attributes["lockapi.backend"] == "sqlite" and acquire.attributes["lockapi.token"] >= 1
    for parent in (acquire, release):
        children = [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]
        assert children, f"no sqlite3 statement span under {parent.name}"
        assert all(c.context.trace_id == parent.context.trace_id for c in children)
    assert acquire.parent is None  # no application span around it here


def test_lockapi_spans_are_children_of_the_application_span(otel: Otel, instrumented: Instrumentation,
                                                            prefix: str) -> None:
    tracer = otel.tracer_provider.get_tracer("app")
    with lockapi.connect(f"memory://{prefix}") as mgr, tracer.start_as_current_span("handle-invoice") as app:
        lease = mgr.acquire(f"{prefix}:1", ttl=10)
        assert trace.get_current_span() is app  # the lockapi span was detached again
        lease.release()
    for name in ("lockapi.acquire", "lockapi.release"):
        [span] = otel.spans(name)
        assert span.parent is not None and span.parent.span_id == app.get_span_context().span_id


def test_plugin_steps_are_spans_under_the_operation_or_a_captured_parent(otel: Otel, instrumented: Instrumentation,
                                                                         prefix: str) -> None:
    tracer = otel.tracer_provider.get_tracer("app")
    captured: list[object] = []
    with tracer.start_as_current_span("app") as app:
        with spi.step("migration.dual", f"{prefix}:1", backend="migration", side="r") as step:
            step.outcome = "granted"
        captured.append(spi.trace_context())

    def later() -> None:  # another thread, as the shadow executor runs
        with spi.step("migration.shadow", f"{prefix}:1", backend="migration", parent=captured[0], side="r"):
            pass

    worker = threading.Thread(target=later)
    worker.start()
    worker.join(10)
    [dual] = otel.spans("lockapi.migration.dual")
    [shadow] = otel.spans("lockapi.migration.shadow")
    assert dual.attributes["lockapi.outcome"] == "granted" and dual.attributes["lockapi.side"] == "r"
    assert shadow.attributes["lockapi.outcome"] == "ok"
    for span in (dual, shadow):
        assert span.parent is not None and span.parent.span_id == app.get_span_context().span_id


def test_plugin_signals_count_migration_mismatches(otel: Otel, instrumented: Instrumentation, prefix: str) -> None:
    spi.signal("migration_mismatch", f"{prefix}:1", op="acquire", phase="shadow", verdict="false_grant")
    spi.signal("migration_mismatch", f"{prefix}:2", op="acquire", phase="shadow", verdict="false_grant")
    spi.signal("something_else", f"{prefix}:3")
    assert otel.value("lockapi.migration.mismatches", family=prefix, verdict="false_grant", phase="shadow",
                      op="acquire", backend="migration") == 2


def test_without_observers_plugin_hooks_do_nothing(prefix: str) -> None:
    with spi.step("migration.dual", prefix) as step:
        step.outcome = "granted"
    spi.signal("migration_mismatch", prefix, verdict="false_grant")
    assert spi.trace_context() is None


def test_without_a_tracer_provider_operations_make_no_span_and_leave_the_context_alone() -> None:
    from opentelemetry import context as otel_context
    from opentelemetry.sdk.trace import TracerProvider

    from lockapi.observability.families import Families
    from lockapi.observability.otel import TracingObserver
    from lockapi.observers import Operation

    op = Operation("acquire", "invoice:1", "memory", 0.0)
    before = otel_context.get_current()
    noop = TracingObserver(trace.NoOpTracerProvider().get_tracer("t"), Families())
    assert noop.start(op) is None and otel_context.get_current() is before
    # The global proxy: no span while no provider is set, real spans once one is.
    proxy = TracingObserver(trace.ProxyTracer("t"), Families())
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        assert proxy.start(op) is None and otel_context.get_current() is before
    real = TracingObserver(TracerProvider().get_tracer("t"), Families())
    state = real.start(op)
    assert state is not None and state[0].is_recording()
    op.outcome = "granted"
    real.finish(op, state)
    assert otel_context.get_current() is before
