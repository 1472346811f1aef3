"""The job API for asyncio code: the contract of :mod:`lockapi.jobs` (same lock names, same
exactly-once order: the done marker is read only AFTER the lock is held, written BEFORE release)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from lockapi.errors import InvalidArgument, LockError, LockTimeout
from lockapi.jobs import Job, lost_after_marking
from lockapi.spi import pause_point
from lockapi.validation import check_at_most, check_callback, check_ttl

if TYPE_CHECKING:
    from lockapi.aio.lease import AsyncLease, AsyncOnLost, AsyncPermit
    from lockapi.aio.manager import AsyncLockManager


class AsyncJobLockManager:
    """Per-element locks of scheduled jobs (contract of :class:`lockapi.JobLockManager`)."""

    def __init__(self, manager: AsyncLockManager) -> None:
        self._manager = manager
        self._held: dict[str, AsyncLease] = {}

    async def lock(self, job: Job, element: Any, *, wait: float | None = 0.0, auto_renew: bool = False,
                   on_lost: AsyncOnLost | None = None, at_most: float | None = None) -> bool:
        """Take ``element``; False if another holder has it (after ``wait`` seconds) or it was processed
        within ``done_ttl``. ``auto_renew``/``on_lost``/``at_most`` as for a lease."""
        name = job.lock_name(element)
        if name in self._held:
            return False
        if wait == 0:
            lease = await self._manager.try_acquire(name, ttl=job.ttl, auto_renew=auto_renew, on_lost=on_lost,
                                                    at_most=at_most)
        else:
            try:
                lease = await self._manager.acquire(name, ttl=job.ttl, wait=wait, auto_renew=auto_renew,
                                                    on_lost=on_lost, at_most=at_most)
            except LockTimeout:
                lease = None
        if lease is None:
            return False
        self._held[name] = lease  # before the done check: a cancelled caller's lease is still found
        pause_point("job_lock:acquired")
        try:
            done = bool(await self._manager.backend.done([name]))
        except BaseException:
            del self._held[name]
            with contextlib.suppress(LockError):
                await lease.release()
            raise
        if done:
            del self._held[name]
            await lease.release()
            return False
        return True

    async def lock_many(self, job: Job, elements: Iterable[Any], *, auto_renew: bool = False,
                        on_lost: AsyncOnLost | None = None, at_most: float | None = None) -> list[Any]:
        """Take as many of ``elements`` as are free and not done; those taken, in input order."""
        cap = check_at_most(at_most, job.ttl, auto_renew)
        callback = check_callback(on_lost)
        by_name: dict[str, Any] = {}
        for element in elements:
            by_name.setdefault(job.lock_name(element), element)
        wanted = [name for name in by_name if name not in self._held]
        leases = await self._manager._acquire_many(wanted, job.ttl, skip_done=True, auto_renew=auto_renew,
                                                   on_lost=callback, at_most=cap)
        self._held.update(leases)
        return [by_name[name] for name in wanted if name in leases]

    def lease(self, job: Job, element: Any) -> AsyncLease:
        """The lease this manager holds on ``element`` (see :meth:`lockapi.JobLockManager.lease`)."""
        name = job.lock_name(element)
        lease = self._held.get(name)
        if lease is None:
            raise InvalidArgument(f"{name!r} is not locked by this JobLockManager: call lock() first")
        return lease

    def _take(self, job: Job, element: Any) -> tuple[str, AsyncLease]:
        lease = self.lease(job, element)
        del self._held[lease.name]
        return lease.name, lease

    async def unlock(self, job: Job, element: Any, *, keep: float | None = None) -> None:
        """Release ``element`` without marking it done (``keep``: let it expire that much later)."""
        if keep is not None:
            check_ttl(keep, "keep")
        _, lease = self._take(job, element)
        await lease.release(keep=keep)

    async def successfully_processed(self, job: Job, element: Any) -> None:
        """Mark ``element`` done for ``job.done_ttl`` seconds, then release it; :class:`LeaseLost` if the
        lock had been lost meanwhile (the marker is still written)."""
        name, lease = self._take(job, element)
        try:
            await asyncio.shield(self._manager.backend.mark_done(name, job.done_ttl))
        except BaseException:
            self._held[name] = lease  # still ours: the caller may retry or unlock
            raise
        pause_point("job_done:marked")
        if not await lease.release():
            raise lost_after_marking(name)

    async def is_processed(self, job: Job, element: Any) -> bool:
        """True if ``element`` was marked done within ``done_ttl``."""
        return bool(await self._manager.backend.done([job.lock_name(element)]))


class AsyncSlot:
    """One slot of an :class:`AsyncJobSemaphore` (see :class:`lockapi.Slot`): truthy, released by
    identity with :meth:`release` or by leaving ``async with``."""

    def __init__(self, owner: AsyncJobSemaphore, job: Job, permit: AsyncPermit) -> None:
        self.job = job
        self.permit = permit
        self._owner = owner

    @property
    def token(self) -> int:
        return self.permit.token

    def __repr__(self) -> str:
        return f"<AsyncSlot of job {self.job.name!r} token={self.token}>"

    async def release(self) -> bool:
        """Return this slot. True if it was still held; False if it had expired or was already returned."""
        return await self._owner._release_slot(self)

    async def __aenter__(self) -> AsyncSlot:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.release()


class AsyncJobSemaphore:
    """At most ``job.max_concurrency`` holders cluster-wide per job (contract of :class:`lockapi.JobSemaphore`)."""

    def __init__(self, manager: AsyncLockManager) -> None:
        self._manager = manager
        self._held: dict[str, list[tuple[asyncio.Task[Any] | None, AsyncSlot]]] = {}

    def _keep(self, job: Job, permit: AsyncPermit) -> AsyncSlot:
        slot = AsyncSlot(self, job, permit)
        self._held.setdefault(job.name, []).append((asyncio.current_task(), slot))
        return slot

    async def try_acquire(self, job: Job) -> AsyncSlot | None:
        """Take a slot of ``job`` if one is free right now; None otherwise."""
        permit = await self._manager.semaphore(job.name, job.max_concurrency).try_acquire(ttl=job.ttl)
        return None if permit is None else self._keep(job, permit)

    async def acquire(self, job: Job, *, wait: float | None = None) -> AsyncSlot:
        """Take a slot, waiting up to ``wait`` seconds; raises :class:`LockTimeout`."""
        semaphore = self._manager.semaphore(job.name, job.max_concurrency)
        return self._keep(job, await semaphore.acquire(ttl=job.ttl, wait=wait))

    async def release(self, job: Job, slot: AsyncSlot | None = None) -> None:
        """Return ``slot``; without it, a slot of ``job`` this object holds (the calling task's, if any)."""
        if slot is not None:
            if slot.job.name != job.name or slot._owner is not self:
                raise InvalidArgument(f"{slot!r} is not a slot of job {job.name!r} held by this JobSemaphore")
            await slot.release()
            return
        held = self._held.get(job.name, [])
        if not held:
            raise InvalidArgument(f"no slot of job {job.name!r} is held by this JobSemaphore")
        me = asyncio.current_task()
        index = next((i for i, (owner, _) in enumerate(held) if owner is me), len(held) - 1)
        await held[index][1].release()

    async def _release_slot(self, slot: AsyncSlot) -> bool:
        held = self._held.get(slot.job.name, [])
        index = next((i for i, (_, s) in enumerate(held) if s is slot), None)
        if index is None:
            return False  # returned already
        del held[index]
        if not held:
            del self._held[slot.job.name]
        return await slot.permit.release()

