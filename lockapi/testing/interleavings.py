"""Conformance under interleavings: one holder stopped between two round trips while another proceeds.

Every pause point a backend declares (``Backend.pause_points``) and core's own (:data:`CORE_PAUSE_POINTS`)
is walked by the scenario of its operation. Each scenario asserts the contract of docs/semantics.md:
no two live holders (rule 1), a stopped holder's lease ends by the backend's clock and the holder finds
out (rule 2), tokens strictly up (rule 3), a stale release or extend never touches the successor (rule 5),
no grant or queue entry orphaned by an interrupted operation, no false ``lost``.

The stopped holder ("A") runs in its own thread on ``manager``; the other holder ("B") acts on ``other``,
another connection. Synchronisation is by events: a scenario waits until A has stopped at the point,
lets B act (B's own waits end when the backend frees the lock), then resumes A.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lockapi import BackendUnavailable, Capability, Job, Lease, LeaseLost, LockManager, LockTimeout
from lockapi.testing.pauses import CORE_PAUSE_POINTS, Pause, operation_of, pause_at, record_points


class _Run(threading.Thread):
    """Run ``fn`` in a thread; keep its result or exception."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True, name="lockapi-paused-holder")
        self._fn = fn
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:
            self.error = exc

    def outcome(self, timeout: float) -> Any:
        self.join(timeout)
        assert not self.is_alive(), f"the paused holder did not finish within {timeout:g} s of resuming"
        if self.error is not None:
            raise self.error
        return self.result


class InterleavingConformance:
    """Mixed into :class:`lockapi.testing.LockConformance`; uses its fixtures and timing attributes."""

    short_ttl: float
    margin: float

    def _points(self, manager: LockManager, *operations: str) -> list[str]:
        points = (manager.backend.pause_points - manager.backend.contended_pause_points) | CORE_PAUSE_POINTS
        return sorted(p for p in points if operation_of(p) in operations)

    def _expiry_wait(self) -> float:
        return self.short_ttl + self.margin + 5

    def _resume_timeout(self, manager: LockManager) -> float:
        return manager.backend.config.timeout * 2 + self.margin + 10

    @contextlib.contextmanager
    def _paused(self, point: str, fn: Callable[[], Any]) -> Iterator[tuple[_Run, Pause]]:
        """Start ``fn`` in a thread stopped at ``point``; the block runs while it is stopped, and the
        thread resumes when the block ends."""
        run = _Run(fn)
        with pause_at(point, thread=run) as pause:
            run.start()
            try:
                pause.wait_reached(60)
            except AssertionError:
                run.join(5)
                raise AssertionError(
                    f"{point}: the operation did not pass this declared pause point"
                    + (f" (it raised {run.error!r})" if run.error else "")
                ) from None
            yield run, pause

    # -- declarations are truthful -------------------------------------------------------------------
    def test_pause_points_are_declared(self, manager: LockManager, other: LockManager, name: str) -> None:
        """Every point the backend passes through in a full workload is declared, and every declared
        point is passed through: the walk below then covers every multi-step operation."""
        declared = manager.backend.pause_points
        for point in declared:
            operation_of(point)
        caps = manager.capabilities
        with record_points() as seen:
            lease = manager.acquire(name, ttl=30)
            assert lease.extend(30)
            assert lease.is_held()
            assert lease.release()
            if Capability.FAIR in caps:
                holder = other.acquire(name, ttl=30)
                with pytest.raises(LockTimeout):
                    manager.acquire(name, ttl=30, wait=0.3, fair=True)
                holder.release()
                manager.acquire(name, ttl=30, wait=10, fair=True).release()
            for got in manager.acquire_many([f"{name}:a", f"{name}:b"], ttl=30).values():
                got.release()
            permit = manager.semaphore(name, 1).acquire(ttl=30, wait=5)
            assert permit.extend(30)
            assert permit.is_held()
            assert permit.release()
            job = Job(name, ttl=30)
            jobs = manager.jobs()
            assert jobs.lock(job, "e")
            jobs.successfully_processed(job, "e")
            assert jobs.lock_many(job, ["e", "f"]) == ["f"]
            jobs.unlock(job, "f")
        undeclared = seen - declared - CORE_PAUSE_POINTS
        assert not undeclared, f"pause points passed but not in {type(manager.backend).__name__}.pause_points"
        unreached = declared - seen
        assert not unreached, f"declared pause points never passed by a full workload: {sorted(unreached)}"

    # -- locks -------------------------------------------------------------------------------------
    def test_pause_in_acquire_competitor_acquires_and_releases(
        self, manager: LockManager, other: LockManager, name: str
    ) -> None:
        """A stopped mid-acquire; B takes and releases the name meanwhile; A's grant (if any) has a
        higher token than B's, really holds, and a denied A left nothing behind."""
        for point in self._points(manager, "acquire"):
            if point == "acquire:watching":
                continue
            key = f"{name}:{point}"
            with self._paused(point, functools.partial(manager.try_acquire, key, ttl=30)) as (run, _):
                b = other.try_acquire(key, ttl=30)
                if b is not None:
                    assert b.release(), point
            a: Lease | None = run.outcome(self._resume_timeout(manager))
            if a is None:
                free = other.try_acquire(key, ttl=30)
                assert free is not None, f"{point}: A was denied yet the name stays held (orphaned grant)"
                free.release()
                continue
            if b is not None:
                assert a.token > b.token, f"{point}: tokens went back ({a.token} after {b.token})"
            assert a.is_held() and not a.lost, point
            info = other.inspect(key)
            assert info is not None and info.holder == a.holder, point
            assert a.release(), point

    def test_pause_in_acquire_past_ttl(self, manager: LockManager, other: LockManager, name: str) -> None:
        """A stopped mid-acquire past its ttl; B is granted meanwhile. When A resumes, B still holds and
        A either was denied or holds a lease that reports itself lost (its local deadline counts from
        before the granting request) with a lower token."""
        for point in self._points(manager, "acquire"):
            if point == "acquire:watching":
                continue
            self._acquire_past_ttl(manager, other, f"{name}:{point}", point, fair=False)

    def _acquire_past_ttl(self, manager: LockManager, other: LockManager, key: str, point: str, *,
                          fair: bool) -> None:
        ttl = self.short_ttl
        with self._paused(point, lambda: manager.try_acquire(key, ttl=ttl, fair=fair)) as (run, _):
            b = other.acquire(key, ttl=30, wait=self._expiry_wait() + (2 if fair else 0), fair=fair)
        try:
            a: Lease | None = run.outcome(self._resume_timeout(manager))
        except BackendUnavailable:
            a = None  # A's call outlived its own deadline: allowed, as long as B is unharmed
        self._assert_successor_unharmed(other, key, b, a, point)

    def _assert_successor_unharmed(self, other: LockManager, key: str, b: Lease, a: Lease | None,
                                   point: str) -> None:
        if a is not None:
            assert a.lost, f"{point}: A's lease outlived its ttl yet does not report itself lost"
            assert a.token < b.token, f"{point}: A's late grant has token {a.token} >= successor's {b.token}"
            assert not a.is_held(), f"{point}: A and B both hold the lock"
            assert a.extend() is False, f"{point}: the stale holder extended the successor's lease"
            assert a.release() is False, f"{point}: the stale holder released the successor's lease"
        info = other.inspect(key)
        assert info is not None and (info.holder, info.token) == (b.holder, b.token), \
            f"{point}: the successor no longer holds the lock (inspect: {info})"
        assert b.is_held() and not b.lost, f"{point}: the successor lost its lease"
        assert b.release() is True, f"{point}: the successor could not release its lease"

    def test_pause_in_fair_acquire_past_ttl(self, manager: LockManager, other: LockManager, name: str) -> None:
        """As above in fair mode: a stopped fair waiter loses its place and its late grant, never B's."""
        if Capability.FAIR not in manager.capabilities:
            pytest.skip("backend has no fair mode")
        for point in self._points(manager, "acquire_fair"):
            self._acquire_past_ttl(manager, other, f"{name}:{point}", point, fair=True)

    def test_pause_in_contended_acquire(self, manager: LockManager, other: LockManager, name: str) -> None:
        """A stopped on the path an acquire takes when the name is held (a fair waiter about to join the
        queue); the holder releases and B is granted meanwhile. A is then denied, B keeps the lock, and
        A leaves nothing behind: the next fair waiter is granted at once when B releases."""
        for point in sorted(manager.backend.contended_pause_points):
            key = f"{name}:{point}"
            fair = operation_of(point) == "acquire_fair"
            holder = other.acquire(key, ttl=30)
            attempt = functools.partial(manager.try_acquire, key, ttl=30, fair=fair)
            with self._paused(point, attempt) as (run, _):
                assert holder.release(), point
                b = other.acquire(key, ttl=30, wait=10, fair=fair)
            a: Lease | None = run.outcome(self._resume_timeout(manager))
            assert a is None, f"{point}: A was granted a lock B holds"
            assert b.token > holder.token and b.is_held() and not b.lost, point
            info = other.inspect(key)
            assert info is not None and (info.holder, info.token) == (b.holder, b.token), point
            waiter = _Run(functools.partial(other.acquire, key, ttl=30, wait=30, fair=fair))
            waiter.start()
            assert b.release(), point
            started = time.monotonic()
            c: Lease = waiter.outcome(30 + self.margin)
            assert time.monotonic() - started < 2 + self.margin, f"{point}: a dead queue entry delayed C"
            assert c.token > b.token and c.release(), point

    def test_pause_in_cancel_wait_leaves_no_queue_entry(
        self, manager: LockManager, other: LockManager, name: str
    ) -> None:
        """A fair waiter that gives up is stopped while leaving the queue; the next fair waiter is then
        granted promptly once the holder releases (no dead entry blocks the head)."""
        if Capability.FAIR not in manager.capabilities:
            pytest.skip("backend has no fair mode")
        for point in self._points(manager, "cancel_wait"):
            key = f"{name}:{point}"
            holder = other.acquire(key, ttl=30)

            def give_up(k: str = key) -> None:
                with pytest.raises(LockTimeout):
                    manager.acquire(k, ttl=30, wait=0.3, fair=True)

            with self._paused(point, give_up) as (run, pause):
                waiter = _Run(functools.partial(other.acquire, key, ttl=30, wait=30, fair=True))
                waiter.start()
                holder.release()
                pause.resume()
                run.outcome(self._resume_timeout(manager))
                started = time.monotonic()
                b: Lease = waiter.outcome(30 + self.margin)
                assert time.monotonic() - started < 2 + self.margin, f"{point}: a dead queue entry delayed B"
                assert b.release(), point

    def test_pause_in_extend(self, manager: LockManager, other: LockManager, name: str) -> None:
        """A stopped mid-extend; B waits for the lock. Either A's extension landed first (B times out,
        A holds) or A's lease expired first (B holds; A's extend returns False and never overwrites B)."""
        for point in self._points(manager, "extend"):
            key = f"{name}:{point}"
            a = manager.acquire(key, ttl=self.short_ttl)
            b: Lease | None = None
            with self._paused(point, functools.partial(a.extend, 30)) as (run, _):
                try:
                    b = other.acquire(key, ttl=30, wait=self._expiry_wait())
                except LockTimeout:
                    b = None
            try:
                extended = run.outcome(self._resume_timeout(manager))
            except BackendUnavailable:
                extended = None
            if b is None:
                # A's extension landed before B's wait ran out; A may still have missed its own deadline.
                assert extended is not False, f"{point}: B was kept out, yet A's extend returned False"
                assert a.is_held() and a.release(), point
                continue
            assert extended is not True, f"{point}: A's extend returned True while B holds the lock"
            self._assert_successor_unharmed(other, key, b, a, point)

    def test_pause_in_release(self, manager: LockManager, other: LockManager, name: str) -> None:
        """A stopped mid-release past its ttl; B is granted meanwhile; A's release never frees B."""
        for point in self._points(manager, "release"):
            key = f"{name}:{point}"
            a = manager.acquire(key, ttl=self.short_ttl)
            with self._paused(point, a.release) as (run, _):
                b = other.acquire(key, ttl=30, wait=self._expiry_wait())
            with contextlib.suppress(BackendUnavailable):
                run.outcome(self._resume_timeout(manager))
            assert b.token > a.token, point
            info = other.inspect(key)
            assert info is not None and info.holder == b.holder, f"{point}: A's release freed B's lease"
            assert b.release(), point

    def test_pause_in_acquire_many(self, manager: LockManager, other: LockManager, name: str) -> None:
        """A stopped mid-batch; B takes one of the names meanwhile; no name ends up with two holders and
        nothing A was not given stays held."""
        for point in self._points(manager, "acquire_many"):
            keys = [f"{name}:{point}:{i}" for i in range(3)]
            with self._paused(point, functools.partial(manager.acquire_many, keys, ttl=30)) as (run, _):
                b = other.try_acquire(keys[1], ttl=30)
            got: dict[str, Lease] = run.outcome(self._resume_timeout(manager))
            for key in keys:
                info = other.inspect(key)
                mine = got.get(key)
                theirs = b if (b is not None and key == keys[1]) else None
                assert not (mine is not None and theirs is not None), f"{point}: {key} granted to A and B"
                holder = mine or theirs
                if holder is None:
                    assert info is None, f"{point}: {key} held though nobody was given it (orphaned grant)"
                else:
                    assert info is not None and info.holder == holder.holder, point
            for lease in got.values():
                assert lease.release(), point
            if b is not None:
                assert b.release(), point

    def test_pause_while_subscribing_misses_no_release(
        self, manager: LockManager, other: LockManager, name: str
    ) -> None:
        """A waiter stopped after subscribing and before re-checking; the holder releases then; the
        waiter is granted at once when it resumes (rule 6: subscribe before check)."""
        holder = other.acquire(name, ttl=30)
        with self._paused("acquire:watching",
                                       lambda: manager.acquire(name, ttl=30, wait=30)) as (run, pause):
            assert holder.release()
            pause.resume()
            started = time.monotonic()
            a: Lease = run.outcome(30)
            assert time.monotonic() - started < self.margin + 1, "the release before the re-check was missed"
        assert a.token > holder.token and a.release()

    # -- semaphores --------------------------------------------------------------------------------
    def test_pause_in_permit_operations(self, manager: LockManager, other: LockManager, name: str) -> None:
        """The lock scenarios on a one-permit semaphore: a stopped permit holder never overlaps or harms
        the next one, and a late grant reports itself lost."""
        ttl = self.short_ttl
        for point in self._points(manager, "permit_acquire", "permit_extend", "permit_release"):
            key = f"{name}:{point}"
            sem_a, sem_b = manager.semaphore(key, 1), other.semaphore(key, 1)
            operation = operation_of(point)
            a: Any = None if operation == "permit_acquire" else sem_a.acquire(ttl=ttl, wait=5)
            fn: Callable[[], Any] = (
                functools.partial(sem_a.try_acquire, ttl=ttl) if a is None
                else functools.partial(a.extend, 30) if operation == "permit_extend"
                else a.release
            )
            b: Any = None
            with self._paused(point, fn) as (run, _):
                try:
                    b = sem_b.acquire(ttl=30, wait=self._expiry_wait())
                except LockTimeout:
                    b = None
            try:
                result = run.outcome(self._resume_timeout(manager))
            except BackendUnavailable:
                result = None
            if operation == "permit_acquire":
                a = result
            if b is None:
                assert operation == "permit_extend" and result is not False, \
                    f"{point}: B was kept out of a free semaphore"
                assert a.release(), point
                continue
            if operation == "permit_extend":
                assert result is not True, f"{point}: A's extend returned True while B holds the only permit"
            if a is not None:
                assert a.token < b.token, point
                assert a.lost and not a.is_held(), f"{point}: A and B both hold the only permit"
                assert a.extend() is False and a.release() is False, point
            assert b.is_held() and not b.lost, f"{point}: the successor lost its permit"
            assert sem_b.try_acquire(ttl=30) is None, f"{point}: more than one live permit"
            assert b.release(), point

    # -- the job API ---------------------------------------------------------------------------------
    def test_pause_in_job_lock_past_ttl_does_not_process_twice(
        self, manager: LockManager, other: LockManager, name: str
    ) -> None:
        """A stopped after taking an element and before reading its done marker, past its ttl; B takes,
        processes and marks it meanwhile. A must then see the marker and refuse the element."""
        job = Job(name, ttl=self.short_ttl)
        jobs, other_jobs = manager.jobs(), other.jobs()
        with self._paused("job_lock:acquired", lambda: jobs.lock(job, "e")) as (run, _):
            deadline = time.monotonic() + self._expiry_wait()
            while not other_jobs.lock(job, "e"):
                assert time.monotonic() < deadline, "B never got the element after A's ttl"
                time.sleep(0.02)
            other_jobs.successfully_processed(job, "e")
        assert run.outcome(self._resume_timeout(manager)) is False, "the element was processed twice"

    def test_pause_in_successfully_processed_past_ttl(
        self, manager: LockManager, other: LockManager, name: str
    ) -> None:
        """A stopped after marking an element done and before releasing it, past its ttl: B never
        processes it again, and A learns its lease was lost."""
        job = Job(name, ttl=self.short_ttl)
        jobs, other_jobs = manager.jobs(), other.jobs()
        assert jobs.lock(job, "e")
        with self._paused("job_done:marked", lambda: jobs.successfully_processed(job, "e")) as (run, _):
            deadline = time.monotonic() + self._expiry_wait()
            while other.inspect(job.lock_name("e")) is not None:
                assert time.monotonic() < deadline, "A's lease did not expire"
                time.sleep(0.02)
            assert other_jobs.lock(job, "e") is False, "B took an element already marked done"
        with pytest.raises(LeaseLost):
            run.outcome(self._resume_timeout(manager))
