"""Sustained load on every backend, then a leak check.

``LOCKAPI_SOAK_SECONDS`` (default 3) is the load time PER BACKEND: 8 backends make about 30 s.
Set it higher for a real soak (e.g. ``LOCKAPI_SOAK_SECONDS=600``).

What the default run catches, and why 3 s is enough for it (it was 7 s): a lease, permit, queue place,
thread or server connection that some operation leaves behind, and two holders at once. The after-close
checks compare with zero or with the count before the load, so one forgotten release on any path shows
however short the load; what the load must do is take every path many times under contention. In 3 s the
slowest backend (Hazelcast cp mode, ~120 ops/s on this shared machine) still runs ~370 operations, about
45 of each of the 8 kinds, and the others thousands (a run's counts are printed with ``-s``). A leak that
only shows after a long time (a slow growth) is the real soak's job, not this run's.

Load: 8 threads over two managers (two "nodes") hammer 200 lock names and 20 semaphores with acquire,
try_acquire, acquire_many, extend, auto-renew, fair waits (where supported) and semaphore permits,
checking in-process that a lock never has two holders and a semaphore never more than its permits.
Afterwards, with both managers closed: nothing is held or queued any more, the stored keys/rows stay
bounded by the number of names, and server connections and this process's threads are back to where
they were before.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from typing import Any

import pytest

import lockapi
from lockapi import Capability, LockTimeout
from tests.reliability.targets import Target
from tests.servers.common import wait_until

SECONDS = float(os.environ.get("LOCKAPI_SOAK_SECONDS", "3"))
THREADS = 8
NAMES = 200
SEMAPHORES = 20
PERMITS = 3


def _warm_up(target: Target) -> None:
    """Start this process's lazily created singletons (the auto-renew scheduler) before counting threads."""
    with lockapi.connect(target.url, **target.options) as mgr:
        mgr.acquire("soak:warm-up", ttl=5, auto_renew=True).release()


def _poll(check: Any, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return bool(check())


def test_postgresql_close_stops_its_threads(request: pytest.FixtureRequest) -> None:
    server = request.getfixturevalue("pg")
    lockapi.connect(server.url).close()  # any per-process singleton exists from here on
    before = threading.active_count()
    for i in range(5):
        with lockapi.connect(server.url) as mgr:
            assert mgr.try_acquire(f"watchdog:{i}") is not None
    assert _poll(lambda: threading.active_count() <= before, 10), (
        f"{threading.active_count() - before} threads left after 5 connect/close: "
        f"{sorted(t.name for t in threading.enumerate())}")


def test_redis_close_closes_its_connections(request: pytest.FixtureRequest) -> None:
    server = request.getfixturevalue("redis_standalone")
    client = server.client()
    before = len(client.client_list())
    mgr = lockapi.connect(server.url)
    workers = [threading.Thread(target=lambda: [mgr.acquire(f"c:{i}", ttl=5, wait=5).release()
                                                 for i in range(20)]) for _ in range(4)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(60)
    mgr.close()
    assert _poll(lambda: len(client.client_list()) <= before, 5), (
        f"{len(client.client_list()) - before} connections still open after close()")


def test_sustained_load_leaks_nothing(target: Target, name: str, request: pytest.FixtureRequest) -> None:
    _warm_up(target)
    target.footprint()  # its own client (hazelcast) exists before the threads are counted
    threads_before = threading.active_count()
    conns_before = target.connections()
    managers = [lockapi.connect(target.url, **target.options) for _ in range(2)]
    fair_ok = Capability.FAIR in managers[0].capabilities
    guard = threading.Lock()
    holders: Counter[str] = Counter()
    peaks = {"lock": 0, "semaphore": 0}
    ops: Counter[str] = Counter()
    failures: list[BaseException] = []
    deadline = time.monotonic() + SECONDS

    def enter(key: str, limit: int, kind: str) -> None:
        with guard:
            holders[key] += 1
            peaks[kind] = max(peaks[kind], holders[key])
            if holders[key] > limit:
                failures.append(AssertionError(f"{holders[key]} holders of {key} (limit {limit})"))

    def leave(key: str) -> None:
        with guard:
            holders[key] -= 1

    def worker(index: int) -> None:
        rnd = random.Random(index)
        mgr = managers[index % 2]
        try:
            while time.monotonic() < deadline:
                op = rnd.choice(["acquire", "acquire", "try", "many", "extend", "renew", "fair", "sem"])
                lock = f"{name}:{rnd.randrange(NAMES)}"
                try:
                    if op == "sem":
                        sem_name = f"{name}:sem:{rnd.randrange(SEMAPHORES)}"
                        with mgr.semaphore(sem_name, PERMITS).acquire(ttl=30, wait=0.5):
                            enter("s:" + sem_name, PERMITS, "semaphore")
                            time.sleep(rnd.random() / 500)
                            leave("s:" + sem_name)
                    elif op == "many":
                        names = [f"{name}:{rnd.randrange(NAMES)}" for _ in range(5)]
                        leases = mgr.acquire_many(names, ttl=30)
                        for got in leases:
                            enter(got, 1, "lock")
                        for got, lease in leases.items():
                            leave(got)
                            lease.release()
                    else:
                        if op == "try":
                            lease = mgr.try_acquire(lock, ttl=30)
                            if lease is None:
                                ops["denied"] += 1
                                continue
                        else:
                            lease = mgr.acquire(lock, ttl=30, wait=0.5, auto_renew=op == "renew",
                                                fair=op == "fair" and fair_ok)
                        enter(lock, 1, "lock")
                        if op == "extend":
                            assert lease.extend(30) is True
                        time.sleep(rnd.random() / 500)
                        leave(lock)
                        assert lease.release() is True
                    ops[op] += 1
                except LockTimeout:
                    ops["timeout"] += 1
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(THREADS)]
    started = time.monotonic()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(SECONDS + 120)
    elapsed = time.monotonic() - started
    hung = [t for t in workers if t.is_alive()]
    for mgr in managers:
        mgr.close()
    assert not hung, f"{len(hung)} load threads still running"
    assert not failures, failures[:3]
    total_ops = sum(v for k, v in ops.items() if k not in ("denied", "timeout"))
    print(f"\nsoak {target.id}: {total_ops} operations in {elapsed:.1f}s ({total_ops / elapsed:.0f}/s), "
          f"{ops['denied']} denied, {ops['timeout']} timed out; peaks {peaks}")
    assert total_ops > 0 and peaks["lock"] == 1 and 1 <= peaks["semaphore"] <= PERMITS

    # Nothing held or queued (fair queue places live at most a second unrefreshed).
    final: dict[str, Any] = {}

    def settled() -> bool:
        final.update(target.footprint())
        return final.get("live", 0) == 0

    wait_until(settled, 15, f"no live leases, permits or waiters on {target.id} (last {final})")
    assert final.get("total", 0) <= 4 * (NAMES + SEMAPHORES) + 10, f"stored entries grew: {final}"

    assert _poll(lambda: threading.active_count() <= threads_before), (
        f"threads after close: {sorted(t.name for t in threading.enumerate())}; {threads_before} before")
    if conns_before is not None:
        assert _poll(lambda: (target.connections() or 0) <= conns_before), (
            f"server connections {target.connections()} after close, {conns_before} before")
    print(f"after close: footprint {final}, connections {conns_before}->{target.connections()}, "
          f"threads {threads_before}->{threading.active_count()}")
