"""The conformance tests. Numbers in test names refer to the rules in docs/semantics.md."""

from __future__ import annotations

import contextlib
import itertools
import math
import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator
from multiprocessing.context import ForkServerContext, SpawnContext
from pathlib import Path
from typing import Any

import pytest

import lockapi
from lockapi import (
    Capability,
    InvalidArgument,
    InvalidName,
    Job,
    LeaseLost,
    LockManager,
    LockTimeout,
    UnsupportedFeature,
)
from lockapi.observers import Observer, Operation
from lockapi.testing import workers
from lockapi.testing.blocking import blocking_manager
from lockapi.testing.interleavings import InterleavingConformance

BAD_NAMES: list[Any] = ["", "x" * 1025, "é" * 513, "a\x00b", "\ud800", None, 42, b"bytes"]
BAD_TTLS: list[Any] = [0, -1, math.nan, math.inf, -math.inf, "10", True, 11 * 365 * 24 * 3600.0]

sync_only = pytest.mark.parametrize("api", ["sync"])
"""For a test whose asyncio variant would check nothing more: its work happens in child processes, which
speak the sync API, and what the parent does through ``manager`` is checked over both APIs elsewhere.
The test is generated for the sync API only (not skipped for async: a skip could hide a missing server)."""


class WaitingCount(Observer):
    """Counts the acquires of one name that started to wait: an event to synchronise on, not a sleep.

    Core calls ``Observer.waiting`` once per acquire whose first attempt was denied, after that attempt
    (the sync API from :func:`lockapi.waiting.wait_for_grant`; the async one from
    :func:`lockapi.aio.waiting.wait_for_grant`, or when it queues for its manager's local turn, which
    fair waiters never do). By then the waiter has subscribed to wake-ups, and a fair waiter's denied
    attempt has put it in the backend's queue. Install it on every manager whose waiters count.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self._changed = threading.Condition()

    def waiting(self, op: Operation, state: Any) -> None:
        if op.name == self.name:
            with self._changed:
                self.count += 1
                self._changed.notify_all()

    def wait_for(self, count: int, timeout: float, what: str) -> None:
        """Return once ``count`` acquires started to wait; AssertionError after ``timeout`` seconds."""
        with self._changed:
            reached = self._changed.wait_for(lambda: self.count >= count, timeout)
            assert reached, (f"{what}: {self.count} of {count} acquires of {self.name!r} started to wait "
                             f"within {timeout:g} s")

    @contextlib.contextmanager
    def on(self, *managers: Any) -> Iterator[WaitingCount]:
        """Installed on ``managers`` for the block."""
        for mgr in managers:
            mgr.add_observer(self)
        try:
            yield self
        finally:
            for mgr in managers:
                mgr.remove_observer(self)


class LockConformance(InterleavingConformance):
    """Every rule of the lockapi contract, checked against the backend at ``lock_url``."""

    short_ttl = 1.0
    """ttl (seconds) for expiry tests; raise it for backends with coarse expiry."""
    margin = 1.5
    """Extra seconds allowed for anything timed (the test machine may be slow and shared)."""
    process_context: SpawnContext | ForkServerContext = multiprocessing.get_context("spawn")
    """Where the multi-process checks get their child processes and events (``test_1_processes_never_overlap``,
    ``test_2_killed_holders_lease_expires_after_its_ttl``, ``test_6_waiter_in_another_process_granted_promptly``):
    a "spawn" or "forkserver" :mod:`multiprocessing` context. The default, "spawn", starts each child as a
    fresh interpreter that imports lockapi and the backend again (1-3 s per child on a busy machine) and
    inherits nothing from the test process. A "forkserver" context whose ``set_forkserver_preload`` lists
    your backend's modules forks children in milliseconds and is just as clean: the server process never
    runs a test or opens a connection. Plain "fork" is refused (a ``TypeError`` before any child starts):
    it would copy pytest's threads and open connections into the child. Children run
    :mod:`lockapi.testing.workers` functions (picklable by name)."""

    def _children(self) -> SpawnContext | ForkServerContext:
        """:attr:`process_context`, refused with a clear error if it is not "spawn" or "forkserver"."""
        ctx = self.process_context
        if ctx.get_start_method() not in ("spawn", "forkserver"):
            raise TypeError(f"{type(self).__name__}.process_context starts children by "
                            f"{ctx.get_start_method()!r}: use multiprocessing.get_context('spawn') or a "
                            f"'forkserver' context (a forked child would inherit pytest's threads and connections)")
        return ctx

    # -- fixtures ----------------------------------------------------------------------------------
    @pytest.fixture
    def lock_options(self) -> dict[str, Any]:
        return {}

    @pytest.fixture(params=["sync", "async"])
    def api(self, request: pytest.FixtureRequest) -> str:
        """Which API the managers speak: ``lockapi`` or ``lockapi.aio`` (seen through a blocking view)."""
        return str(request.param)

    def _connect(self, api: str, lock_url: str, lock_options: dict[str, Any]) -> Any:
        if api == "async":
            return blocking_manager(lock_url, **lock_options)
        return lockapi.connect(lock_url, **lock_options)

    @pytest.fixture
    def manager(self, api: str, lock_url: str, lock_options: dict[str, Any]) -> Iterator[LockManager]:
        with self._connect(api, lock_url, lock_options) as mgr:
            yield mgr

    @pytest.fixture
    def other(self, api: str, lock_url: str, lock_options: dict[str, Any]) -> Iterator[LockManager]:
        """A second, independent connection: another node."""
        with self._connect(api, lock_url, lock_options) as mgr:
            yield mgr

    @pytest.fixture
    def name(self) -> str:
        return f"conformance:{uuid.uuid4().hex}"

    def _require(self, manager: LockManager, capability: Capability) -> None:
        if capability not in manager.capabilities:
            pytest.skip(f"backend does not declare {capability.name}")

    # -- 1. mutual exclusion -----------------------------------------------------------------------
    def test_1_held_name_is_refused_to_everyone(self, manager: LockManager, other: LockManager,
                                                name: str) -> None:
        lease = manager.acquire(name, ttl=30)
        assert other.try_acquire(name) is None
        with pytest.raises(LockTimeout):
            other.acquire(name, wait=0.2)
        assert lease.release() is True
        assert other.try_acquire(name) is not None

    def test_1_threads_never_overlap(self, manager: LockManager, other: LockManager, name: str) -> None:
        inside, peak, grants = [0], [0], []
        guard = threading.Lock()
        errors: list[BaseException] = []

        def worker(mgr: LockManager) -> None:
            try:
                for _ in range(10):
                    with mgr.acquire(name, ttl=30, wait=60) as lease:
                        with guard:
                            inside[0] += 1
                            peak[0] = max(peak[0], inside[0])
                            grants.append(lease.token)
                        time.sleep(0.001)
                        with guard:
                            inside[0] -= 1
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(manager if i % 2 else other,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        assert not errors, errors
        assert peak[0] == 1
        assert len(grants) == 60
        assert grants == sorted(grants) and len(set(grants)) == 60

    @sync_only
    def test_1_processes_never_overlap(self, manager: LockManager, lock_url: str,
                                       lock_options: dict[str, Any], name: str, tmp_path: Path) -> None:
        if Capability.MULTI_PROCESS not in manager.capabilities:
            pytest.skip("backend is in-process only (no MULTI_PROCESS capability)")
        ctx = self._children()
        outs = [tmp_path / f"w{i}.txt" for i in range(4)]
        procs = [ctx.Process(target=workers.contend, args=(lock_url, lock_options, name, 15, str(out), 30.0))
                 for out in outs]
        for p in procs:
            p.start()
        for p in procs:
            p.join(300)
        assert [p.exitcode for p in procs] == [0] * 4
        grants = sorted(tuple(map(int, line.split())) for out in outs for line in out.read_text().splitlines())
        assert len(grants) == 60
        for (_, end, token), (start, _, next_token) in itertools.pairwise(grants):
            assert start >= end, "two processes held the lock at the same time"
            assert next_token > token, "fencing tokens did not increase in grant order"

    # -- 2. expiry by the backend's clock ----------------------------------------------------------
    def test_2_lease_expires_after_ttl_not_before(self, manager: LockManager, other: LockManager,
                                                  name: str) -> None:
        ttl = self.short_ttl
        lease = manager.acquire(name, ttl=ttl)
        granted_at = time.monotonic()
        assert other.try_acquire(name) is None
        assert time.monotonic() - granted_at < ttl, "machine too slow to observe the lease before expiry"
        successor = other.acquire(name, ttl=30, wait=ttl + self.margin + 5)
        waited = time.monotonic() - granted_at
        assert waited >= ttl * 0.9, f"lock free after {waited:.3f}s, before its ttl of {ttl}s"
        assert waited <= ttl + self.margin + 5
        assert successor.token > lease.token
        assert lease.lost is True
        assert lease.extend() is False
        assert lease.release() is False
        assert successor.release() is True

    def test_2_a_lease_granted_after_a_long_wait_is_not_lost(self, manager: LockManager, other: LockManager,
                                                             name: str) -> None:
        """The local deadline counts from the attempt that was granted, not from the start of the wait."""
        ttl = self.short_ttl
        holder = other.acquire(name, ttl=ttl * 1.5)
        started = time.monotonic()
        lease = manager.acquire(name, ttl=ttl, wait=ttl * 1.5 + self.margin + 5)
        assert time.monotonic() - started > ttl, "the waiter was granted before the holder's lease ended"
        assert not lease.lost, "a lease granted after waiting longer than its ttl reports itself lost at once"
        assert lease.is_held() and lease.release()
        assert holder.release() is False

    @sync_only
    def test_2_killed_holders_lease_expires_after_its_ttl(
        self, manager: LockManager, lock_url: str, lock_options: dict[str, Any], name: str, tmp_path: Path
    ) -> None:
        if Capability.MULTI_PROCESS not in manager.capabilities:
            pytest.skip("backend is in-process only (no MULTI_PROCESS capability)")
        if Capability.BACKEND_EXPIRY not in manager.capabilities:
            pytest.skip("backend frees a dead holder's lease later than its ttl (no BACKEND_EXPIRY): see its docs")
        ttl = max(self.short_ttl, 2.0)
        ctx = self._children()
        ready, out = ctx.Event(), tmp_path / "held.txt"
        proc = ctx.Process(target=workers.hold_forever, args=(lock_url, lock_options, name, ttl, ready, str(out)))
        proc.start()
        try:
            assert ready.wait(120), "holder process did not get the lock"
            granted_ns, token = map(int, out.read_text().split())
        finally:
            proc.kill()
            proc.join(30)
        lease = manager.acquire(name, ttl=30, wait=ttl + self.margin + 5)
        free_after = (time.monotonic_ns() - granted_ns) / 1e9
        assert free_after >= ttl * 0.9, f"a killed holder's lock was free after {free_after:.2f}s < ttl {ttl}s"
        assert free_after <= ttl + self.margin + 5
        assert lease.token > token
        lease.release()

    def test_2_extend_keeps_the_lease(self, manager: LockManager, other: LockManager, name: str) -> None:
        ttl = self.short_ttl
        lease = manager.acquire(name, ttl=ttl)
        for _ in range(3):
            time.sleep(ttl / 3)
            assert lease.extend() is True
        assert other.try_acquire(name) is None
        assert lease.extend(ttl=30) is True and lease.ttl == 30
        time.sleep(ttl + 0.2)
        assert lease.is_held() is True
        assert lease.release() is True

    def test_2_context_manager_raises_lease_lost_after_expiry(self, manager: LockManager,
                                                              other: LockManager, name: str) -> None:
        with pytest.raises(LeaseLost), manager.acquire(name, ttl=self.short_ttl) as lease:
            taken = other.acquire(name, ttl=30, wait=self.short_ttl + self.margin + 5)
        assert lease.lost
        taken.release()

    def test_2_block_exception_wins_over_lease_lost(self, manager: LockManager, other: LockManager,
                                                    name: str) -> None:
        with pytest.raises(KeyError), manager.acquire(name, ttl=self.short_ttl):
            other.acquire(name, ttl=30, wait=self.short_ttl + self.margin + 5).release()
            raise KeyError("from the block")

    # -- 3. fencing tokens -------------------------------------------------------------------------
    def test_3_tokens_strictly_increase_across_grants_and_connections(
        self, manager: LockManager, lock_url: str, lock_options: dict[str, Any], name: str
    ) -> None:
        tokens = []
        for _ in range(3):
            lease = manager.acquire(name, ttl=30)
            tokens.append(lease.token)
            lease.release()
        with lockapi.connect(lock_url, **lock_options) as fresh:  # a client restart
            lease = fresh.acquire(name, ttl=self.short_ttl)
            tokens.append(lease.token)
        after_expiry = manager.acquire(name, ttl=30, wait=self.short_ttl + self.margin + 5)
        tokens.append(after_expiry.token)
        after_expiry.release()
        tokens.append(next(iter(manager.acquire_many([name], ttl=30).values())).token)
        assert all(isinstance(t, int) for t in tokens)
        assert all(b > a for a, b in itertools.pairwise(tokens)), tokens

    def test_3_fence_floor_moves_the_next_token_not_the_live_one(self, manager: LockManager,
                                                                 other: LockManager, name: str) -> None:
        if Capability.ADMIN not in manager.capabilities:
            pytest.skip("backend has no ADMIN capability (set_fence_floor)")
        lease = manager.acquire(name, ttl=30)
        floor = lease.token + 1000
        manager.backend.set_fence_floor(name, floor)
        assert lease.is_held() and lease.extend(), "raising the floor disturbed the live lease"
        assert lease.release() is True
        nxt = other.acquire(name, ttl=30)
        assert nxt.token > floor
        nxt.release()
        permit = manager.semaphore(name, 2).acquire(ttl=30)
        manager.backend.set_fence_floor(name, permit.token + 1000, semaphore=True)
        assert permit.is_held() and permit.release()
        assert other.semaphore(name, 2).acquire(ttl=30).token > permit.token + 1000

    # -- 4. not reentrant --------------------------------------------------------------------------
    def test_4_not_reentrant_in_the_same_thread(self, manager: LockManager, name: str) -> None:
        lease = manager.acquire(name, ttl=30)
        assert manager.try_acquire(name) is None
        with pytest.raises(LockTimeout):
            manager.acquire(name, wait=0.1)
        assert lease.release() is True

    def test_4_any_thread_may_release_or_extend(self, manager: LockManager, name: str) -> None:
        lease = manager.acquire(name, ttl=30)
        results: list[bool] = []
        t = threading.Thread(target=lambda: results.extend([lease.extend(), lease.release()]))
        t.start()
        t.join(30)
        assert results == [True, True]
        assert manager.inspect(name) is None

    # -- 5. release is idempotent ------------------------------------------------------------------
    def test_5_second_release_returns_false(self, manager: LockManager, name: str) -> None:
        lease = manager.acquire(name, ttl=30)
        assert lease.release() is True
        assert lease.release() is False
        assert lease.extend() is False
        assert lease.is_held() is False

    def test_5_release_by_a_stale_holder_does_not_free_the_successor(
        self, manager: LockManager, other: LockManager, name: str
    ) -> None:
        stale = manager.acquire(name, ttl=self.short_ttl)
        successor = other.acquire(name, ttl=30, wait=self.short_ttl + self.margin + 5)
        assert stale.release() is False
        assert successor.is_held() is True
        assert manager.try_acquire(name) is None
        successor.release()

    # -- 6. waiting and hand-off -------------------------------------------------------------------
    def test_6_waiter_granted_promptly_after_release(self, manager: LockManager, other: LockManager,
                                                     name: str) -> None:
        lease = manager.acquire(name, ttl=30)
        result: dict[str, float] = {}

        def waiter() -> None:
            got = other.acquire(name, ttl=30, wait=30)
            result["at"] = time.monotonic()
            got.release()

        with WaitingCount(name).on(other) as waiting:
            t = threading.Thread(target=waiter)
            t.start()
            waiting.wait_for(1, 60, "the waiter did not block on the held lock")
            released_at = time.monotonic()
            assert lease.release() is True
            t.join(40)
        handoff = result["at"] - released_at
        assert handoff < 0.5 + self.margin, f"hand-off took {handoff:.3f}s with a 30 s holder ttl"

    @sync_only
    def test_6_waiter_in_another_process_granted_promptly(
        self, manager: LockManager, lock_url: str, lock_options: dict[str, Any], name: str, tmp_path: Path
    ) -> None:
        if Capability.MULTI_PROCESS not in manager.capabilities:
            pytest.skip("backend is in-process only (no MULTI_PROCESS capability)")
        ctx = self._children()
        ready = ctx.Event()
        out = tmp_path / "granted.txt"
        lease = manager.acquire(name, ttl=30)
        proc = ctx.Process(target=workers.wait_then_report,
                           args=(lock_url, lock_options, name, ready, str(out)))
        proc.start()
        assert ready.wait(120), "the child process did not start waiting for the held lock"
        released = time.monotonic_ns()
        assert lease.release() is True
        proc.join(90)
        assert proc.exitcode == 0
        handoff = (int(out.read_text()) - released) / 1e9
        assert handoff < 0.5 + self.margin, f"cross-process hand-off took {handoff:.3f}s"

    def test_6_zero_wait_raises_lock_timeout(self, manager: LockManager, other: LockManager,
                                             name: str) -> None:
        lease = manager.acquire(name, ttl=30)
        with pytest.raises(LockTimeout):
            other.acquire(name, wait=0)
        permit = manager.semaphore(name, 1).acquire(ttl=30, wait=0)
        with pytest.raises(LockTimeout):
            other.semaphore(name, 1).acquire(wait=0)
        assert lease.release() and permit.release()

    def test_6_timeout_is_honoured(self, manager: LockManager, other: LockManager, name: str) -> None:
        lease = manager.acquire(name, ttl=30)
        started = time.monotonic()
        with pytest.raises(LockTimeout):
            other.acquire(name, wait=0.5)
        elapsed = time.monotonic() - started
        assert 0.5 <= elapsed < 0.5 + self.margin
        lease.release()

    # -- 7. fair mode ------------------------------------------------------------------------------
    def test_7_fair_grants_in_arrival_order(self, manager: LockManager, other: LockManager,
                                            name: str) -> None:
        if Capability.FAIR not in manager.capabilities:
            with pytest.raises(UnsupportedFeature):
                manager.acquire(name, fair=True)
            return
        holder = manager.acquire(name, ttl=30)
        order: list[int] = []
        errors: list[BaseException] = []

        def waiter(i: int) -> None:
            try:
                with (manager if i % 2 else other).acquire(name, ttl=30, wait=60, fair=True):
                    order.append(i)
            except BaseException as exc:
                errors.append(exc)

        threads = []
        with WaitingCount(name).on(manager, other) as waiting:
            for i in range(4):  # arrival order is the order under test: each joins the queue before the next
                threads.append(threading.Thread(target=waiter, args=(i,)))
                threads[-1].start()
                waiting.wait_for(i + 1, 60, f"fair waiter {i} did not join the queue")
            holder.release()
            for t in threads:
                t.join(90)
        assert not errors, errors
        assert order == [0, 1, 2, 3]

    def test_7_release_wakes_the_fair_head_watching_under_its_holder_id(
        self, manager: LockManager, other: LockManager, name: str
    ) -> None:
        """A backend may address a fair release to the head of the queue only; the head must hear it."""
        self._require(manager, Capability.FAIR)
        self._require(manager, Capability.PUSH_WAKEUP)
        lease = manager.acquire(name, ttl=30)
        backend = other.backend
        woken = {h: threading.Event() for h in ("head", "second")}
        for h in woken:  # queue entries that outlive the test: nobody is dropped as stale
            assert backend.try_acquire(name, h, 30, queue_ttl=60).token is None
        with backend.watch(name, woken["head"].set, holder="head"), \
                backend.watch(name, woken["second"].set, holder="second"):
            lease.release()
            assert woken["head"].wait(self.margin + 1), "the head of the queue was not woken"
            token = backend.try_acquire(name, "head", 30, queue_ttl=60).token
            assert token is not None and token > lease.token
        backend.cancel_wait(name, "second")
        assert backend.release(name, "head", token)

    def test_7_fair_waiter_that_gave_up_does_not_block(self, manager: LockManager, other: LockManager,
                                                       name: str) -> None:
        if Capability.FAIR not in manager.capabilities:
            pytest.skip("backend has no fair mode")
        holder = manager.acquire(name, ttl=30)
        with pytest.raises(LockTimeout):
            other.acquire(name, wait=0.3, fair=True)
        holder.release()
        started = time.monotonic()
        lease = other.acquire(name, ttl=30, wait=10, fair=True)
        assert time.monotonic() - started < 0.5 + self.margin
        lease.release()

    # -- 8. semaphores -----------------------------------------------------------------------------
    def test_8_semaphore_limits_live_permits(self, manager: LockManager, other: LockManager,
                                             name: str) -> None:
        sem_a, sem_b = manager.semaphore(name, 3), other.semaphore(name, 3)
        permits = [sem_a.try_acquire(ttl=30), sem_b.try_acquire(ttl=30), sem_a.try_acquire(ttl=30)]
        assert all(p is not None for p in permits)
        assert sem_b.try_acquire(ttl=30) is None
        tokens = [p.token for p in permits if p is not None]
        assert tokens == sorted(tokens) and len(set(tokens)) == 3
        assert permits[0] is not None and permits[0].release() is True
        assert permits[0].release() is False
        again = sem_b.acquire(ttl=30, wait=5)
        assert again.token > max(tokens)
        assert manager.try_acquire(name) is not None, "locks and semaphores of one name are separate"

    def test_8_permits_expire(self, manager: LockManager, other: LockManager, name: str) -> None:
        first = manager.semaphore(name, 1).acquire(ttl=self.short_ttl)
        assert other.semaphore(name, 1).try_acquire() is None
        started = time.monotonic()
        second = other.semaphore(name, 1).acquire(ttl=30, wait=self.short_ttl + self.margin + 5)
        assert time.monotonic() - started <= self.short_ttl + self.margin + 5
        assert second.token > first.token
        assert first.release() is False and first.lost
        assert second.is_held() and second.extend() and second.release()

    def test_8_semaphore_under_thread_contention(self, manager: LockManager, other: LockManager,
                                                 name: str) -> None:
        inside, peak = [0], [0]
        guard = threading.Lock()

        def worker(mgr: LockManager) -> None:
            sem = mgr.semaphore(name, 2)
            for _ in range(8):
                with sem.acquire(ttl=30, wait=60):
                    with guard:
                        inside[0] += 1
                        peak[0] = max(peak[0], inside[0])
                    time.sleep(0.002)
                    with guard:
                        inside[0] -= 1

        threads = [threading.Thread(target=worker, args=(manager if i % 2 else other,)) for i in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        assert peak[0] <= 2
        assert inside[0] == 0

    # -- 9. done markers and the job API ------------------------------------------------------------
    def test_9_processed_element_is_not_locked_again(self, manager: LockManager, other: LockManager,
                                                     name: str) -> None:
        job = Job(name, ttl=30, done_ttl=60)
        jobs, other_jobs = manager.jobs(), other.jobs()
        assert jobs.lock(job, 1) is True
        assert other_jobs.lock(job, 1) is False
        jobs.successfully_processed(job, 1)
        assert other_jobs.lock(job, 1) is False
        assert other_jobs.is_processed(job, 1) is True
        assert other_jobs.lock(job, 2) is True
        other_jobs.unlock(job, 2)
        assert jobs.lock(job, 2) is True, "unlock without success lets the element be retried"
        jobs.unlock(job, 2)

    def test_9_done_marker_expires(self, manager: LockManager, name: str) -> None:
        job = Job(name, ttl=30, done_ttl=self.short_ttl)
        jobs = manager.jobs()
        assert jobs.lock(job, "e")
        jobs.successfully_processed(job, "e")
        assert jobs.is_processed(job, "e")
        deadline = time.monotonic() + self.short_ttl + self.margin + 5
        while jobs.is_processed(job, "e") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert jobs.lock(job, "e") is True
        jobs.unlock(job, "e")

    def test_9_lock_many_skips_held_and_done(self, manager: LockManager, other: LockManager,
                                             name: str) -> None:
        job = Job(name, ttl=30)
        jobs, other_jobs = manager.jobs(), other.jobs()
        assert other_jobs.lock(job, 3)
        assert other_jobs.lock(job, 4)
        other_jobs.successfully_processed(job, 4)
        got = jobs.lock_many(job, range(10))
        assert got == [0, 1, 2, 5, 6, 7, 8, 9]
        assert other_jobs.lock_many(job, range(10)) == []
        for element in got:
            jobs.successfully_processed(job, element)
        other_jobs.unlock(job, 3)
        assert other_jobs.lock_many(job, range(10)) == [3]

    def test_9_job_semaphore_limits_concurrency(self, manager: LockManager, other: LockManager,
                                                name: str) -> None:
        job = Job(name, ttl=30, max_concurrency=2)
        sem_a, sem_b = manager.job_semaphore(), other.job_semaphore()
        assert sem_a.try_acquire(job) and sem_b.try_acquire(job)
        assert not sem_a.try_acquire(job)
        sem_b.release(job)
        assert sem_a.try_acquire(job)
        sem_a.release(job)
        sem_a.release(job)
        with pytest.raises(InvalidArgument):
            sem_a.release(job)

    # -- 10. auto-renew ----------------------------------------------------------------------------
    def test_10_auto_renew_keeps_the_lease_past_its_ttl(self, manager: LockManager, other: LockManager,
                                                        name: str) -> None:
        """Renewed (at least three times: each renewal, not only the first, extends it), the lease is still
        held half a ttl past its first expiry, when an unrenewed one would have lapsed by the backend's
        clock; the check waits for the renewals it needs, not a fixed time."""
        ttl = self.short_ttl
        renewed = threading.Semaphore(0)

        def on_event(event: lockapi.Event) -> None:
            if event.op == "renew" and event.name == name and event.outcome:
                renewed.release()

        manager.add_listener(on_event)
        try:
            started = time.monotonic()
            lease = manager.acquire(name, ttl=ttl, auto_renew=True)
            for _ in range(3):
                assert renewed.acquire(timeout=ttl + self.margin + 5), "auto-renewal did not renew the lease"
            time.sleep(max(0.0, started + ttl * 1.5 - time.monotonic()))  # past the first expiry, not a sync
            assert other.try_acquire(name) is None
            assert lease.is_held() and not lease.lost
            assert lease.release() is True
        finally:
            manager.remove_listener(on_event)

    def test_10_lost_renewal_is_reported_once(self, manager: LockManager, other: LockManager,
                                              name: str) -> None:
        ttl = self.short_ttl
        calls: list[Any] = []
        reported = threading.Event()

        def on_lost(lost: lockapi.Lease) -> None:
            calls.append(lost)
            reported.set()

        lease = manager.acquire(name, ttl=ttl, auto_renew=True, on_lost=on_lost)
        # Someone else's release takes the lease away (as an operator or an expiry would).
        assert manager.backend.release(name, lease.holder, lease.token) is True
        thief = other.acquire(name, ttl=30, wait=5)
        assert reported.wait(ttl + self.margin + 5)
        assert calls == [lease] and lease.lost
        time.sleep(ttl)
        assert calls == [lease]
        assert thief.is_held()
        assert lease.release() is False
        thief.release()

    # -- API surface ---------------------------------------------------------------------------------
    def test_inspect_shows_holder_token_and_time_left(self, manager: LockManager, name: str) -> None:
        assert manager.inspect(name) is None
        lease = manager.acquire(name, ttl=30)
        info = manager.inspect(name)
        assert info is not None
        assert (info.name, info.holder, info.token) == (name, lease.holder, lease.token)
        assert 0 < info.ttl_remaining <= 30
        lease.release()
        assert manager.inspect(name) is None

    def test_acquire_many_returns_the_free_names(self, manager: LockManager, other: LockManager,
                                                 name: str) -> None:
        names = [f"{name}:{i}" for i in range(20)]
        held = other.acquire(names[5], ttl=30)
        leases = manager.acquire_many(names, ttl=30)
        assert sorted(leases) == sorted(n for n in names if n != names[5])
        assert all(lease.name == n and lease.is_held() for n, lease in leases.items())
        assert manager.acquire_many(names, ttl=30) == {}
        for lease in leases.values():
            assert lease.release()
        held.release()

    def test_capabilities_are_declared(self, manager: LockManager) -> None:
        assert isinstance(manager.capabilities, frozenset)
        assert all(isinstance(c, Capability) for c in manager.capabilities)

    @pytest.mark.parametrize("bad", BAD_NAMES, ids=repr)
    def test_bad_names_are_rejected_before_io(self, manager: LockManager, bad: Any) -> None:
        with pytest.raises(InvalidName) as err:
            manager.acquire(bad, wait=0)
        assert isinstance(err.value, (ValueError, TypeError))
        with pytest.raises(InvalidName):
            manager.try_acquire(bad)
        with pytest.raises(InvalidName):
            manager.semaphore(bad, 2)
        with pytest.raises(InvalidName):
            manager.acquire_many(["fine", bad])
        assert manager.inspect("fine") is None, "a rejected batch wrote nothing"

    @pytest.mark.parametrize("bad", BAD_TTLS, ids=repr)
    def test_bad_ttls_are_rejected_before_io(self, manager: LockManager, name: str, bad: Any) -> None:
        with pytest.raises(InvalidArgument):
            manager.acquire(name, ttl=bad)
        with pytest.raises(InvalidArgument):
            manager.semaphore(name, 1).try_acquire(ttl=bad)
        assert manager.inspect(name) is None

    @pytest.mark.parametrize("kwargs", [{"wait": -1}, {"wait": math.nan}, {"wait": "1"},
                                        {"on_lost": 5}])
    def test_bad_arguments_are_rejected_before_io(self, manager: LockManager, name: str,
                                                  kwargs: dict[str, Any]) -> None:
        with pytest.raises(InvalidArgument):
            manager.acquire(name, **kwargs)
        assert manager.inspect(name) is None

    @pytest.mark.parametrize("permits", [0, -1, 1.5, True, None])
    def test_bad_permits_are_rejected(self, manager: LockManager, name: str, permits: Any) -> None:
        with pytest.raises(InvalidArgument):
            manager.semaphore(name, permits)

    def test_awkward_names_work(self, manager: LockManager, name: str) -> None:
        for suffix in ["'; DROP TABLE x; --", "{tag}", "\\", "ünï©ødé 🔒", "%s %(x)s", "\n\t", "KEYS[1]"]:
            awkward = f"{name}:{suffix}"
            lease = manager.acquire(awkward, ttl=30)
            assert manager.try_acquire(awkward) is None
            assert manager.inspect(awkward) is not None
            assert lease.release()
        longest = name + "x" * (1024 - len(name.encode()))
        lease = manager.acquire(longest, ttl=30)
        assert manager.try_acquire(longest) is None
        assert lease.release()

    def test_listeners_see_decisions(self, manager: LockManager, name: str) -> None:
        seen: list[lockapi.Event] = []
        manager.add_listener(seen.append)
        lease = manager.acquire(name, ttl=30)
        assert manager.try_acquire(name) is None
        lease.release()
        manager.remove_listener(seen.append)  # a new bound-method object, equal to the one added
        assert manager.try_acquire(name, ttl=30).release()  # type: ignore[union-attr]
        assert [(e.op, e.outcome) for e in seen] == [("acquire", True), ("try_acquire", False),
                                                    ("release", True)], "a removed listener was called"
        assert seen[0].token == lease.token and seen[0].seconds >= 0
