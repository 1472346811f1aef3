"""The LockManager: the application's handle on one backend."""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

from lockapi.errors import InvalidArgument, LockError, LockTimeout, UnsupportedFeature
from lockapi.events import Listener
from lockapi.lease import Lease, OnLost, Permit
from lockapi.observers import DENIED, ERROR, GRANTED, TIMEOUT, Observer, Operation
from lockapi.reporting import Reporter
from lockapi.spi import Attempt, Backend, Capability, LockInfo
from lockapi.validation import (
    check_at_most,
    check_callback,
    check_name,
    check_names,
    check_permits,
    check_ttl,
    check_wait,
)
from lockapi.waiting import QUEUE_TTL, LocalBus, wait_for_grant

if TYPE_CHECKING:
    from lockapi.aio.spi import AsyncBackend
    from lockapi.jobs import JobLockManager, JobSemaphore
    from lockapi.scheduling import KeyOf, OnRunLost, OnSkip, ScheduledLock

_AttemptFn = Callable[[], Attempt]
_monotonic = time.monotonic

_NODE = "".join(c for c in socket.gethostname() if c.isascii() and c.isprintable())[:64] or "host"


class _HolderIds:
    """Holder ids unique to one lease: host, pid, 64 random bits drawn for each lease, and a counter.
    Thread ids are reused, so they are never part of it.

    Ids are made in batches of :attr:`BATCH` (one ``os.urandom`` system call and one list built per
    batch, so a lease only pops one); each batch takes its own range of the counter, so two threads
    refilling at once still hand out distinct ids, and a batch is never shared with a forked child.
    """

    BATCH = 256

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._prefix = f"{_NODE}:{os.getpid()}:"
        self._batches = itertools.count()
        self._ids: list[str] = []

    def _refill(self) -> list[str]:
        first = next(self._batches) * self.BATCH + 1
        prefix = self._prefix
        randoms = os.urandom(8 * self.BATCH).hex(":", 8).split(":")  # 16 hex digits each
        batch = [f"{prefix}{random}:{n:x}" for n, random in enumerate(randoms, first)]
        batch.reverse()  # handed out by pop(): in counter order
        self._ids = batch
        return batch

    def __call__(self) -> str:
        # list.pop is atomic: two threads never get the same id, even while one refills.
        try:
            return self._ids.pop()
        except IndexError:
            return self._refill().pop()


new_holder_id = _HolderIds()


class LockRequest(NamedTuple):
    """The checked arguments of one acquire (sync or async API): every check runs before any I/O."""

    name: str
    ttl: float
    at_most: float | None
    queue_ttl: float | None


def check_lock_request(backend: Backend | AsyncBackend, name: object, ttl: object, fair: bool, auto_renew: bool,
                       at_most: float | None) -> LockRequest:
    checked_ttl = check_ttl(ttl)
    checked_name = check_name(name)
    if not fair:
        return LockRequest(checked_name, checked_ttl,
                           None if at_most is None else check_at_most(at_most, checked_ttl, auto_renew), None)
    request = LockRequest(checked_name, checked_ttl, check_at_most(at_most, checked_ttl, auto_renew), QUEUE_TTL)
    if Capability.FAIR not in backend.capabilities:
        raise UnsupportedFeature(f"{type(backend).__name__} has no fair locks (fair=True)")
    return request


def check_semaphore(backend: Backend | AsyncBackend, name: object, permits: object) -> tuple[str, int]:
    """(name, permits) of a semaphore, checked against the backend's limit before any I/O."""
    count = check_permits(permits)
    if count > backend.max_permits:
        raise InvalidArgument(
            f"{type(backend).__name__} supports at most {backend.max_permits} permits per semaphore, got {count}"
        )
    return check_name(name, "semaphore name"), count


def failed(exc: LockError) -> tuple[str, bool | None, LockError | None]:
    """How an acquire that raised ``exc`` is reported: (outcome, decision, error)."""
    if isinstance(exc, _NotGranted):
        return DENIED, False, None
    if isinstance(exc, LockTimeout):
        return TIMEOUT, False, None
    return ERROR, None, exc


class LockManager:
    """Locks, semaphores and job locks on one backend. Thread-safe; a context manager that closes.

    Obtain one with :func:`lockapi.connect`.
    """

    def __init__(self, backend: Backend, *, url: str = "") -> None:
        self._backend = backend
        self._bus = LocalBus()
        self.url = url
        """The connection URL, with any password redacted."""
        self._reporter = Reporter(backend.config.scheme, url or type(backend).__name__)

    def __repr__(self) -> str:
        return f"<LockManager {self.url or type(self._backend).__name__}>"

    @property
    def backend(self) -> Backend:
        """The backend plugin instance (for tools built on the SPI, e.g. migration)."""
        return self._backend

    @property
    def capabilities(self) -> frozenset[Capability]:
        return self._backend.capabilities

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` after every lock decision (see :class:`lockapi.events.Event`)."""
        self._reporter.listeners.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener`` (found by ``==``, so passing ``seen.append`` again works)."""
        self._reporter.listeners.remove(listener)

    def add_observer(self, observer: Observer) -> None:
        """Install ``observer`` (start/finish hooks around every operation, see :mod:`lockapi.observers`)
        on this manager only; :func:`lockapi.observers.add` installs one for every manager."""
        self._reporter.observers.add(observer)

    def remove_observer(self, observer: Observer) -> None:
        self._reporter.observers.remove(observer)

    # -- locks -------------------------------------------------------------------------------------
    def acquire(
        self,
        name: str,
        *,
        ttl: float = 30.0,
        wait: float | None = None,
        fair: bool = False,
        auto_renew: bool = False,
        on_lost: OnLost | None = None,
        at_most: float | None = None,
    ) -> Lease:
        """Take the lock ``name`` for ``ttl`` seconds, waiting up to ``wait`` seconds (None: forever).

        Raises :class:`LockTimeout` if it was not granted in time. ``fair`` grants waiters in arrival
        order. ``auto_renew`` extends the lease every ttl/3 until released; if that fails, ``lease.lost``
        becomes True and ``on_lost(lease)`` is called once. ``at_most`` (seconds >= ttl, with
        ``auto_renew``) caps the renewals: none extends the lease past ``at_most`` after the granting
        request was sent; when that time comes the lease runs out and is reported lost the same way.
        """
        return self._acquire("acquire", name, ttl, check_wait(wait), fair, auto_renew, on_lost, at_most)

    def try_acquire(
        self,
        name: str,
        *,
        ttl: float = 30.0,
        fair: bool = False,
        auto_renew: bool = False,
        on_lost: OnLost | None = None,
        at_most: float | None = None,
    ) -> Lease | None:
        """Take the lock ``name`` if it is free right now; None otherwise. Never waits."""
        if fair or auto_renew or on_lost is not None or at_most is not None:
            try:
                return self._acquire("try_acquire", name, ttl, 0.0, fair, auto_renew, on_lost, at_most)
            except _NotGranted:
                return None
        # The plain call, the hot path: the same checks (before any I/O) and the same one attempt as
        # _acquire's with wait=0 (_once), without the fair/renewal options, the closure or an exception.
        ttl = check_ttl(ttl)
        name = check_name(name)
        holder = new_holder_id()
        started = _monotonic()
        reporter = self._reporter
        observed = None if reporter.observers.observer is None else reporter.start("try_acquire", name, started)
        token = self._once("try_acquire", name, started, observed, self._backend.try_acquire, name, holder, ttl)
        if token is None:
            return None
        return Lease(self._backend, self._bus, reporter, name, holder, token, ttl, started)

    def _acquire(
        self, op: str, name: str, ttl: float, wait: float | None, fair: bool, auto_renew: bool,
        on_lost: OnLost | None, at_most: float | None = None,
    ) -> Lease:
        backend = self._backend
        name, ttl, at_most, queue_ttl = check_lock_request(backend, name, ttl, fair, auto_renew, at_most)
        callback = None if on_lost is None else check_callback(on_lost)
        holder = new_holder_id()
        started = time.monotonic()

        def attempt() -> Attempt:
            return backend.try_acquire(name, holder, ttl, queue_ttl=queue_ttl)

        token, sent = self._wait(op, (False, name), attempt, wait, started, fair=fair, holder=holder)
        return Lease(backend, self._bus, self._reporter, name, holder, token, ttl, sent,
                     auto_renew=bool(auto_renew), on_lost=callback, at_most=at_most)

    def _wait(self, op: str, key: tuple[bool, str], attempt: _AttemptFn, wait: float | None,
              started: float, *, fair: bool = False, holder: str = "") -> tuple[int, float]:
        """(token, monotonic time just before the granting attempt was sent): a lease's local
        deadline counts from there, so it never ends later than the backend's expiry."""
        name = key[1]
        reporter = self._reporter
        observed = reporter.start(op, name, started) if reporter.observers.observer is not None else None
        if wait == 0.0:
            try:
                token = self._once(op, name, started, observed, attempt)
            except LockError:
                self._give_up(fair, name, holder)
                raise
            if token is None:
                self._give_up(fair, name, holder)
                raise _NotGranted(f"{'semaphore' if key[0] else 'lock'} {name!r} is held (wait=0)")
            return token, started
        waiting = reporter.waiting_hook(observed, op, name)
        try:
            token, sent = wait_for_grant(self._backend, self._bus, key, attempt, wait,
                                         fair_holder=holder if fair else None, on_wait=waiting)
        except LockError as exc:
            outcome, decision, error = failed(exc)
            reporter.finish(observed, op, name, started, outcome, decision, error=error, waiting=waiting)
            self._give_up(fair, name, holder)
            raise
        reporter.finish(observed, op, name, started, GRANTED, True, token, waiting=waiting)
        return token, sent

    def _once(self, op: str, name: str, started: float, observed: Operation | None,
              attempt: Callable[..., Attempt], *args: Any) -> int | None:
        """One attempt that never waits, ``attempt(*args)``, reported (``observed``: what the observer's
        start returned): the token if granted, None if denied. The one path of ``try_acquire`` and of every
        acquire with ``wait=0`` (locks and semaphores); nothing is built for a report nobody receives."""
        reporter = self._reporter
        try:
            token = attempt(*args).token
        except LockError as exc:
            outcome, decision, error = failed(exc)
            reporter.finish(observed, op, name, started, outcome, decision, error=error)
            raise
        if observed is not None or reporter.observers.recorders or reporter.down or reporter.listeners.items:
            granted = token is not None
            reporter.finish(observed, op, name, started, GRANTED if granted else DENIED, granted, token)
        return token

    def _give_up(self, fair: bool, name: str, holder: str) -> None:
        if fair:
            with contextlib.suppress(LockError):  # the queue entry expires on its own within QUEUE_TTL
                self._backend.cancel_wait(name, holder)

    def acquire_many(self, names: Iterable[str], *, ttl: float = 30.0) -> dict[str, Lease]:
        """Try each name once, without waiting; return the granted ones as {name: lease}.

        Backends with ``Capability.ATOMIC_BATCH`` do it in one round trip.
        """
        checked = check_names(names)
        ttl = check_ttl(ttl)
        return self._acquire_many(checked, ttl, skip_done=False)

    def _acquire_many(self, names: list[str], ttl: float, *, skip_done: bool, auto_renew: bool = False,
                      on_lost: OnLost | None = None, at_most: float | None = None) -> dict[str, Lease]:
        """The batch acquire behind :meth:`acquire_many` and the job API (arguments already checked)."""
        if not names:
            return {}
        holder = new_holder_id()
        reporter = self._reporter
        label = f"<{len(names)} names>"
        started = time.monotonic()
        asked = tuple(names)
        observed = reporter.start("acquire_many", label, started, asked) \
            if reporter.observers.observer is not None else None
        try:
            granted = self._backend.try_acquire_many(names, holder, ttl, skip_done=skip_done)
        except LockError as exc:
            reporter.finish(observed, "acquire_many", label, started, ERROR, None, error=exc, names=asked)
            raise
        reporter.finish(observed, "acquire_many", label, started, GRANTED if granted else DENIED, bool(granted),
                        granted=tuple(granted), names=asked)
        return {
            name: Lease(self._backend, self._bus, reporter, name, holder, token, ttl, started,
                        auto_renew=auto_renew, on_lost=on_lost, at_most=at_most)
            for name, token in granted.items()
        }

    def inspect(self, name: str) -> LockInfo | None:
        """The live lease on ``name`` (holder id, token, seconds left), or None if it is free."""
        return self._backend.inspect(check_name(name))

    # -- semaphores --------------------------------------------------------------------------------
    def semaphore(self, name: str, permits: int) -> Semaphore:
        """A semaphore of ``permits`` permits shared by every client using the same name."""
        return Semaphore(self, *check_semaphore(self._backend, name, permits))

    # -- job API -----------------------------------------------------------------------------------
    def jobs(self) -> JobLockManager:
        """The job lock manager (lock/unlock/successfully_processed/lock_many) on this backend."""
        from lockapi.jobs import BackendJobLockManager

        return BackendJobLockManager(self)

    def job_semaphore(self) -> JobSemaphore:
        """The job semaphore (at most ``job.max_concurrency`` holders cluster-wide) on this backend."""
        from lockapi.jobs import BackendJobSemaphore

        return BackendJobSemaphore(self)

    # -- scheduled work -------------------------------------------------------------------------------
    def scheduled(
        self,
        name: str,
        *,
        at_most: float,
        at_least: float = 0.0,
        wait: float | None = 0.0,
        ttl: float | None = None,
        key: str | KeyOf | None = None,
        remember: float | None = None,
        on_skip: OnSkip | None = None,
        on_lost: OnRunLost | None = None,
    ) -> ScheduledLock:
        """A guard for scheduled work: ``with mgr.scheduled("nightly", at_most=1800) as run:`` runs the
        block on one node; the others get :class:`lockapi.RunSkipped`. Also a decorator. See
        :mod:`lockapi.scheduling` for ``at_most``, ``at_least``, ``wait``, ``ttl`` and ``key``."""
        from lockapi.scheduling import ScheduledLock

        return ScheduledLock(self, name, at_most=at_most, at_least=at_least, wait=wait, ttl=ttl, key=key,
                             remember=remember, on_skip=on_skip, on_lost=on_lost)

    # -- lifecycle ---------------------------------------------------------------------------------
    def ping(self) -> None:
        """Raise :class:`BackendUnavailable` unless the backend answers within its timeout."""
        self._backend.ping()

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> LockManager:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()



class _NotGranted(LockTimeout):
    """A no-wait attempt was denied: ``try_acquire`` turns it into None, ``acquire(wait=0)`` raises it."""


class Semaphore:
    """A counting semaphore: at most ``permits`` live permits per name, each expiring like a lease."""

    def __init__(self, manager: LockManager, name: str, permits: int) -> None:
        self._manager = manager
        self.name = name
        self.permits = permits

    def __repr__(self) -> str:
        return f"<Semaphore {self.name!r} permits={self.permits}>"

    def acquire(self, *, ttl: float = 30.0, wait: float | None = None) -> Permit:
        """Take a permit for ``ttl`` seconds, waiting up to ``wait`` seconds (None: forever).

        Raises :class:`LockTimeout` if none was free in time.
        """
        return self._acquire("permit_acquire", check_ttl(ttl), check_wait(wait))

    def try_acquire(self, *, ttl: float = 30.0) -> Permit | None:
        """Take a permit if one is free right now; None otherwise."""
        try:
            return self._acquire("permit_try_acquire", check_ttl(ttl), 0.0)
        except _NotGranted:
            return None

    def _acquire(self, op: str, ttl: float, wait: float | None) -> Permit:
        mgr = self._manager
        backend = mgr.backend
        holder = new_holder_id()
        name, permits = self.name, self.permits
        started = time.monotonic()

        def attempt() -> Attempt:
            return backend.try_acquire_permit(name, permits, holder, ttl)

        token, sent = mgr._wait(op, (True, name), attempt, wait, started)
        return Permit(backend, mgr._bus, mgr._reporter, name, holder, token, ttl, sent)
