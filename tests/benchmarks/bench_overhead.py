"""Instrumentation overhead: the uncontended Redis cycle plain and with each observability adapter.

One process, one Redis server, the subjects' runs interleaved slice by slice as in :mod:`bench_cycles`;
ratios are taken run by run. Each instrumented subject scopes its adapter to its own manager, so the
plain subject stays plain. The adapters work partly on background threads (the metrics queue, the span
processor): each slice ends by settling its subject's queued work (counted in its time and CPU), so
none of it runs in, and is charged to, the next subject's slice: the figures are the adapters' whole
cost, as on a machine with no idle core. OpenTelemetry runs on the real SDK: an in-memory metric
reader (collection happens at scrape/export time, not per operation) and, for traces, a batch span
processor whose exporter drops the spans (every span sampled and recorded: the worst case).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tests.benchmarks.bench_cycles import WARMUP, cycles
from tests.benchmarks.bench_stats import Figure
from tests.benchmarks.bench_subjects import Env, LockapiLocker, Locker

SLICES = 6


def _otel(traces: bool) -> Callable[[Env], Locker]:
    def make(env: Env) -> Locker:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        import lockapi

        class Drop(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        locker = Instrumented(env["redis_url"])
        meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(BatchSpanProcessor(Drop()))
        locker.handle = lockapi.instrument(meter_provider, tracer_provider, manager=locker.mgr, traces=traces)
        locker.flush = tracer_provider.force_flush
        return locker

    return make


def _prometheus(env: Env) -> Locker:
    from prometheus_client import CollectorRegistry

    import lockapi

    locker = Instrumented(env["redis_url"])
    locker.handle = lockapi.instrument_prometheus(CollectorRegistry(), manager=locker.mgr)
    return locker


def _plain(env: Env) -> Locker:
    return Instrumented(env["redis_url"])


class Instrumented(LockapiLocker):
    handle: Any = None
    flush: Any = None

    def settle(self) -> None:
        """Finish the background work the cycles so far queued (metrics updates, spans)."""
        for observer in self.handle.observers if self.handle is not None else ():
            drain = getattr(observer, "drain", None)
            if drain is not None:
                drain()
        if self.flush is not None:
            self.flush()


def _settled(locker: Locker, name: str, seconds: float) -> tuple[int, float, float]:
    """:func:`cycles`, then :meth:`Instrumented.settle`, both timed."""
    import time

    cpu, start = time.process_time(), time.perf_counter()
    n, _, _ = cycles(locker, name, seconds)
    assert isinstance(locker, Instrumented)
    locker.settle()
    return n, time.perf_counter() - start, time.process_time() - cpu


OVERHEAD_SUBJECTS: dict[str, tuple[str, Callable[[Env], Locker]]] = {
    "plain": ("lockapi redis, not instrumented", _plain),
    "otel_metrics": ("+ OpenTelemetry metrics (SDK)", _otel(traces=False)),
    "otel_traces": ("+ OpenTelemetry metrics and traces (SDK, every span sampled)", _otel(traces=True)),
    "prometheus": ("+ prometheus_client metrics", _prometheus),
}
"""key: (label, factory); every factory returns an :class:`Instrumented`."""

Overhead = tuple[dict[str, Figure], dict[str, Figure]]
"""({key: cycles/s}, {key: client CPU µs per cycle})."""


def measure(env: Env, *, runs: int, seconds: float, notes: list[str]) -> Overhead:
    """In a fresh process (no other subject's threads), like the cycles section."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        try:
            result, part_notes = pool.submit(_measure_here, env, runs, seconds).result()
        except Exception as exc:
            notes.append(f"overhead: left out: {type(exc).__name__}: {exc}")
            return {}, {}
    notes.extend(part_notes)
    return result


def _measure_here(env: Env, runs: int, seconds: float) -> tuple[Overhead, list[str]]:
    notes: list[str] = []
    lockers: dict[str, Locker] = {}
    for key, (label, make) in OVERHEAD_SUBJECTS.items():
        try:
            locker = make(env)
            cycles(locker, f"overhead:{key}", min(seconds, WARMUP))
            lockers[key] = locker
        except Exception as exc:
            notes.append(f"overhead: {label} left out: {type(exc).__name__}: {exc}")
    rates: dict[str, list[float]] = {k: [] for k in lockers}
    cpu: dict[str, list[float]] = {k: [] for k in lockers}
    try:
        for _ in range(runs):
            totals = {k: [0, 0.0, 0.0] for k in lockers}
            for _slice in range(SLICES):
                for key, locker in lockers.items():
                    n, wall, used = _settled(locker, f"overhead:{key}", seconds / SLICES)
                    t = totals[key]
                    t[0] += n
                    t[1] += wall
                    t[2] += used
            for key, (n, wall, used) in totals.items():
                rates[key].append(n / wall)
                cpu[key].append(used / n * 1e6)
    finally:
        for locker in lockers.values():
            locker.close()
    return ({k: Figure.of(v) for k, v in rates.items()}, {k: Figure.of(v) for k, v in cpu.items()}), notes


def slowdowns(overhead: Overhead) -> dict[str, tuple[Figure, Figure]]:
    """{key: (plain/instrumented cycles per second, instrumented/plain CPU per cycle)}: 1.05 = 5 % slower."""
    from tests.benchmarks.bench_stats import ratio

    rates, cpu = overhead
    if "plain" not in rates:
        return {}
    return {k: (ratio(rates["plain"], rates[k]), ratio(cpu[k], cpu["plain"])) for k in rates if k != "plain"}


def rows(overhead: Overhead) -> Sequence[tuple[str, str, str, str, str]]:
    """(subject, cycles/s, slowdown, client CPU µs/cycle, CPU ratio) table rows."""
    rates, cpu = overhead
    slow = slowdowns(overhead)
    out = []
    for key, (label, _) in OVERHEAD_SUBJECTS.items():
        if key in rates:
            s = slow.get(key)
            out.append((label, rates[key].fmt(), s[0].fmt(3) + "x" if s else "", cpu[key].fmt(),
                        s[1].fmt(3) + "x" if s else ""))
    return out
