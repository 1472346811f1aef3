"""Item 4 of issue #16: the job API hands out each element's lease (fencing token, extend, auto-renew)
and job semaphore slots released by identity, without breaking the older calls."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import lockapi
from lockapi import InvalidArgument, Job, LockManager
from lockapi.testing.suite import WaitingCount


@pytest.fixture
def other(shared_url: str):  # type: ignore[no-untyped-def]
    with lockapi.connect(shared_url) as mgr:
        yield mgr


def test_each_element_has_its_own_lease_and_fencing_token(manager: LockManager, lock_name: str) -> None:
    job = Job(lock_name, ttl=30)
    jobs = manager.jobs()
    assert jobs.lock_many(job, ["a", "b"]) == ["a", "b"]
    assert jobs.lock(job, "c") is True
    leases = [jobs.lease(job, e) for e in "abc"]
    assert [lease.name for lease in leases] == [job.lock_name(e) for e in "abc"]
    assert all(lease.token >= 1 for lease in leases)
    assert leases[0].extend(60) and manager.inspect(job.lock_name("a")).ttl_remaining > 30  # type: ignore[union-attr]
    for e in "abc":
        jobs.successfully_processed(job, e)
    with pytest.raises(InvalidArgument, match="not locked"):
        jobs.lease(job, "a")


@pytest.mark.parametrize("batch", [False, True])
def test_auto_renew_keeps_an_element_past_job_ttl(manager: LockManager, other: LockManager, lock_name: str,
                                                  batch: bool) -> None:
    job = Job(lock_name, ttl=0.6)
    jobs, other_jobs = manager.jobs(), other.jobs()
    got = jobs.lock_many(job, ["e"], auto_renew=True) if batch else [e for e in ["e"] if jobs.lock(
        job, e, auto_renew=True)]
    assert got == ["e"]
    time.sleep(1.8)  # three ttls: the element would have expired without renewal
    assert other_jobs.lock(job, "e") is False
    assert not jobs.lease(job, "e").lost
    jobs.successfully_processed(job, "e")  # raises LeaseLost if the lease had lapsed


def test_element_lease_loss_is_reported(manager: LockManager, lock_name: str) -> None:
    if lockapi.Capability.ADMIN not in manager.capabilities:
        pytest.skip("backend has no force_release")
    job = Job(lock_name, ttl=0.6)
    jobs = manager.jobs()
    lost = threading.Event()
    assert jobs.lock(job, "e", auto_renew=True, on_lost=lambda lease: lost.set())
    assert manager.backend.force_release(job.lock_name("e"))
    assert lost.wait(30)
    with pytest.raises(lockapi.LeaseLost):
        jobs.successfully_processed(job, "e")
    assert jobs.is_processed(job, "e"), "the marker is still written (the old contract)"


def test_lock_waits_for_a_holder_and_still_refuses_a_done_element(manager: LockManager, other: LockManager,
                                                                  lock_name: str) -> None:
    job = Job(lock_name, ttl=30)
    jobs, other_jobs = manager.jobs(), other.jobs()
    assert jobs.lock(job, "e")
    with once_waiting(other, job.lock_name("e"), lambda: jobs.successfully_processed(job, "e")):
        assert other_jobs.lock(job, "e", wait=30) is False, "done markers are read after the lock is held"
    assert jobs.lock(job, "f")
    with once_waiting(other, job.lock_name("f"), lambda: jobs.unlock(job, "f")):
        assert other_jobs.lock(job, "f", wait=30) is True
    other_jobs.unlock(job, "f")


@contextlib.contextmanager
def once_waiting(waiter: LockManager, name: str, action: Callable[[], object]) -> Iterator[None]:
    """Run ``action`` on a thread as soon as an acquire of ``name`` by ``waiter`` waits; the thread is
    joined (and its failure raised) before the block's end, so nothing outlives the test."""
    errors: list[BaseException] = []

    def act() -> None:
        try:
            waiting.wait_for(1, 60, "the other node never waited")
            action()
        except BaseException as exc:
            errors.append(exc)

    waiting = WaitingCount(name)
    thread = threading.Thread(target=act)
    with waiting.on(waiter):
        thread.start()
        try:
            yield
        finally:
            thread.join(90)
    assert not thread.is_alive(), "the action never finished"
    assert not errors, errors


def test_unlock_with_keep_holds_the_element_for_a_while(manager: LockManager, other: LockManager,
                                                        lock_name: str) -> None:
    job = Job(lock_name, ttl=30)
    jobs = manager.jobs()
    assert jobs.lock(job, "e")
    jobs.unlock(job, "e", keep=30)
    assert other.jobs().lock(job, "e") is False
    info = other.inspect(job.lock_name("e"))
    assert info is not None and info.ttl_remaining <= 30


def test_slots_are_released_by_identity_from_any_thread(manager: LockManager, other: LockManager,
                                                        lock_name: str) -> None:
    job = Job(lock_name, ttl=30, max_concurrency=2)
    slots, other_slots = manager.job_semaphore(), other.job_semaphore()
    first = slots.acquire(job, wait=5)
    second = slots.try_acquire(job)
    assert second is not None and first.token != second.token
    assert other_slots.try_acquire(job) is None
    worker = threading.Thread(target=first.release)  # another thread returns *this* slot
    worker.start()
    worker.join()
    assert first.release() is False, "a slot is returned once"
    assert not first.permit.is_held() and second.permit.is_held()
    with other_slots.acquire(job, wait=5) as third:
        assert third.permit.is_held()
    assert not third.permit.is_held(), "leaving the with block returns the slot"
    slots.release(job, second)
    assert not second.permit.is_held()
    with pytest.raises(InvalidArgument):
        slots.release(job)


def test_old_style_release_still_takes_the_calling_threads_slot(manager: LockManager, lock_name: str) -> None:
    job = Job(lock_name, ttl=30, max_concurrency=2)
    slots = manager.job_semaphore()
    mine = slots.try_acquire(job)
    theirs: list[lockapi.Slot | None] = []
    t = threading.Thread(target=lambda: theirs.append(slots.try_acquire(job)))
    t.start()
    t.join()
    assert mine and theirs[0]
    slots.release(job)
    assert not mine.permit.is_held() and theirs[0].permit.is_held()
    slots.release(job)
    assert not theirs[0].permit.is_held()
