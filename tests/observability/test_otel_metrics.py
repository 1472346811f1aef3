"""OpenTelemetry metrics after a scripted workload, read with the SDK's in-memory reader (memory and Redis)."""

from __future__ import annotations

import threading

import pytest

import lockapi
from lockapi.observability.catalogue import METRICS
from lockapi.observability.install import Instrumentation
from tests.observability.conftest import Otel, wait_until

UNITS = {m.name: m.unit for m in METRICS}


def test_a_scripted_workload_gives_exact_counts_units_and_labels(otel: Otel, instrumented: Instrumentation,
                                                                 url: str, prefix: str) -> None:
    backend = url.split("://")[0]
    with lockapi.connect(url) as mgr:
        with mgr.acquire(f"{prefix}:1", ttl=10) as lease:
            assert otel.value("lockapi.lock.held", family=prefix, kind="lock") == 1
            assert mgr.try_acquire(f"{prefix}:1") is None
            with pytest.raises(lockapi.LockTimeout):
                mgr.acquire(f"{prefix}:1", ttl=10, wait=0.05)
            assert lease.extend(20)
        assert not lease.release()  # already released by the with block: no backend call, no metric
        sem = mgr.semaphore(prefix, 2)
        permit = sem.acquire(ttl=10)
        assert permit.release()
        mgr.acquire(f"{prefix}:held", ttl=10)  # stays held: acquire_many gets the other two
        granted = mgr.acquire_many([f"{prefix}:held", f"{prefix}:a", f"{prefix}:b"], ttl=10)
        assert sorted(granted) == [f"{prefix}:a", f"{prefix}:b"]

    metrics = otel.metrics()
    for name, metric in metrics.items():
        assert metric.unit == UNITS[name], name
    attempts = {(p.attributes["op"], p.attributes["outcome"]): p.value
                for p in otel.points("lockapi.lock.attempts", family=prefix)}
    assert attempts == {("acquire", "granted"): 2, ("try_acquire", "denied"): 1, ("acquire", "timeout"): 1,
                        ("permit_acquire", "granted"): 1, ("acquire_many", "granted"): 2,
                        ("acquire_many", "denied"): 1}
    for point in otel.points("lockapi.lock.attempts", family=prefix):
        assert set(point.attributes) == {"backend", "op", "family", "outcome"}
        assert point.attributes["backend"] == backend
    waits = {(p.attributes["op"], p.attributes["outcome"]): p for p in otel.points("lockapi.lock.wait.duration",
                                                                                family=prefix)}
    assert waits[("acquire", "timeout")].count == 1 and waits[("acquire", "timeout")].sum >= 0.05
    assert waits[("acquire", "granted")].count == 2 and waits[("acquire", "granted")].sum > 0
    assert waits[("acquire_many", "granted")].count == 1  # one call, one family
    held = {p.attributes["kind"]: p.value for p in otel.points("lockapi.lock.held", family=prefix)}
    assert held == {"lock": 3, "permit": 0}  # held:held, a and b are still held (never released)
    hold = {(p.attributes["kind"], p.attributes["end"]): p.count
            for p in otel.points("lockapi.lock.hold.duration", family=prefix)}
    assert hold == {("lock", "released"): 1, ("permit", "released"): 1}
    ops = {(p.attributes["op"], p.attributes["outcome"]): p.value
           for p in otel.points("lockapi.lease.operations", family=prefix)}
    assert ops == {("extend", "extended"): 1, ("release", "released"): 1, ("permit_release", "released"): 1}
    assert otel.value("lockapi.lease.lost", family=prefix) == 0
    assert otel.value("lockapi.backend.errors", family=prefix) == 0


def test_waiting_callers_are_counted_while_they_wait(otel: Otel, instrumented: Instrumentation, url: str,
                                                     prefix: str) -> None:
    name = f"{prefix}:contended"
    with lockapi.connect(url) as mgr:
        holder = mgr.acquire(name, ttl=30)
        got: list[lockapi.Lease] = []
        waiter = threading.Thread(target=lambda: got.append(mgr.acquire(name, ttl=30, wait=20)))
        waiter.start()
        wait_until(lambda: otel.value("lockapi.lock.waiting", family=prefix, op="acquire") == 1, "a waiting caller")
        holder.release()
        waiter.join(20)
        assert got and got[0].release()
    assert otel.value("lockapi.lock.waiting", family=prefix) == 0
    assert otel.value("lockapi.lock.attempts", family=prefix, op="acquire", outcome="granted") == 2
    waited = [s for s in otel.spans("lockapi.acquire") if s.attributes["lockapi.lock.name"] == name
              and any(e.name == "lockapi.waiting" for e in s.events)]
    assert len(waited) == 1 and waited[0].attributes["lockapi.wait.seconds"] > 0


def test_nothing_is_reported_after_uninstrument(otel: Otel, prefix: str) -> None:
    handle = lockapi.instrument(otel.meter_provider, otel.tracer_provider)
    with lockapi.connect(f"memory://{prefix}") as mgr:
        mgr.acquire(f"{prefix}:1").release()
        handle.uninstrument()
        handle.uninstrument()  # idempotent
        assert mgr._reporter.observer is None and not mgr._reporter.observers.recorders
        mgr.acquire(f"{prefix}:2").release()
    assert otel.value("lockapi.lock.attempts", family=prefix) == 1
    assert len(otel.spans("lockapi.acquire")) == 1


def test_every_operation_is_counted_once_while_collections_race_the_metrics_thread(
        otel: Otel, instrumented: Instrumentation, prefix: str) -> None:
    workers, cycles = 4, 300
    start = threading.Barrier(workers + 1)
    done = threading.Event()

    def work(mgr: lockapi.LockManager, worker: int) -> None:
        start.wait()
        for i in range(cycles):
            lease = mgr.try_acquire(f"{prefix}:{worker}:{i}", ttl=10)
            assert lease is not None
            lease.release()

    def collect() -> None:
        start.wait()
        while not done.is_set():
            otel.metrics()

    with lockapi.connect(f"memory://obs-{prefix}") as mgr:
        threads = [threading.Thread(target=work, args=(mgr, w)) for w in range(workers)]
        collector = threading.Thread(target=collect)
        try:
            for thread in [*threads, collector]:
                thread.start()
            for thread in threads:
                thread.join(60)
        finally:
            done.set()
            collector.join(60)
    total = workers * cycles
    assert otel.value("lockapi.lock.attempts", family=prefix, op="try_acquire", outcome="granted") == total
    assert otel.count("lockapi.lock.wait.duration", family=prefix, op="try_acquire") == total
    assert otel.count("lockapi.lock.hold.duration", family=prefix, end="released") == total
    assert otel.value("lockapi.lease.operations", family=prefix, op="release", outcome="released") == total
    assert otel.value("lockapi.lock.held", family=prefix) == 0
