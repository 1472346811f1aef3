"""Scheduled work guarded by a lock, on the event loop: :meth:`AsyncLockManager.scheduled`.

The guard of :mod:`lockapi.scheduling` (same options, decisions, events and exactly-once order with a
key; :class:`lockapi.scheduling.ScheduledLockCore` holds all of it once) with the asyncio API doing the
I/O: no thread per run, the lease renewed by the loop's timer, ``on_lost`` and ``on_skip`` may be
coroutine functions. A run that is cancelled while it holds the lock ends like a run that raised (the
lock is kept until ``at_least``, a key is not marked done), and that end completes even if the task is
cancelled again meanwhile::

    async with lockapi.aio.connect(url) as mgr:
        @mgr.scheduled("nightly-invoices", at_most=1800, at_least=60)
        async def nightly_invoices() -> None:
            await send_invoices(fence=lockapi.aio.current_run().token)
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from lockapi import scheduling
from lockapi.aio.waiting import finish_anyway
from lockapi.errors import InvalidArgumentType, LeaseLost, LockError, LockTimeout
from lockapi.scheduling import Ending, KeyOf, OnSkip, ScheduledLockCore, ScheduledRunCore

if TYPE_CHECKING:
    from lockapi.aio.jobs import AsyncJobLockManager
    from lockapi.aio.lease import AsyncLease
    from lockapi.aio.manager import AsyncLockManager

P = ParamSpec("P")
R = TypeVar("R")

AsyncOnRunLost = Callable[["AsyncScheduledRun"], Awaitable[object] | None]


class AsyncScheduledRun(ScheduledRunCore):
    """One run of the asyncio API that took the lock (see :class:`lockapi.ScheduledRun`)."""

    lease: AsyncLease | None
    guard: AsyncScheduledLock

    async def release(self) -> None:
        """End the guarded part now, as if the run had returned (the rest of it is no longer
        guarded): the lock is kept until ``at_least`` (with a key: the key is marked done first).
        Raises :class:`LeaseLost` if the lock had been lost meanwhile."""
        await self.guard.end(self, None)

    def _on_lease_lost(self, lease: AsyncLease) -> Awaitable[object] | None:
        result = self._report_lost(lease)
        return result if inspect.isawaitable(result) else None


def current_run() -> AsyncScheduledRun | None:
    """The run of an asyncio guard the calling task is inside, if any (what :func:`lockapi.current_run`
    returns there, typed). Use ``current_run().token`` to fence the resource a run writes to."""
    run = scheduling.current_run()
    return run if isinstance(run, AsyncScheduledRun) else None


class AsyncScheduledLock(ScheduledLockCore[AsyncScheduledRun]):
    """A scheduled-work guard on the event loop: ``async with`` (entering raises
    :class:`lockapi.RunSkipped` on skip) and a decorator of coroutine functions (a skipped call returns
    ``on_skip(skipped)``, awaited if it is a coroutine, or None).

    Obtain one with :meth:`AsyncLockManager.scheduled`. Every argument is checked here, before any
    I/O. One object may guard any number of runs, from any task of its manager's loop.
    """

    def __init__(
        self,
        manager: AsyncLockManager,
        name: str,
        *,
        at_most: float,
        at_least: float = 0.0,
        wait: float | None = 0.0,
        ttl: float | None = None,
        key: str | KeyOf | None = None,
        remember: float | None = None,
        on_skip: OnSkip | None = None,
        on_lost: AsyncOnRunLost | None = None,
    ) -> None:
        super().__init__(name, at_most=at_most, at_least=at_least, wait=wait, ttl=ttl, key=key,
                         remember=remember, on_skip=on_skip, on_lost=on_lost)
        self.manager = manager
        self._jobs: AsyncJobLockManager | None = None

    # -- the two steps ---------------------------------------------------------------------------------
    async def begin(self, key: str | None = None) -> AsyncScheduledRun:
        """Take the lock for one run (key: the run's key, if the guard is keyed). Raises
        :class:`lockapi.RunSkipped` if this node must not run it. Pair every begin with :meth:`end`."""
        key = self._fixed_key(key)
        run = AsyncScheduledRun(self, key, self.manager._reporter)
        started = time.monotonic()
        try:
            lease = await self._take(run, key)
        except LockError as exc:
            self._refused(run, exc, started)
            raise
        return self._begun(run, lease, started)

    async def _take(self, run: AsyncScheduledRun, key: str | None) -> AsyncLease:
        started = time.monotonic()
        if key is None:
            try:
                return await self.manager.acquire(self.name, ttl=self.ttl, wait=self.wait, auto_renew=True,
                                                  on_lost=run._on_lease_lost, at_most=self.at_most)
            except LockTimeout:
                raise self._skip(None, started) from None
        jobs = self._job_locks()
        if not await jobs.lock(self._job, key, wait=self.wait, auto_renew=True, on_lost=run._on_lease_lost,
                               at_most=self.at_most):
            raise self._skip(key, started, await jobs.is_processed(self._job, key))
        return jobs.lease(self._job, key)

    async def end(self, run: AsyncScheduledRun, error: BaseException | None, *, hold: bool = True) -> None:
        """End ``run`` (see :meth:`lockapi.ScheduledLock.end`). The end completes even if the caller is
        cancelled meanwhile."""
        lease = run.lease
        ending = self._ending(run, error, hold)
        if lease is None or ending is None:
            return
        await finish_anyway(self._finish(run, lease, ending, error), self.manager._background)

    async def _finish(self, run: AsyncScheduledRun, lease: AsyncLease, ending: Ending,
                      error: BaseException | None) -> None:
        try:
            held = await self._send_end(run, lease, ending)
        except LockError as exc:
            if self._end_failed(run, error, exc):
                raise
            return
        self._ended(run, ending, error, held)

    async def _send_end(self, run: AsyncScheduledRun, lease: AsyncLease, ending: Ending) -> bool:
        """Release, keep or mark done as ``ending`` says; True if the lock was still held."""
        if run.key is None:
            return await lease.release(keep=ending.keep)
        jobs = self._job_locks()
        if ending.mark_done:
            try:
                await jobs.successfully_processed(self._job, run.key)
            except LeaseLost:
                return False
            return True
        await jobs.unlock(self._job, run.key, keep=ending.keep)
        return not ending.lost

    async def _abegin(self, key: str | None) -> AsyncScheduledRun:
        return await self.begin(key)

    async def _aend(self, run: AsyncScheduledRun, error: BaseException | None) -> None:
        await self.end(run, error)

    # -- the decorator (async with: ScheduledLockCore) ------------------------------------------------
    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R | Any]]:
        if not inspect.iscoroutinefunction(fn):
            raise InvalidArgumentType(
                f"AsyncLockManager.scheduled(...) decorates an async def, got {fn!r}: guard a plain "
                "function with lockapi.LockManager.scheduled (or lockapi.scheduled)")
        return self._wrap_async(fn)

    def _job_locks(self) -> AsyncJobLockManager:
        if self._jobs is None:
            self._jobs = self.manager.jobs()
        return self._jobs
