"""Leases and permits: what a grant gives the application."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from lockapi.errors import LeaseLost, LockError
from lockapi.events import Event, Listeners
from lockapi.renewal import renewer
from lockapi.validation import check_ttl
from lockapi.waiting import BusKey, LocalBus

if TYPE_CHECKING:
    from lockapi.spi import Backend

log = logging.getLogger("lockapi")

OnLost = Callable[["Lease"], None]


class Lease:
    """A granted lock: held until released, or until ``ttl`` seconds pass without an extension.

    Any thread holding this object may release or extend it. As a context manager it releases on exit
    and raises :class:`LeaseLost` if the lease had been lost before the block ended (unless the block
    raised: that exception propagates instead).
    """

    _semaphore = False

    def __init__(
        self,
        backend: Backend,
        bus: LocalBus,
        listeners: Listeners,
        name: str,
        holder: str,
        token: int,
        ttl: float,
        requested_at: float,
        *,
        auto_renew: bool = False,
        on_lost: OnLost | None = None,
        at_most: float | None = None,
    ) -> None:
        self.name = name
        self.holder = holder
        self.token = token
        self.ttl = ttl
        self._backend = backend
        self._bus = bus
        self._listeners = listeners
        self._deadline = requested_at + ttl  # never later than the backend's expiry
        self._state = threading.Lock()
        self._released = False
        self._lost = False
        self.lost_reason: str | None = None
        """Why the lease was lost, once it is known lost (renewal refused, at_most reached, ...)."""
        self._on_lost = on_lost
        self._auto_renew = auto_renew
        self._renew_ttl = ttl
        self._cap = None if at_most is None else requested_at + at_most
        """Auto-renewal never extends past this monotonic time (``at_most`` after the granting request)."""
        if auto_renew:
            renewer().schedule(self, self._next_renewal(time.monotonic()))

    def __repr__(self) -> str:
        kind = type(self).__name__
        return f"<{kind} {self.name!r} token={self.token} holder={self.holder!r}>"

    # -- backend operations, overridden by Permit ----------------------------------------------------
    def _send_release(self) -> bool:
        return self._backend.release(self.name, self.holder, self.token)

    def _send_extend(self, ttl: float) -> bool:
        return self._backend.extend(self.name, self.holder, self.token, ttl)

    def _send_holds(self) -> bool:
        return self._backend.holds(self.name, self.holder, self.token)

    @property
    def _bus_key(self) -> BusKey:
        return (self._semaphore, self.name)

    def _op(self, op: str) -> str:
        return f"permit_{op}" if self._semaphore else op

    # -- public API --------------------------------------------------------------------------------
    @property
    def lost(self) -> bool:
        """True once the lease is known lost, or its ttl has run out by the local clock.

        The local deadline counts from before the acquire request was sent, so it never ends later
        than the backend's own expiry.
        """
        if self._lost:
            return True
        if self._released:
            return False
        return time.monotonic() >= self._deadline

    @property
    def renewal_cap(self) -> float | None:
        """The ``time.monotonic()`` past which auto-renewal never extends this lease (``at_most`` after
        the granting request was sent), or None without a cap."""
        return self._cap

    def release(self, *, keep: float | None = None) -> bool:
        """Release the lease. True if it was still held; False if it had expired, was lost or was
        already released. Never raises for a lease that is not held; raises
        :class:`BackendUnavailable` if the backend cannot be reached (the lease then ends at its ttl;
        calling release again retries).

        With ``keep`` (seconds > 0) the name is not freed now: auto-renewal stops and the lease is set
        to expire ``keep`` seconds from now, by the backend's clock (one extend), so no one can take it
        before then. This holder is done with it either way: later calls return False.
        """
        hold = None if keep is None else check_ttl(keep)
        with self._state:
            if self._released:
                return False
            if self._auto_renew:
                renewer().cancel(self)
            started = time.monotonic()
            try:
                ok = self._send_release() if hold is None else self._send_extend(hold)
            except LockError as exc:
                self._emit("release", None, started, exc)
                raise
            self._released = True
            if not ok:
                self._lost = True
                self.lost_reason = self.lost_reason or "it had expired or another holder took it before release"
        self._emit("release", ok, started)
        if ok and hold is None:
            self._bus.wake(self._bus_key)
        return ok

    def extend(self, ttl: float | None = None) -> bool:
        """Make the lease expire ``ttl`` seconds from now (default: its current ttl).

        True if it was still held; False if it had expired or been lost (then :attr:`lost` is True).
        A new ``ttl`` also becomes the one auto-renewal uses.
        """
        new_ttl = self.ttl if ttl is None else check_ttl(ttl)
        ok = self._extend(new_ttl)
        if ok:
            self._renew_ttl = new_ttl
        return ok

    def _extend(self, new_ttl: float) -> bool:
        with self._state:
            if self._released:
                return False
            started = time.monotonic()
            try:
                ok = self._send_extend(new_ttl)
            except LockError as exc:
                self._emit("extend", None, started, exc)
                raise
            if ok:
                self.ttl = new_ttl
                self._deadline = started + new_ttl
        self._emit("extend", ok, started)
        if not ok:
            self._mark_lost("an extension was refused: the lease had expired or another holder took it")
        return ok

    def is_held(self) -> bool:
        """Ask the backend whether this lease is still held."""
        if self._released:
            return False
        return self._send_holds()

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._released:
            return
        if exc_type is not None:
            try:
                self.release()
            except LockError:
                log.warning("lockapi: could not release %r while handling %r", self, exc)
            return
        if not self.release():
            raise LeaseLost(
                f"{type(self).__name__.lower()} on {self.name!r} (token {self.token}) was lost before the "
                "block ended: it expired or another holder took it; work done under it may have overlapped"
            )

    # -- internals ---------------------------------------------------------------------------------
    def _mark_lost(self, reason: str) -> None:
        with self._state:
            if self._lost:
                return
            self._lost = True
            self.lost_reason = reason
            callback = self._on_lost
        if callback is not None:
            try:
                callback(self)
            except Exception:
                log.exception("lockapi: on_lost callback for %r failed", self)

    def _renew(self) -> float | None:
        """One auto-renewal (called by the renewer). Returns the delay to the next one, or None.

        With a cap (``at_most``), an extension never reaches past it; once the cap has passed the lease
        has run out, and it is reported lost like a refused renewal."""
        if self._released or self._lost:
            return None
        now = time.monotonic()
        ttl = self._renew_ttl
        if self._cap is not None:
            if now >= self._cap:
                log.warning("lockapi: %r ran out: at_most reached while it was still held", self)
                self._mark_lost("at_most reached: renewals never extend a lease past it")
                return None
            ttl = min(ttl, self._cap - now)
        try:
            ok = self._extend(ttl)
        except LockError as exc:  # BackendUnavailable, mostly: keep trying until the ttl runs out
            if time.monotonic() >= self._deadline:
                log.warning("lockapi: %r lost: backend unreachable until its ttl ran out (%s)", self, exc)
                self._mark_lost("the backend was unreachable until the ttl ran out")
                return None
            return min(self._renew_ttl / 3, 1.0)
        return self._next_renewal(time.monotonic()) if ok else None

    def _next_renewal(self, now: float) -> float:
        """Seconds to the next renewal: a third of the ttl, or the cap if that comes first (the call
        at the cap reports the lease lost)."""
        delay = self._renew_ttl / 3
        if self._cap is not None:
            delay = min(delay, max(self._cap - now, 0.0))
        return delay

    def _emit(self, op: str, outcome: bool | None, started: float, error: BaseException | None = None) -> None:
        if self._listeners:
            self._listeners.emit(
                Event(self._op(op), self.name, outcome, self.token, time.monotonic() - started,
                      None if error is None else repr(error))
            )


class Permit(Lease):
    """One permit of a semaphore; behaves like a :class:`Lease`."""

    _semaphore = True

    def _send_release(self) -> bool:
        return self._backend.release_permit(self.name, self.holder, self.token)

    def _send_extend(self, ttl: float) -> bool:
        return self._backend.extend_permit(self.name, self.holder, self.token, ttl)

    def _send_holds(self) -> bool:
        return self._backend.holds_permit(self.name, self.holder, self.token)
