"""Expiry is decided by the backend's clock: memory:// with an injected clock shows it exactly."""

from __future__ import annotations

import itertools

import lockapi

_n = itertools.count()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_expiry_follows_the_backend_clock_not_the_callers() -> None:
    clock = FakeClock()
    url = f"memory://clock-{next(_n)}"
    with lockapi.connect(url, clock=clock) as a, lockapi.connect(url) as b:
        lease = a.acquire("job", ttl=10)
        clock.now += 9.99
        assert b.try_acquire("job") is None
        info = b.inspect("job")
        assert info is not None and abs(info.ttl_remaining - 0.01) < 1e-6
        clock.now += 0.02
        assert b.inspect("job") is None
        successor = b.try_acquire("job")
        assert successor is not None and successor.token == lease.token + 1
        assert lease.release() is False


def test_done_markers_and_permits_use_the_backend_clock() -> None:
    clock = FakeClock()
    with lockapi.connect(f"memory://clock-{next(_n)}", clock=clock) as mgr:
        job = lockapi.Job("j", ttl=5, done_ttl=60)
        jobs = mgr.jobs()
        assert jobs.lock(job, 1)
        jobs.successfully_processed(job, 1)
        clock.now += 59
        assert jobs.is_processed(job, 1)
        clock.now += 2
        assert not jobs.is_processed(job, 1)
        sem = mgr.semaphore("s", 1)
        permit = sem.acquire(ttl=5)
        assert sem.try_acquire() is None
        clock.now += 5
        assert sem.try_acquire() is not None
        assert permit.release() is False
