"""The job API for asyncio code: the contract of :mod:`lockapi.jobs` (same lock names, same
exactly-once order: the done marker is read only AFTER the lock is held, written BEFORE release)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from lockapi.errors import InvalidArgument, LeaseLost
from lockapi.jobs import Job
from lockapi.spi import pause_point

if TYPE_CHECKING:
    from lockapi.aio.lease import AsyncLease, AsyncPermit
    from lockapi.aio.manager import AsyncLockManager


class AsyncJobLockManager:
    """Per-element locks of scheduled jobs (contract of :class:`lockapi.JobLockManager`)."""

    def __init__(self, manager: AsyncLockManager) -> None:
        self._manager = manager
        self._held: dict[str, AsyncLease] = {}

    async def lock(self, job: Job, element: Any) -> bool:
        """Take ``element``; False if another holder has it or it was processed within ``done_ttl``."""
        name = job.lock_name(element)
        if name in self._held:
            return False
        lease = await self._manager.try_acquire(name, ttl=job.ttl)
        if lease is None:
            return False
        self._held[name] = lease  # before the done check: a cancelled caller's lease is still found
        pause_point("job_lock:acquired")
        if await self._manager.backend.done([name]):
            del self._held[name]
            await lease.release()
            return False
        return True

    async def lock_many(self, job: Job, elements: Iterable[Any]) -> list[Any]:
        """Take as many of ``elements`` as are free and not done; those taken, in input order."""
        by_name: dict[str, Any] = {}
        for element in elements:
            by_name.setdefault(job.lock_name(element), element)
        wanted = [name for name in by_name if name not in self._held]
        leases = await self._manager._acquire_many(wanted, job.ttl, skip_done=True)
        self._held.update(leases)
        return [by_name[name] for name in wanted if name in leases]

    def _take(self, job: Job, element: Any) -> tuple[str, AsyncLease]:
        name = job.lock_name(element)
        lease = self._held.pop(name, None)
        if lease is None:
            raise InvalidArgument(f"{name!r} is not locked by this JobLockManager: call lock() first")
        return name, lease

    async def unlock(self, job: Job, element: Any) -> None:
        """Release ``element`` without marking it done: it may be processed again."""
        _, lease = self._take(job, element)
        await lease.release()

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
            raise LeaseLost(
                f"{name!r} was marked done, but its lock had expired before: another node may have "
                "processed it at the same time (raise job.ttl or use shorter work units)"
            )

    async def is_processed(self, job: Job, element: Any) -> bool:
        """True if ``element`` was marked done within ``done_ttl``."""
        return bool(await self._manager.backend.done([job.lock_name(element)]))


class AsyncJobSemaphore:
    """At most ``job.max_concurrency`` holders cluster-wide per job (contract of :class:`lockapi.JobSemaphore`)."""

    def __init__(self, manager: AsyncLockManager) -> None:
        self._manager = manager
        self._held: dict[str, list[tuple[asyncio.Task[Any] | None, AsyncPermit]]] = {}

    def _keep(self, job: Job, permit: AsyncPermit) -> None:
        self._held.setdefault(job.name, []).append((asyncio.current_task(), permit))

    async def try_acquire(self, job: Job) -> bool:
        """Take a slot of ``job`` if one is free right now."""
        permit = await self._manager.semaphore(job.name, job.max_concurrency).try_acquire(ttl=job.ttl)
        if permit is None:
            return False
        self._keep(job, permit)
        return True

    async def acquire(self, job: Job, *, wait: float | None = None) -> None:
        """Take a slot, waiting up to ``wait`` seconds; raises :class:`LockTimeout`."""
        self._keep(job, await self._manager.semaphore(job.name, job.max_concurrency).acquire(ttl=job.ttl, wait=wait))

    async def release(self, job: Job) -> None:
        """Return a slot this object holds for ``job`` (the calling task's, if it has one)."""
        held = self._held.get(job.name, [])
        if not held:
            raise InvalidArgument(f"no slot of job {job.name!r} is held by this JobSemaphore")
        me = asyncio.current_task()
        index = next((i for i, (owner, _) in enumerate(held) if owner is me), len(held) - 1)
        _, permit = held.pop(index)
        if not held:
            del self._held[job.name]
        await permit.release()
