"""Leases and permits of the asyncio API: :class:`lockapi.lease.LeaseCore` with coroutines for the I/O.

Auto-renewal runs on the event loop (a timer per lease, no thread); ``on_lost`` may be a plain function
or a coroutine function. A release that is cancelled half-way still completes (a background task sends
it again), and a lease's ``async with`` block that ends by cancellation releases the lease before the
cancellation propagates.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any

from lockapi.errors import LeaseLost, LockError
from lockapi.lease import LeaseCore
from lockapi.observers import CAUSE_AT_MOST, CAUSE_EXPIRED, CAUSE_RENEW_FAILED, RELEASED
from lockapi.validation import check_ttl

if TYPE_CHECKING:
    from lockapi.aio.manager import AsyncLockManager
    from lockapi.observers import Operation

log = logging.getLogger(__name__)

AsyncOnLost = Callable[["AsyncLease"], Awaitable[object] | None]


class AsyncLease(LeaseCore):
    """A granted lock (the contract of :class:`lockapi.Lease`). Use it from its manager's loop."""

    __slots__ = ("_backend", "_manager", "_state", "_timer")

    def __init__(self, manager: AsyncLockManager, name: str, holder: str, token: int, ttl: float,
                 requested_at: float, *, auto_renew: bool = False, on_lost: AsyncOnLost | None = None,
                 at_most: float | None = None) -> None:
        super().__init__(manager._reporter, name, holder, token, ttl, requested_at, auto_renew=auto_renew,
                         on_lost=on_lost, at_most=at_most)
        self._manager = manager
        self._backend = manager.backend
        self._state = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        if auto_renew:
            self._schedule_renewal(self._next_renewal(time.monotonic()))

    # -- backend operations, overridden by AsyncPermit ----------------------------------------------
    def _send_release(self) -> Awaitable[bool]:
        return self._backend.release(self.name, self.holder, self.token)

    def _send_extend(self, ttl: float) -> Awaitable[bool]:
        return self._backend.extend(self.name, self.holder, self.token, ttl)

    def _send_holds(self) -> Awaitable[bool]:
        return self._backend.holds(self.name, self.holder, self.token)

    # -- public API --------------------------------------------------------------------------------
    def release(self, *, keep: float | None = None) -> Coroutine[Any, Any, bool]:
        """Release the lease (see :meth:`lockapi.Lease.release`, ``keep`` included): a coroutine to
        await (``keep`` is checked at the call). Completes even if the caller is cancelled: a release
        cancelled before or while its request is under way is sent (again) by a background task, which
        the manager's ``aclose`` waits for."""
        return self._release(None if keep is None else check_ttl(keep, "keep"))

    async def _release(self, hold: float | None) -> bool:
        # Runs in the caller's task (no task per release): a cancellation that reaches it is handed on
        # to a background task that does the rest, so the release still completes.
        op = self._op("release")
        state = self._state
        try:
            await state.acquire()  # not ``async with``: two coroutines fewer per call
        except asyncio.CancelledError:  # queued behind an extend or renewal: nothing sent yet
            self._manager._background.spawn(self._release(hold))
            raise
        try:
            if self._released:
                return False
            self._cancel_renewal()
            started, observed = self._start(op)
            try:
                ok = await (self._send_release() if hold is None else self._send_extend(hold))
            except LockError as exc:
                self._record_error(op, started, observed, exc)
                raise
            except asyncio.CancelledError:
                self._manager._background.spawn(self._send_again(op, hold, started, observed))
                raise
            wake = self._record_release(op, started, observed, ok, kept=hold is not None)
        finally:
            state.release()
        if wake:
            self._manager._bus.wake(self._bus_key)
        return ok

    async def _send_again(self, op: str, hold: float | None, started: float, observed: Operation | None) -> None:
        """Finish a release whose request was cut short by a cancellation: the store may or may not
        have applied it, and its answer is lost. Sending it again is safe: a release (or the extend of
        ``keep``) only acts on this lease, named by its holder id (unique to it) and token, so a second
        one either does what the first did not, or finds the lease gone and changes nothing. In that
        second case the first request is taken to have released the lease (its answer is what was
        lost), so a lease that was also lost before it is not reported lost. Errors are recorded and
        logged (nobody awaits this)."""
        async with self._state:
            if self._released:  # another release() finished it meanwhile
                self._reporter.finish(observed, op, self.name, started, RELEASED, True, self.token)
                return
            try:  # its answer does not matter (see above)
                await (self._send_release() if hold is None else self._send_extend(hold))
            except LockError as exc:
                self._record_error(op, started, observed, exc)
                log.warning("lockapi: could not release %r after its caller was cancelled: %s", self, exc,
                            extra={"lockapi_event": "release_failed", "lockapi_name": self.name})
                return
            wake = self._record_release(op, started, observed, True, kept=hold is not None)
        if wake:
            self._manager._bus.wake(self._bus_key)

    async def extend(self, ttl: float | None = None) -> bool:
        """Make the lease expire ``ttl`` seconds from now (see :meth:`lockapi.Lease.extend`)."""
        new_ttl = self.ttl if ttl is None else check_ttl(ttl)
        ok = await self._extend(self._op("extend"), new_ttl)
        if ok:
            self._renew_ttl = new_ttl
        elif ok is False:
            self._mark_lost(CAUSE_EXPIRED)
        return bool(ok)

    async def _extend(self, op: str, new_ttl: float) -> bool | None:
        async with self._state:
            if self._released:
                return None
            started, observed = self._start(op)
            try:
                ok = await self._send_extend(new_ttl)
            except LockError as exc:
                self._record_error(op, started, observed, exc)
                raise
            self._record_extend(op, started, observed, ok, new_ttl)
        return ok

    async def is_held(self) -> bool:
        """Ask the backend whether this lease is still held."""
        if self._released:
            return False
        return await self._send_holds()

    async def __aenter__(self) -> AsyncLease:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._released:
            return
        if exc_type is not None:
            try:
                await self.release()
            except LockError:
                log.warning("lockapi: could not release %r while handling %r", self, exc,
                            extra={"lockapi_event": "release_failed", "lockapi_name": self.name})
            return
        if not await self.release():
            raise LeaseLost(
                f"{type(self).__name__.lower()} on {self.name!r} (token {self.token}) was lost before the "
                "block ended: it expired or another holder took it; work done under it may have overlapped"
            )

    # -- auto-renewal on the loop ---------------------------------------------------------------------
    def _schedule_renewal(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(delay, lambda: self._manager._background.spawn(self._renew()))

    def _cancel_renewal(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _renew(self) -> None:
        if self._released or self._lost:
            return
        ttl = self._renewal_ttl(time.monotonic())
        if ttl is None:
            self._mark_lost(CAUSE_AT_MOST)
            return
        try:
            ok = await self._extend("renew", ttl)
        except LockError:  # BackendUnavailable, mostly: keep trying until the ttl runs out
            retry = self._renewal_unreachable()
            if isinstance(retry, str):
                self._mark_lost(retry)
            elif not self._released:
                self._schedule_renewal(retry)
            return
        if ok is False:
            self._mark_lost(CAUSE_RENEW_FAILED)
        elif ok and not self._released:
            self._schedule_renewal(self._next_renewal(time.monotonic()))

    def _mark_lost(self, cause: str) -> None:
        first, callback = self._take_lost(cause)
        self._cancel_renewal()
        if not first or callback is None:
            return
        try:
            result: Any = callback(self)
        except Exception:
            log.exception("lockapi: on_lost callback for %r failed", self,
                          extra={"lockapi_event": "on_lost_failed", "lockapi_name": self.name})
            return
        if inspect.isawaitable(result):
            self._manager._background.spawn(_logged(result, self))


async def _logged(awaitable: Awaitable[object], lease: AsyncLease) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("lockapi: on_lost callback for %r failed", lease,
                      extra={"lockapi_event": "on_lost_failed", "lockapi_name": lease.name})


class AsyncPermit(AsyncLease):
    """One permit of an :class:`lockapi.aio.AsyncSemaphore`; behaves like an :class:`AsyncLease`."""

    __slots__ = ()

    _semaphore = True

    def _send_release(self) -> Awaitable[bool]:
        return self._backend.release_permit(self.name, self.holder, self.token)

    def _send_extend(self, ttl: float) -> Awaitable[bool]:
        return self._backend.extend_permit(self.name, self.holder, self.token, ttl)

    def _send_holds(self) -> Awaitable[bool]:
        return self._backend.holds_permit(self.name, self.holder, self.token)
