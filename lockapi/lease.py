"""Leases and permits: what a grant gives the application.

:class:`LeaseCore` is everything about a lease that is not I/O — its local deadline, why it was lost,
the renewal plan (a third of the ttl, never past ``at_most``), the one report of how it ended — shared by
the thread-based :class:`Lease` here and by :class:`lockapi.aio.AsyncLease`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from lockapi.errors import LeaseLost, LockError
from lockapi.observers import (
    CAUSE_AT_MOST,
    CAUSE_BACKEND_ERROR,
    CAUSE_EXPIRED,
    CAUSE_RENEW_FAILED,
    END_LOST,
    END_RELEASED,
    ERROR,
    EXTENDED,
    NOT_HELD,
    RELEASED,
    Operation,
)
from lockapi.renewal import renewer
from lockapi.validation import check_ttl
from lockapi.waiting import BusKey, LocalBus

if TYPE_CHECKING:
    from lockapi.observers import Observers
    from lockapi.reporting import Reporter
    from lockapi.spi import Backend

log = logging.getLogger(__name__)
_monotonic = time.monotonic

OnLost = Callable[["Lease"], None]

CAUSES = {
    CAUSE_EXPIRED: "the backend no longer knew it (it expired or another holder took it)",
    CAUSE_RENEW_FAILED: "the backend refused its auto-renewal (it had expired or another holder took it)",
    CAUSE_BACKEND_ERROR: "auto-renewal could not reach the backend until its ttl ran out",
    CAUSE_AT_MOST: "at_most reached: renewals never extend a lease past it",
}
"""Why a lease was lost, by cause (:attr:`LeaseCore.lost_reason` is the text)."""

class LeaseCore:
    """A granted lock or permit, without I/O: identity, local deadline, loss, renewal plan, reporting.

    Subclasses do the backend calls and call the ``_record_*`` methods with what happened.
    """

    __slots__ = (
        "__weakref__",
        "_auto_renew",
        "_cap",
        "_deadline",
        "_granted_at",
        "_lost",
        "_on_lost",
        "_released",
        "_renew_ttl",
        "_reporter",
        "_told",
        "holder",
        "lost_reason",
        "name",
        "token",
        "ttl",
    )

    _semaphore = False

    _flags = threading.Lock()
    """Guards the flags of every lease of the process (``_released``, ``_lost``, ``lost_reason``,
    ``_told``) where they change together: held for a few stores at a time, never around I/O or a
    callback, so one lock for all serves as well as a lock per lease and costs no allocation per grant."""

    def __init__(self, reporter: Reporter, name: str, holder: str, token: int, ttl: float, requested_at: float,
                 *, auto_renew: bool = False, on_lost: Callable[[Any], object] | None = None,
                 at_most: float | None = None) -> None:
        self.name = name
        self.holder = holder
        self.token = token
        self.ttl = ttl
        self._reporter = reporter
        self._deadline = requested_at + ttl  # never later than the backend's expiry
        self._released = False
        self._lost = False
        self.lost_reason: str | None = None
        """Why the lease was lost, once it is known lost (expired, renewal refused, at_most reached...)."""
        self._on_lost = on_lost
        self._auto_renew = auto_renew
        self._renew_ttl = ttl
        self._cap = None if at_most is None else requested_at + at_most
        told = reporter.observers.current
        self._told: Observers | None = told
        """Who saw this lease granted, and so is told once how it ended (None: nobody)."""
        self._granted_at = time.monotonic() if told is not None else 0.0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} token={self.token} holder={self.holder!r}>"

    @property
    def _bus_key(self) -> BusKey:
        return (self._semaphore, self.name)

    def _op(self, op: str) -> str:
        return f"permit_{op}" if self._semaphore else op

    # -- public, I/O-free --------------------------------------------------------------------------
    @property
    def lost(self) -> bool:
        """True once the lease is known lost, or its ttl has run out by the local clock.

        The local deadline counts from before the granting request was sent, so it never ends later
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

    # -- bookkeeping the subclasses call -------------------------------------------------------------
    def _start(self, op: str) -> tuple[float, Operation | None]:
        started = time.monotonic()
        reporter = self._reporter
        return started, (reporter.start(op, self.name, started) if reporter.observers.observer is not None else None)

    def _record_error(self, op: str, started: float, observed: Operation | None, exc: BaseException) -> None:
        self._reporter.finish(observed, op, self.name, started, ERROR, None, self.token, exc)

    def _record_release(self, op: str, started: float, observed: Operation | None, ok: bool,
                        kept: bool) -> bool:
        """A release (or, ``kept``, the extend of ``release(keep=)``) answered ``ok``; True if the local
        bus should wake this name's waiters."""
        reporter = self._reporter
        if ok and self._told is None:  # the common case: nobody to tell how it ended, one store (no lock)
            self._released = True
            if observed is not None or reporter.observers.recorders or reporter.down or reporter.listeners.items:
                reporter.finish(observed, op, self.name, started, RELEASED, True, self.token)
            return not kept
        told = None
        with self._flags:
            self._released = True
            was_lost = self._lost
            if ok:  # told once, whichever of release and loss comes first: taken here, under the same lock
                told, self._told = self._told, None
            else:
                self._lost = True
                if not was_lost:
                    self.lost_reason = CAUSES[CAUSE_EXPIRED]
        reporter.finish(observed, op, self.name, started, RELEASED if ok else NOT_HELD, ok, self.token)
        if told is not None:
            self._tell_end(told, END_RELEASED, None)
        elif not ok and not was_lost:
            self._lost_now(CAUSE_EXPIRED)
        return ok and not kept

    def _record_extend(self, op: str, started: float, observed: Operation | None, ok: bool, new_ttl: float) -> None:
        if ok:
            self.ttl = new_ttl
            self._deadline = started + new_ttl
        self._reporter.finish(observed, op, self.name, started, EXTENDED if ok else NOT_HELD, ok, self.token)

    def _take_lost(self, cause: str) -> tuple[bool, Callable[[Any], object] | None]:
        """Mark the lease lost for ``cause``; (True if it was not known lost before, the callback)."""
        with self._flags:
            if self._lost:
                return False, None
            self._lost = True
            self.lost_reason = CAUSES[cause]
            callback = self._on_lost
        self._lost_now(cause)
        return True, callback

    def _lost_now(self, cause: str) -> None:
        """The lease just became known lost (once): one log line, and the observers are told."""
        kind = type(self).__name__.lower()
        log.warning("lockapi: %s on %r (token %d) lost: %s", kind, self.name, self.token, CAUSES[cause],
                    extra={"lockapi_event": "lease_lost", "lockapi_kind": kind, "lockapi_name": self.name,
                           "lockapi_token": self.token, "lockapi_cause": cause,
                           "lockapi_backend": self._reporter.backend})
        self._ended(END_LOST, cause)

    def _ended(self, end: str, cause: str | None = None) -> None:
        if self._told is None:  # nobody to tell (it only ever goes from set to None)
            return
        with self._flags:  # told once, whichever of release and loss comes first
            told, self._told = self._told, None
        if told is not None:
            self._tell_end(told, end, cause)

    def _tell_end(self, told: Observers, end: str, cause: str | None) -> None:
        """Tell the observers taken from this lease (once) how it ended."""
        now = time.monotonic()
        held = (now if end == END_RELEASED else min(now, self._deadline)) - self._granted_at
        reporter = self._reporter
        reporter.lease_ended(told, ("permit" if self._semaphore else "lock", self.name, reporter.backend, self.token,
                                    max(held, 0.0), end, cause))

    # -- the renewal plan ----------------------------------------------------------------------------
    def _renewal_ttl(self, now: float) -> float | None:
        """The ttl the next auto-renewal asks for (never reaching past the cap); None when the cap has
        passed (the caller then reports the lease lost with CAUSE_AT_MOST)."""
        if self._cap is None:
            return self._renew_ttl
        if now >= self._cap:
            return None
        return min(self._renew_ttl, self._cap - now)

    def _next_renewal(self, now: float) -> float:
        """Seconds to the next renewal: a third of the ttl, or the cap if that comes first (the renewal
        at the cap reports the lease lost)."""
        delay = self._renew_ttl / 3
        if self._cap is not None:
            delay = min(delay, max(self._cap - now, 0.0))
        return delay

    def _renewal_unreachable(self) -> str | float:
        """A renewal could not reach the backend: CAUSE_BACKEND_ERROR once the ttl has run out, else the
        delay before trying again."""
        if time.monotonic() >= self._deadline:
            return CAUSE_BACKEND_ERROR
        return min(self._renew_ttl / 3, 1.0)


class Lease(LeaseCore):
    """A granted lock: held until released, or until ``ttl`` seconds pass without an extension.

    Any thread holding this object may release or extend it. As a context manager it releases on exit
    and raises :class:`LeaseLost` if the lease had been lost before the block ended (unless the block
    raised: that exception propagates instead).
    """

    __slots__ = ("_backend", "_bus", "_state")

    _release_op = "release"

    def __init__(self, backend: Backend, bus: LocalBus, reporter: Reporter, name: str, holder: str, token: int,
                 ttl: float, requested_at: float, *, auto_renew: bool = False, on_lost: OnLost | None = None,
                 at_most: float | None = None) -> None:
        LeaseCore.__init__(self, reporter, name, holder, token, ttl, requested_at, auto_renew=auto_renew,
                           on_lost=on_lost, at_most=at_most)
        self._backend = backend
        self._bus = bus
        self._state = threading.Lock()
        if auto_renew:
            renewer().schedule(self, self._next_renewal(time.monotonic()))

    # -- backend operations, overridden by Permit ----------------------------------------------------
    def _send_release(self) -> bool:
        return self._backend.release(self.name, self.holder, self.token)

    def _send_extend(self, ttl: float) -> bool:
        return self._backend.extend(self.name, self.holder, self.token, ttl)

    def _send_holds(self) -> bool:
        return self._backend.holds(self.name, self.holder, self.token)

    # -- public API --------------------------------------------------------------------------------
    def release(self, *, keep: float | None = None) -> bool:
        """Release the lease. True if it was still held; False if it had expired, was lost or was
        already released. Never raises for a lease that is not held; raises
        :class:`BackendUnavailable` if the backend cannot be reached (the lease then ends at its ttl;
        calling release again retries).

        With ``keep`` (seconds > 0) the name is not freed now: auto-renewal stops and the lease is set
        to expire ``keep`` seconds from now, by the backend's clock (one extend), so no one can take it
        before then. This holder is done with it either way: later calls return False.
        """
        hold = None if keep is None else check_ttl(keep, "keep")
        op = self._release_op
        with self._state:
            if self._released:
                return False
            if self._auto_renew:
                renewer().cancel(self)
            started = _monotonic()
            reporter = self._reporter
            observed = None if reporter.observers.observer is None else reporter.start(op, self.name, started)
            try:
                ok = self._send_release() if hold is None else self._send_extend(hold)
            except LockError as exc:
                self._record_error(op, started, observed, exc)
                raise
            wake = self._record_release(op, started, observed, ok, kept=hold is not None)
        if wake and self._bus.watched:  # nobody in this process waits on anything: no call
            self._bus.wake((self._semaphore, self.name))
        return ok

    def extend(self, ttl: float | None = None) -> bool:
        """Make the lease expire ``ttl`` seconds from now (default: its current ttl).

        True if it was still held; False if it had expired or been lost (then :attr:`lost` is True).
        A new ``ttl`` also becomes the one auto-renewal uses.
        """
        new_ttl = self.ttl if ttl is None else check_ttl(ttl)
        ok = self._extend(self._op("extend"), new_ttl)
        if ok:
            self._renew_ttl = new_ttl
        elif ok is False:
            self._mark_lost(CAUSE_EXPIRED)
        return bool(ok)

    def _extend(self, op: str, new_ttl: float) -> bool | None:
        """One extend (``op`` extend, permit_extend or renew); None if the lease was released."""
        with self._state:
            if self._released:
                return None
            started, observed = self._start(op)
            try:
                ok = self._send_extend(new_ttl)
            except LockError as exc:
                self._record_error(op, started, observed, exc)
                raise
            self._record_extend(op, started, observed, ok, new_ttl)
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
                log.warning("lockapi: could not release %r while handling %r", self, exc,
                            extra={"lockapi_event": "release_failed", "lockapi_name": self.name})
            return
        if not self.release():
            raise LeaseLost(
                f"{type(self).__name__.lower()} on {self.name!r} (token {self.token}) was lost before the "
                "block ended: it expired or another holder took it; work done under it may have overlapped"
            )

    # -- internals ---------------------------------------------------------------------------------
    def _mark_lost(self, cause: str) -> None:
        first, callback = self._take_lost(cause)
        if first and callback is not None:
            try:
                callback(self)
            except Exception:
                log.exception("lockapi: on_lost callback for %r failed", self,
                              extra={"lockapi_event": "on_lost_failed", "lockapi_name": self.name})

    def _renew(self) -> float | None:
        """One auto-renewal (called by the renewer). Returns the delay to the next one, or None.

        With a cap (``at_most``), an extension never reaches past it; once the cap has passed the lease
        has run out, and it is reported lost like a refused renewal."""
        if self._released or self._lost:
            return None
        ttl = self._renewal_ttl(time.monotonic())
        if ttl is None:
            self._mark_lost(CAUSE_AT_MOST)
            return None
        try:
            ok = self._extend("renew", ttl)
        except LockError:  # BackendUnavailable, mostly: keep trying until the ttl runs out
            retry = self._renewal_unreachable()
            if isinstance(retry, str):
                self._mark_lost(retry)
                return None
            return retry
        if ok is False:
            self._mark_lost(CAUSE_RENEW_FAILED)
        return self._next_renewal(time.monotonic()) if ok else None


class Permit(Lease):
    """One permit of a semaphore; behaves like a :class:`Lease`."""

    __slots__ = ()

    _semaphore = True
    _release_op = "permit_release"

    def _send_release(self) -> bool:
        return self._backend.release_permit(self.name, self.holder, self.token)

    def _send_extend(self, ttl: float) -> bool:
        return self._backend.extend_permit(self.name, self.holder, self.token, ttl)

    def _send_holds(self) -> bool:
        return self._backend.holds_permit(self.name, self.holder, self.token)
