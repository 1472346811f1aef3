"""Leases and permits: what a grant gives the application."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from lockapi.errors import LeaseLost, LockError
from lockapi.observers import (
    CAUSE_BACKEND_ERROR,
    CAUSE_EXPIRED,
    CAUSE_RENEW_FAILED,
    END_LOST,
    END_RELEASED,
    ERROR,
    EXTENDED,
    NOT_HELD,
    RELEASED,
    LeaseEnd,
)
from lockapi.renewal import renewer
from lockapi.validation import check_ttl
from lockapi.waiting import BusKey, LocalBus

if TYPE_CHECKING:
    from lockapi.observers import Observer
    from lockapi.reporting import Reporter
    from lockapi.spi import Backend

log = logging.getLogger(__name__)

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
        reporter: Reporter,
        name: str,
        holder: str,
        token: int,
        ttl: float,
        requested_at: float,
        *,
        auto_renew: bool = False,
        on_lost: OnLost | None = None,
    ) -> None:
        self.name = name
        self.holder = holder
        self.token = token
        self.ttl = ttl
        self._backend = backend
        self._bus = bus
        self._reporter = reporter
        self._deadline = requested_at + ttl  # never later than the backend's expiry
        self._state = threading.Lock()
        self._released = False
        self._lost = False
        self._on_lost = on_lost
        self._auto_renew = auto_renew
        self._observer: Observer | None = reporter.observers.observer
        """Who saw this lease granted, and so is told once how it ended (None: nobody)."""
        self._granted_at = time.monotonic() if self._observer is not None else 0.0
        if auto_renew:
            renewer().schedule(self, ttl / 3)

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

    def release(self) -> bool:
        """Release the lease. True if it was still held; False if it had expired, was lost or was
        already released. Never raises for a lease that is not held; raises
        :class:`BackendUnavailable` if the backend cannot be reached (the lease then ends at its ttl;
        calling release again retries)."""
        op = self._op("release")
        reporter = self._reporter
        with self._state:
            if self._released:
                return False
            if self._auto_renew:
                renewer().cancel(self)
            started = time.monotonic()
            observed = reporter.start(op, self.name, started) if reporter.observers.observer is not None else None
            try:
                ok = self._send_release()
            except LockError as exc:
                reporter.finish(observed, op, self.name, started, ERROR, None, self.token, exc)
                raise
            self._released = True
            was_lost, self._lost = self._lost, self._lost or not ok
        reporter.finish(observed, op, self.name, started, RELEASED if ok else NOT_HELD, ok, self.token)
        if ok:
            self._bus.wake(self._bus_key)
            self._ended(END_RELEASED)
        elif not was_lost:
            self._lost_now(CAUSE_EXPIRED)
        return ok

    def extend(self, ttl: float | None = None) -> bool:
        """Make the lease expire ``ttl`` seconds from now (default: its current ttl).

        True if it was still held; False if it had expired or been lost (then :attr:`lost` is True).
        """
        new_ttl = self.ttl if ttl is None else check_ttl(ttl)
        ok = self._extend(self._op("extend"), new_ttl)
        if ok is False:
            self._mark_lost(CAUSE_EXPIRED)
        return bool(ok)

    def _extend(self, op: str, new_ttl: float) -> bool | None:
        """One extend (``op`` extend, permit_extend or renew); None if the lease was released."""
        reporter = self._reporter
        with self._state:
            if self._released:
                return None
            started = time.monotonic()
            observed = reporter.start(op, self.name, started) if reporter.observers.observer is not None else None
            try:
                ok = self._send_extend(new_ttl)
            except LockError as exc:
                reporter.finish(observed, op, self.name, started, ERROR, None, self.token, exc)
                raise
            if ok:
                self.ttl = new_ttl
                self._deadline = started + new_ttl
        reporter.finish(observed, op, self.name, started, EXTENDED if ok else NOT_HELD, ok, self.token)
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
        with self._state:
            if self._lost:
                return
            self._lost = True
            callback = self._on_lost
        self._lost_now(cause)
        if callback is not None:
            try:
                callback(self)
            except Exception:
                log.exception("lockapi: on_lost callback for %r failed", self,
                              extra={"lockapi_event": "on_lost_failed", "lockapi_name": self.name})

    def _lost_now(self, cause: str) -> None:
        """The lease just became known lost (once): one log line, and the observers are told."""
        kind = type(self).__name__.lower()
        log.warning("lockapi: %s on %r (token %d) lost: %s", kind, self.name, self.token, _CAUSES[cause],
                    extra={"lockapi_event": "lease_lost", "lockapi_kind": kind, "lockapi_name": self.name,
                           "lockapi_token": self.token, "lockapi_cause": cause,
                           "lockapi_backend": self._reporter.backend})
        self._ended(END_LOST, cause)

    def _ended(self, end: str, cause: str | None = None) -> None:
        with self._state:  # told once, whichever of release and loss comes first
            observer, self._observer = self._observer, None
        if observer is None:
            return
        now = time.monotonic()
        held = (now if end == END_RELEASED else min(now, self._deadline)) - self._granted_at
        self._reporter.lease_ended(observer, LeaseEnd("permit" if self._semaphore else "lock", self.name,
                                                      self._reporter.backend, self.token, max(held, 0.0), end,
                                                      cause))

    def _renew(self) -> float | None:
        """One auto-renewal (called by the renewer). Returns the delay to the next one, or None."""
        if self._released or self._lost:
            return None
        try:
            ok = self._extend("renew", self.ttl)
        except LockError:  # BackendUnavailable, mostly: keep trying until the ttl runs out
            if time.monotonic() >= self._deadline:
                self._mark_lost(CAUSE_BACKEND_ERROR)
                return None
            return min(self.ttl / 3, 1.0)
        if ok is False:
            self._mark_lost(CAUSE_RENEW_FAILED)
        return self.ttl / 3 if ok else None


_CAUSES = {
    CAUSE_EXPIRED: "the backend no longer knew it (it expired or another holder took it)",
    CAUSE_RENEW_FAILED: "the backend refused its auto-renewal (it had expired or another holder took it)",
    CAUSE_BACKEND_ERROR: "auto-renewal could not reach the backend until its ttl ran out",
}


class Permit(Lease):
    """One permit of a semaphore; behaves like a :class:`Lease`."""

    _semaphore = True

    def _send_release(self) -> bool:
        return self._backend.release_permit(self.name, self.holder, self.token)

    def _send_extend(self, ttl: float) -> bool:
        return self._backend.extend_permit(self.name, self.holder, self.token, ttl)

    def _send_holds(self) -> bool:
        return self._backend.holds_permit(self.name, self.holder, self.token)
