"""Leases and permits of the asyncio API: the contract of :class:`lockapi.Lease`, with coroutines.

Auto-renewal runs on the event loop (a timer per lease, no thread); ``on_lost`` may be a plain function
or a coroutine function. A release that is cancelled half-way still completes (it is shielded), and a
lease's ``async with`` block that ends by cancellation releases the lease before the cancellation
propagates.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from lockapi.errors import LeaseLost, LockError
from lockapi.events import Event
from lockapi.validation import check_ttl

if TYPE_CHECKING:
    from lockapi.aio.manager import AsyncLockManager

log = logging.getLogger("lockapi.aio")

AsyncOnLost = Callable[["AsyncLease"], Awaitable[object] | None]


class AsyncLease:
    """A granted lock (see :class:`lockapi.Lease` for the contract). Use it from its manager's loop."""

    _semaphore = False

    def __init__(self, manager: AsyncLockManager, name: str, holder: str, token: int, ttl: float,
                 requested_at: float, *, auto_renew: bool = False, on_lost: AsyncOnLost | None = None) -> None:
        self.name = name
        self.holder = holder
        self.token = token
        self.ttl = ttl
        self._manager = manager
        self._backend = manager.backend
        self._deadline = requested_at + ttl  # never later than the backend's expiry
        self._state = asyncio.Lock()
        self._released = False
        self._lost = False
        self._on_lost = on_lost
        self._timer: asyncio.TimerHandle | None = None
        if auto_renew:
            self._schedule_renewal(ttl / 3)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} token={self.token} holder={self.holder!r}>"

    # -- backend operations, overridden by AsyncPermit ----------------------------------------------
    def _send_release(self) -> Awaitable[bool]:
        return self._backend.release(self.name, self.holder, self.token)

    def _send_extend(self, ttl: float) -> Awaitable[bool]:
        return self._backend.extend(self.name, self.holder, self.token, ttl)

    def _send_holds(self) -> Awaitable[bool]:
        return self._backend.holds(self.name, self.holder, self.token)

    def _op(self, op: str) -> str:
        return f"permit_{op}" if self._semaphore else op

    # -- public API --------------------------------------------------------------------------------
    @property
    def lost(self) -> bool:
        """True once the lease is known lost, or its ttl has run out by the local clock."""
        if self._lost:
            return True
        if self._released:
            return False
        return time.monotonic() >= self._deadline

    async def release(self) -> bool:
        """Release the lease: True if it was still held. Completes even if the caller is cancelled."""
        return await asyncio.shield(self._release())

    async def _release(self) -> bool:
        async with self._state:
            if self._released:
                return False
            self._cancel_renewal()
            started = time.monotonic()
            try:
                ok = await self._send_release()
            except LockError as exc:
                self._emit("release", None, started, exc)
                raise
            self._released = True
            if not ok:
                self._lost = True
        self._emit("release", ok, started)
        if ok:
            self._manager._bus.wake((self._semaphore, self.name))
        return ok

    async def extend(self, ttl: float | None = None) -> bool:
        """Make the lease expire ``ttl`` seconds from now (default: its current ttl)."""
        new_ttl = self.ttl if ttl is None else check_ttl(ttl)
        async with self._state:
            if self._released:
                return False
            started = time.monotonic()
            try:
                ok = await self._send_extend(new_ttl)
            except LockError as exc:
                self._emit("extend", None, started, exc)
                raise
            if ok:
                self.ttl = new_ttl
                self._deadline = started + new_ttl
        self._emit("extend", ok, started)
        if not ok:
            self._mark_lost()
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
                log.warning("lockapi: could not release %r while handling %r", self, exc)
            return
        if not await self.release():
            raise LeaseLost(
                f"{type(self).__name__.lower()} on {self.name!r} (token {self.token}) was lost before the "
                "block ended: it expired or another holder took it; work done under it may have overlapped"
            )

    # -- auto-renewal --------------------------------------------------------------------------------
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
        try:
            ok = await self.extend()
        except LockError as exc:  # BackendUnavailable, mostly: keep trying until the ttl runs out
            if time.monotonic() >= self._deadline:
                log.warning("lockapi: %r lost: backend unreachable until its ttl ran out (%s)", self, exc)
                self._mark_lost()
            elif not self._released:
                self._schedule_renewal(min(self.ttl / 3, 1.0))
            return
        if ok and not self._released:
            self._schedule_renewal(self.ttl / 3)

    def _mark_lost(self) -> None:
        if self._lost:
            return
        self._lost = True
        self._cancel_renewal()
        callback = self._on_lost
        if callback is None:
            return
        try:
            result: Any = callback(self)
        except Exception:
            log.exception("lockapi: on_lost callback for %r failed", self)
            return
        if inspect.isawaitable(result):
            self._manager._background.spawn(_logged(result, self))

    def _emit(self, op: str, outcome: bool | None, started: float, error: BaseException | None = None) -> None:
        listeners = self._manager._listeners
        if listeners:
            listeners.emit(Event(self._op(op), self.name, outcome, self.token, time.monotonic() - started,
                                 None if error is None else repr(error)))


async def _logged(awaitable: Awaitable[object], lease: AsyncLease) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("lockapi: on_lost callback for %r failed", lease)


class AsyncPermit(AsyncLease):
    """One permit of an :class:`lockapi.aio.AsyncSemaphore`; behaves like an :class:`AsyncLease`."""

    _semaphore = True

    def _send_release(self) -> Awaitable[bool]:
        return self._backend.release_permit(self.name, self.holder, self.token)

    def _send_extend(self, ttl: float) -> Awaitable[bool]:
        return self._backend.extend_permit(self.name, self.holder, self.token, ttl)

    def _send_holds(self) -> Awaitable[bool]:
        return self._backend.holds_permit(self.name, self.holder, self.token)
