"""Scheduled work guarded by a lock: each trigger runs on one node (ShedLock's job guard, for Python).

The same job is scheduled on several nodes; every node fires it, one takes the guard's lock and runs it,
the others skip (or wait, then skip). The timing maps onto one auto-renewed :class:`Lease`; every
duration is in seconds:

``ttl``
    The lease's ttl, renewed every ttl/3 while the run goes on, so a node that dies frees the name
    after at most ``ttl``. Default: 60, clamped into [``at_least``, ``at_most``] (a dead node then
    still holds the name for ``at_least``).
``at_most``
    No renewal extends the lease past ``at_most`` after the request that granted it was sent (by the
    local monotonic clock, which starts no later than the backend's grant; the backend's expiry can
    trail it only by the round trip of that last extend). A run still going then has lost its lock:
    the lease is reported lost (``on_lost``, the ``scheduled_lost`` event) and the run ends with
    :class:`LeaseLost`. ``lockapi run`` terminates its command before that point.
``at_least``
    A run that ends sooner does not free the name: its lease is set to expire ``at_least`` after the
    grant's answer arrived (one extend, so the backend's clock decides when; counted from the answer
    so that the hold is never shorter than ``at_least`` after the backend's grant). A node whose
    clock lags and fires the same trigger a little later is refused. Keep it above the clock skew
    between nodes and below the interval between triggers.
``wait``
    0 (default): a node that finds the name held skips at once. More: it waits that long for the
    holder to finish first (None: forever), and skips if it still cannot take it. A run that ended
    within ``at_least`` is still holding the name, so a waiter skips it too.
``key``
    Once per key (e.g. the trigger's scheduled time, the same on every node): the lock is per key,
    the key's done marker is read only AFTER the lock is held (a done key is skipped), and a run
    that returns is marked done BEFORE its lock is released, for ``remember`` seconds. This is the
    job API's exactly-once order (:mod:`lockapi.jobs`) and does not depend on clocks agreeing. A run
    that raises is not marked done (its lock is kept until ``at_least``, then others may retry).

The decision is visible to the caller: entering the context manager raises :class:`RunSkipped`; a
decorated function returns ``on_skip(skipped)`` (None without ``on_skip``). Decisions are also
:class:`lockapi.Event` s on the manager's listeners, under the guard's name (never the key, so that
metrics stay bounded): ``scheduled`` (outcome True taken, False skipped, None error),
``scheduled_lost`` (outcome False: the lease was lost or ran out at ``at_most`` while the run went on;
seconds since the grant) and ``scheduled_end`` (outcome True: ran to its end holding the lock, False:
the lock was lost meanwhile, None: the run raised, ``error`` says what; seconds the run took).

The asyncio API has the same guard on the event loop (:meth:`lockapi.aio.AsyncLockManager.scheduled`,
:mod:`lockapi.aio.scheduling`). Both share everything but the I/O: :class:`ScheduledLockCore` checks the
options and makes every decision, :class:`ScheduledLock` and the asyncio guard do the round trips.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, ParamSpec, TypeVar, cast

from lockapi.errors import InvalidArgument, InvalidArgumentType, LeaseLost, LockError, LockTimeout
from lockapi.events import Event
from lockapi.jobs import Job
from lockapi.manager import LockManager
from lockapi.validation import check_name, check_ttl, check_wait

if TYPE_CHECKING:
    from lockapi.jobs import JobLockManager
    from lockapi.lease import Lease, LeaseCore
    from lockapi.reporting import Reporter

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_TTL = 60.0
"""The lease ttl when none is given (clamped into [at_least, at_most])."""
DEFAULT_REMEMBER = 7 * 24 * 3600.0
"""How long a key's done marker lives by default (seconds)."""

OnSkip = Callable[["RunSkipped"], Any]
OnRunLost = Callable[["ScheduledRun"], None]
KeyOf = Callable[..., str]


class RunSkipped(LockTimeout):
    """This node did not run the scheduled work: another node holds its lock (running it, or keeping
    it for ``at_least`` after a run), or, with a key, the key was already done."""

    def __init__(self, name: str, key: str | None, reason: str, waited: float) -> None:
        self.name = name
        self.key = key
        self.reason = reason
        """``"held"`` (another node has the lock) or ``"done"`` (the key's run already succeeded)."""
        self.waited = waited
        what = f"{name!r}" if key is None else f"{name!r} key {key!r}"
        why = ("already done" if reason == "done"
               else "another node holds its lock (running it, or within at_least of a run)")
        super().__init__(f"scheduled run {what} skipped: {why}")


_current: contextvars.ContextVar[ScheduledRunCore | None] = contextvars.ContextVar("lockapi_scheduled_run",
                                                                                     default=None)


def current_run() -> ScheduledRunCore | None:
    """The scheduled run the calling code is inside (a decorated function or an integration's job), if
    any: a :class:`ScheduledRun`, or a :class:`lockapi.aio.AsyncScheduledRun` inside a guard of the
    asyncio API. Use ``current_run().token`` to fence the resource a run writes to."""
    return _current.get()


@contextlib.contextmanager
def as_current(run: ScheduledRunCore) -> Iterator[ScheduledRunCore]:
    """Make ``run`` what :func:`current_run` returns inside the block (for integrations that call the
    job themselves between :meth:`ScheduledLock.begin` and :meth:`ScheduledLock.end`)."""
    token = _current.set(run)
    try:
        yield run
    finally:
        _current.reset(token)


class ScheduledRunCore:
    """What a run of the sync API (:class:`ScheduledRun`) and of the asyncio API
    (:class:`lockapi.aio.AsyncScheduledRun`) share: its lease (``token`` to fence with), whether it
    lost it, and the reporting of that loss. Only the I/O (``release``) differs."""

    lease: LeaseCore | None

    def __init__(self, guard: ScheduledLockCore[Any], key: str | None, reporter: Reporter) -> None:
        self.guard = guard
        self.name = guard.name
        self.key = key
        self.lease = None
        self.granted_at = 0.0
        """time.monotonic() when the grant's answer arrived."""
        self._reporter = reporter
        self._ended = False
        self._lost_reported = threading.Event()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} key={self.key!r} token={self.token}>"

    @property
    def token(self) -> int | None:
        """The fencing token of this run's lease: strictly increasing per lock name."""
        return None if self.lease is None else self.lease.token

    @property
    def lost(self) -> bool:
        """True once the lock is known lost (or ran out at ``at_most``) while the run went on."""
        return self.lease is not None and self.lease.lost

    @property
    def lost_reason(self) -> str | None:
        return None if self.lease is None else self.lease.lost_reason

    def _report_lost(self, lease: LeaseCore) -> object:
        """The lease's ``on_lost``: log, emit ``scheduled_lost`` and call the guard's ``on_lost`` once
        (its result is returned: the asyncio lease awaits a coroutine's)."""
        if self._ended or self._lost_reported.is_set():
            return None
        self._lost_reported.set()
        seconds = time.monotonic() - self.granted_at if self.granted_at else 0.0
        log.warning("lockapi: scheduled run %r lost its lock after %.1f s: %s", self.name, seconds,
                    lease.lost_reason)
        self.guard._emit(self._reporter, "scheduled_lost", False, lease.token, seconds)
        callback = self.guard.on_lost
        if callback is None:
            return None
        try:
            return callback(self)
        except Exception:
            log.exception("lockapi: on_lost callback of scheduled run %r failed", self.name)
            return None


class ScheduledRun(ScheduledRunCore):
    """One run that took the lock: its lease (``token`` to fence with), and how it ends."""

    lease: Lease | None
    guard: ScheduledLock

    def release(self) -> None:
        """End the guarded part now, as if the run had returned (the rest of it is no longer
        guarded): the lock is kept until ``at_least`` (with a key: the key is marked done first).
        Raises :class:`LeaseLost` if the lock had been lost meanwhile."""
        self.guard.end(self, None)

    def _on_lease_lost(self, lease: Lease) -> None:
        self._report_lost(lease)


RunT = TypeVar("RunT", bound=ScheduledRunCore)


def _seconds(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgumentType(f"{what} must be a number of seconds, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise InvalidArgument(f"{what} must be a finite number of seconds >= 0, got {value!r}")
    return number


class Ending(NamedTuple):
    """How a run ends, decided before the I/O that ends it (:meth:`ScheduledLockCore._ending`)."""

    seconds: float
    """How long the run took."""
    keep: float | None
    """Let the lease expire this many seconds from now (``at_least``) instead of releasing it; None:
    release it now."""
    lost: bool
    """The lease was known lost before the run ended."""
    mark_done: bool
    """A keyed run that returned holding its lock: mark the key done, then release."""


class ScheduledLockCore(Generic[RunT]):
    """What the guards of the sync and the asyncio API share: the checked options, every decision
    (skip, keep until ``at_least``, mark done, the outcome and its events), ``async with`` and the
    decorator of coroutine functions. Subclasses do the I/O: :meth:`_abegin` and :meth:`_aend`."""

    def __init__(
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
        on_lost: Callable[[RunT], object] | None = None,
    ) -> None:
        self.name = check_name(name, "scheduled lock name")
        self.at_most = check_ttl(at_most, "at_most")
        self.at_least = _seconds(at_least, "at_least")
        if self.at_least > self.at_most:
            raise InvalidArgument(f"at_least ({self.at_least:g} s) must not exceed at_most ({self.at_most:g} s)")
        self.wait = check_wait(wait)
        self.ttl = (min(self.at_most, max(self.at_least, DEFAULT_TTL)) if ttl is None
                    else check_ttl(ttl))
        if self.ttl > self.at_most:
            raise InvalidArgument(f"ttl ({self.ttl:g} s) must not exceed at_most ({self.at_most:g} s)")
        if key is not None and not isinstance(key, str) and not callable(key):
            raise InvalidArgumentType(f"key must be a str, a callable (*args, **kwargs) -> str, or None, "
                                      f"got {type(key).__name__}")
        self.key = key
        self.remember = DEFAULT_REMEMBER if remember is None else check_ttl(remember, "remember")
        for what, callback in (("on_skip", on_skip), ("on_lost", on_lost)):
            if callback is not None and not callable(callback):
                raise InvalidArgumentType(f"{what} must be callable or None, got {type(callback).__name__}")
        self.on_skip = on_skip
        self.on_lost = on_lost
        self._job = Job(self.name, ttl=self.ttl, done_ttl=self.remember)
        if isinstance(key, str):
            self._job.lock_name(key)  # a bad key fails here, before any I/O
        self._open: dict[tuple[int, int], list[RunT]] = {}
        self._guard = threading.Lock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} at_most={self.at_most:g} at_least={self.at_least:g}>"

    def lock_name(self, key: str | None = None) -> str:
        """The lock name a run takes: the guard's name, or with a key the job API's per-key name."""
        return self.name if key is None else self._job.lock_name(key)

    # -- the I/O, done by subclasses ---------------------------------------------------------------
    async def _abegin(self, key: str | None) -> RunT:
        raise NotImplementedError

    async def _aend(self, run: RunT, error: BaseException | None) -> None:
        raise NotImplementedError

    # -- the decisions around it ---------------------------------------------------------------------
    def _skip(self, key: str | None, started: float, done: bool = False) -> RunSkipped:
        """The skip of a run whose lock another node holds (``done``: whose key is done)."""
        return RunSkipped(self.name, key, "done" if done else "held", time.monotonic() - started)

    def _begun(self, run: RunT, lease: LeaseCore, started: float) -> RunT:
        """Record the grant of ``run`` (emits ``scheduled`` True)."""
        run.lease = lease
        run.granted_at = time.monotonic()
        self._emit(run._reporter, "scheduled", True, lease.token, run.granted_at - started)
        return run

    def _refused(self, run: RunT, exc: LockError, started: float) -> None:
        """Record that ``run`` did not start: skipped (``scheduled`` False) or failed (None)."""
        if isinstance(exc, RunSkipped):
            self._emit(run._reporter, "scheduled", False, None, time.monotonic() - started)
            log.info("lockapi: %s", exc)
        else:
            self._emit(run._reporter, "scheduled", None, None, time.monotonic() - started, repr(exc))

    def _ending(self, run: RunT, error: BaseException | None, hold: bool) -> Ending | None:
        """Decide how ``run`` ends (None: it has ended already, or never began). Marks it ended."""
        if run._ended or run.lease is None:
            return None
        now = time.monotonic()
        keep = run.granted_at + self.at_least - now if hold else 0.0
        run._ended = True
        lost = run.lease.lost
        return Ending(now - run.granted_at, keep if keep > 0 and not lost else None, lost,
                      run.key is not None and error is None and not lost)

    def _end_failed(self, run: RunT, error: BaseException | None, exc: LockError) -> bool:
        """Record that ending ``run`` failed with ``exc``; True if the caller must raise it (the run
        itself did not raise)."""
        assert run.lease is not None
        seconds = time.monotonic() - run.granted_at
        self._emit(run._reporter, "scheduled_end", None, run.lease.token, seconds,
                   repr(exc if error is None else error))
        if error is None:
            return True
        log.warning("lockapi: could not end scheduled run %r while handling %r: %s", self.name, error, exc)
        return False

    def _ended(self, run: RunT, ending: Ending, error: BaseException | None, held: bool) -> None:
        """Record the end of ``run`` (``held``: it still held its lock at the end): emits
        ``scheduled_end``; raises :class:`LeaseLost` if the lock was lost during a run that did not raise."""
        lease = run.lease
        assert lease is not None
        lost = ending.lost or not held
        outcome = None if error is not None else not lost
        self._emit(run._reporter, "scheduled_end", outcome, lease.token, ending.seconds,
                   None if error is None else repr(error))
        if lost and error is None:
            raise LeaseLost(
                f"scheduled run {self.name!r} (token {lease.token}) lost its lock before it ended "
                f"({lease.lost_reason or 'it expired'}): another node may have run it too; raise at_most, "
                "or fence the resource with the run's token"
            )

    # -- async with ----------------------------------------------------------------------------------
    async def __aenter__(self) -> RunT:
        return self._push(await self._abegin(None))

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._aend(self._pop(), exc)

    def _push(self, run: RunT) -> RunT:
        with self._guard:
            self._open.setdefault(_where(), []).append(run)
        return run

    def _pop(self) -> RunT:
        where = _where()
        with self._guard:
            runs = self._open[where]
            run = runs.pop()
            if not runs:
                del self._open[where]
        return run

    # -- decorator of coroutine functions ------------------------------------------------------------
    def _wrap_async(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R | Any]]:
        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R | Any:
            try:
                run = await self._abegin(self._key_of(args, kwargs))
            except RunSkipped as skipped:
                result = self._skipped(skipped)
                return await result if inspect.isawaitable(result) else result
            try:
                with as_current(run):
                    value = await fn(*args, **kwargs)
            except BaseException as exc:
                await self._aend(run, exc)
                raise
            await self._aend(run, None)
            return value

        guarded.lockapi_guard = self  # type: ignore[attr-defined]
        return guarded

    # -- internals ---------------------------------------------------------------------------------
    def _skipped(self, skipped: RunSkipped) -> Any:
        return None if self.on_skip is None else self.on_skip(skipped)

    def _fixed_key(self, key: str | None) -> str | None:
        if key is None and isinstance(self.key, str):
            key = self.key
        if key is not None:
            if not isinstance(key, str):
                raise InvalidArgumentType(f"a scheduled run's key must be a str, got {type(key).__name__}")
            self._job.lock_name(key)
        return key

    def _key_of(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        if self.key is None or isinstance(self.key, str):
            return self.key
        return self.key(*args, **kwargs)

    def _emit(self, reporter: Reporter, op: str, outcome: bool | None, token: int | None, seconds: float,
              error: str | None = None) -> None:
        listeners = reporter.listeners
        if listeners:
            listeners.emit(Event(op, self.name, outcome, token, seconds, error))


class ScheduledLock(ScheduledLockCore[ScheduledRun]):
    """A scheduled-work guard: a context manager (entering raises :class:`RunSkipped` on skip) and a
    decorator for sync and async functions (a skipped call returns ``on_skip(skipped)``, or None).

    Obtain one with :meth:`LockManager.scheduled` or :func:`lockapi.scheduled`. Every argument is
    checked here, before any I/O. One object may guard any number of runs, from any thread. An
    ``async def`` it decorates (or ``async with``) runs the sync API's calls on a thread; the asyncio
    API's :meth:`lockapi.aio.AsyncLockManager.scheduled` does them on the event loop.
    """

    def __init__(
        self,
        manager: LockManager | Callable[[], LockManager],
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
    ) -> None:
        super().__init__(name, at_most=at_most, at_least=at_least, wait=wait, ttl=ttl, key=key,
                         remember=remember, on_skip=on_skip, on_lost=on_lost)
        self._source = manager
        self._jobs: JobLockManager | None = None

    @property
    def manager(self) -> LockManager:
        source = self._source
        return source if isinstance(source, LockManager) else source()

    # -- the two steps ---------------------------------------------------------------------------------
    def begin(self, key: str | None = None) -> ScheduledRun:
        """Take the lock for one run (key: the run's key, if the guard is keyed). Raises
        :class:`RunSkipped` if this node must not run it. Pair every begin with :meth:`end`."""
        key = self._fixed_key(key)
        manager = self.manager
        run = ScheduledRun(self, key, manager._reporter)
        started = time.monotonic()
        try:
            lease = self._take(manager, run, key)
        except LockError as exc:
            self._refused(run, exc, started)
            raise
        return self._begun(run, lease, started)

    def _take(self, manager: LockManager, run: ScheduledRun, key: str | None) -> Lease:
        started = time.monotonic()
        if key is None:
            try:
                return manager.acquire(self.name, ttl=self.ttl, wait=self.wait, auto_renew=True,
                                       on_lost=run._on_lease_lost, at_most=self.at_most)
            except LockTimeout:
                raise self._skip(None, started) from None
        jobs = self._job_locks(manager)
        if not jobs.lock(self._job, key, wait=self.wait, auto_renew=True, on_lost=run._on_lease_lost,
                         at_most=self.at_most):
            raise self._skip(key, started, jobs.is_processed(self._job, key))
        return jobs.lease(self._job, key)

    def end(self, run: ScheduledRun, error: BaseException | None, *, hold: bool = True) -> None:
        """End ``run``: keep the lock until ``at_least`` after the grant, never releasing it sooner
        (with a key and no ``error``: mark the key done first, then release). ``hold=False`` releases
        at once (the work never started). Raises :class:`LeaseLost` if the lock was lost during a run
        that did not raise. Idempotent."""
        lease = run.lease
        ending = self._ending(run, error, hold)
        if lease is None or ending is None:
            return
        try:
            held = self._send_end(run, lease, ending)
        except LockError as exc:
            if self._end_failed(run, error, exc):
                raise
            return
        self._ended(run, ending, error, held)

    def _send_end(self, run: ScheduledRun, lease: Lease, ending: Ending) -> bool:
        """Release, keep or mark done as ``ending`` says; True if the lock was still held."""
        if run.key is None:
            return lease.release(keep=ending.keep)
        jobs = self._job_locks(self.manager)
        if ending.mark_done:
            try:
                jobs.successfully_processed(self._job, run.key)
            except LeaseLost:
                return False
            return True
        jobs.unlock(self._job, run.key, keep=ending.keep)
        return not ending.lost

    # -- context manager ---------------------------------------------------------------------------
    def __enter__(self) -> ScheduledRun:
        return self._push(self.begin())

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.end(self._pop(), exc)

    async def _abegin(self, key: str | None) -> ScheduledRun:
        return await asyncio.to_thread(self.begin, key)

    async def _aend(self, run: ScheduledRun, error: BaseException | None) -> None:
        await asyncio.to_thread(self.end, run, error)

    # -- decorator ---------------------------------------------------------------------------------
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R | Any]:
        if not callable(fn):
            raise InvalidArgumentType(f"scheduled(...) decorates a function, got {type(fn).__name__}")
        if inspect.iscoroutinefunction(fn):
            return cast("Callable[P, R | Any]", self._wrap_async(fn))

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R | Any:
            try:
                run = self.begin(self._key_of(args, kwargs))
            except RunSkipped as skipped:
                return self._skipped(skipped)
            try:
                with as_current(run):
                    result = fn(*args, **kwargs)
            except BaseException as exc:
                self.end(run, exc)
                raise
            self.end(run, None)
            return result

        guarded.lockapi_guard = self  # type: ignore[attr-defined]
        return guarded

    def _job_locks(self, manager: LockManager) -> JobLockManager:
        with self._guard:
            if self._jobs is None:
                self._jobs = manager.jobs()
            return self._jobs


def _where() -> tuple[int, int]:
    """Which thread and asyncio task a ``with`` block runs in (so one guard serves many at once)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    return threading.get_ident(), 0 if task is None else id(task)


# -- lockapi.scheduled(...): a process-wide manager per URL, opened on first use ------------------------
_shared: dict[str | None, LockManager] = {}
_shared_lock = threading.Lock()


def _forget_shared() -> None:
    _shared.clear()  # a forked child opens its own connections


os.register_at_fork(after_in_child=_forget_shared)


def shared_manager(url: str | None = None) -> LockManager:
    """The process-wide :class:`LockManager` for ``url`` (None: the configuration), opened on first use
    and again in a forked child (Celery's prefork workers, multiprocessing)."""
    with _shared_lock:
        manager = _shared.get(url)
        if manager is None:
            from lockapi import connect

            manager = _shared[url] = connect(url)
        return manager


def scheduled(
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
    manager: LockManager | None = None,
    url: str | None = None,
) -> ScheduledLock:
    """A :class:`ScheduledLock` on ``manager``, or on the process-wide manager for ``url`` (None: the
    configuration: ``$LOCKAPI_URL``, ``lockapi.toml``, the embedded SQLite file), connected at the first
    run, not at import. See :mod:`lockapi.scheduling` for what each argument means::

        @lockapi.scheduled("nightly-invoices", at_most=1800, at_least=60)
        def nightly_invoices() -> None: ...
    """
    if manager is not None and url is not None:
        raise InvalidArgument("pass manager= or url=, not both")
    source: LockManager | Callable[[], LockManager] = (
        manager if manager is not None else functools.partial(shared_manager, url))
    return ScheduledLock(source, name, at_most=at_most, at_least=at_least, wait=wait, ttl=ttl, key=key,
                         remember=remember, on_skip=on_skip, on_lost=on_lost)
