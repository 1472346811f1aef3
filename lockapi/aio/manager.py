"""The AsyncLockManager: the asyncio application's handle on one backend (contract of LockManager)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Generator, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from lockapi.aio.lease import AsyncLease, AsyncOnLost, AsyncPermit
from lockapi.aio.spi import AsyncBackend
from lockapi.aio.waiting import Background, Turns, attempts, finish_anyway, once, wait_for_grant
from lockapi.errors import LockError
from lockapi.events import Listener
from lockapi.manager import LockRequest, _NotGranted, check_lock_request, check_semaphore, failed, new_holder_id
from lockapi.observers import DENIED, ERROR, GRANTED, Observer
from lockapi.reporting import Reporter
from lockapi.spi import Attempt, Capability, LockInfo
from lockapi.validation import check_callback, check_name, check_names, check_ttl, check_wait
from lockapi.waiting import LocalBus

if TYPE_CHECKING:
    from lockapi.aio.jobs import AsyncJobLockManager, AsyncJobSemaphore
    from lockapi.aio.scheduling import AsyncOnRunLost, AsyncScheduledLock
    from lockapi.scheduling import KeyOf, OnSkip


class Acquiring:
    """What :meth:`AsyncLockManager.acquire` returns: await it for the lease, or use it as
    ``async with`` (the lease is released when the block ends, also by cancellation)."""

    def __init__(self, start: Callable[[], Awaitable[AsyncLease]]) -> None:
        self._start = start
        self._lease: AsyncLease | None = None

    def __await__(self) -> Generator[Any, None, AsyncLease]:
        return self._start().__await__()

    async def __aenter__(self) -> AsyncLease:
        self._lease = await self._start()
        return self._lease

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self._lease is not None
        await self._lease.__aexit__(exc_type, exc, tb)


class AsyncLockManager:
    """Locks, semaphores and job locks on one backend, for asyncio code. Use it from one event loop.

    Obtain one with :func:`lockapi.aio.connect`; ``async with`` closes it, or call :meth:`aclose`.
    """

    def __init__(self, backend: AsyncBackend, *, url: str = "") -> None:
        self._backend = backend
        self._bus = LocalBus()
        self._turns = Turns()
        self._background = Background()
        self.url = url
        """The connection URL, with any password redacted."""
        self._reporter = Reporter(backend.config.scheme, url or type(backend).__name__)

    def __repr__(self) -> str:
        return f"<AsyncLockManager {self.url or type(self._backend).__name__}>"

    @property
    def backend(self) -> AsyncBackend:
        """The async backend (native, or the sync backend adapted)."""
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
        """Install ``observer`` on this manager only (see :meth:`lockapi.LockManager.add_observer`)."""
        self._reporter.observers.add(observer)

    def remove_observer(self, observer: Observer) -> None:
        self._reporter.observers.remove(observer)

    @property
    def waiting(self) -> int:
        """Tasks of this manager waiting for a lock or permit right now."""
        return self._turns.waiting()

    # -- locks -------------------------------------------------------------------------------------
    def acquire(self, name: str, *, ttl: float = 30.0, wait: float | None = None, fair: bool = False,
                auto_renew: bool = False, on_lost: AsyncOnLost | None = None,
                at_most: float | None = None) -> Acquiring:
        """Take the lock ``name`` for ``ttl`` seconds, waiting up to ``wait`` seconds (None: forever).

        ``await mgr.acquire(...)`` gives the lease; ``async with mgr.acquire(...) as lease`` releases it
        at the end. Arguments are checked at the call, before any I/O. Raises :class:`LockTimeout`.
        ``fair``, ``auto_renew``, ``on_lost`` (a function or coroutine function) and ``at_most`` as in
        :meth:`lockapi.LockManager.acquire`.
        """
        start = self._lock_start("acquire", name, ttl, check_wait(wait), fair, auto_renew, on_lost, at_most)
        return Acquiring(start)

    async def try_acquire(self, name: str, *, ttl: float = 30.0, fair: bool = False, auto_renew: bool = False,
                          on_lost: AsyncOnLost | None = None, at_most: float | None = None) -> AsyncLease | None:
        """Take the lock ``name`` if it is free right now; None otherwise. Never waits."""
        reporter = self._reporter
        if fair or auto_renew or on_lost is not None or at_most is not None or reporter.observers.current is not None:
            request = check_lock_request(self._backend, name, ttl, fair, auto_renew, at_most)
            callback = None if on_lost is None else check_callback(on_lost)
            try:
                return await self._lock("try_acquire", request, 0.0, fair, auto_renew, callback)
            except _NotGranted:
                return None
        # The plain call with no observer installed, the hot path (as LockManager.try_acquire's): the
        # same checks (before any I/O), one attempt (run as waiting.attempts chooses) and the same reports
        # as _lock + _wait, without their frames, closure, LockRequest and exception on denial.
        ttl = check_ttl(ttl)
        name = check_name(name)
        backend = self._backend
        holder = new_holder_id()
        started = time.monotonic()
        try:
            token = (await attempts(backend)(functools.partial(backend.try_acquire, name, holder, ttl),
                                             functools.partial(backend.release, name, holder),
                                             self._background, None)).token
        except LockError as exc:
            reporter.finish(None, "try_acquire", name, started, ERROR, None, error=exc)
            raise
        if token is None:
            if reporter.down or reporter.listeners.items:
                reporter.finish(None, "try_acquire", name, started, DENIED, False)
            return None
        if reporter.down or reporter.listeners.items:
            reporter.finish(None, "try_acquire", name, started, GRANTED, True, token)
        return AsyncLease(self, name, holder, token, ttl, started)

    def _lock_start(self, op: str, name: str, ttl: float, wait: float | None, fair: bool, auto_renew: bool,
                    on_lost: AsyncOnLost | None, at_most: float | None) -> Callable[[], Awaitable[AsyncLease]]:
        """The arguments checked now (before any I/O); the acquire itself when the result is called."""
        request = check_lock_request(self._backend, name, ttl, fair, auto_renew, at_most)
        callback = None if on_lost is None else check_callback(on_lost)
        return functools.partial(self._lock, op, request, wait, fair, auto_renew, callback)

    async def _lock(self, op: str, request: LockRequest, wait: float | None, fair: bool, auto_renew: bool,
                    on_lost: AsyncOnLost | None) -> AsyncLease:
        backend = self._backend
        name, ttl, queue_ttl = request.name, request.ttl, request.queue_ttl
        holder = new_holder_id()

        def attempt() -> Awaitable[Attempt]:
            return backend.try_acquire(name, holder, ttl, queue_ttl=queue_ttl)

        give_back = functools.partial(backend.release, name, holder)
        started = time.monotonic()
        token, sent = await self._wait(op, (False, name), attempt, give_back, wait, started, fair=fair, holder=holder)
        return AsyncLease(self, name, holder, token, ttl, sent, auto_renew=bool(auto_renew), on_lost=on_lost,
                          at_most=request.at_most)

    async def _wait(self, op: str, key: tuple[bool, str], attempt: Callable[[], Awaitable[Attempt]],
                    give_back: Callable[[int], Awaitable[object]], wait: float | None, started: float, *,
                    fair: bool = False, holder: str = "") -> tuple[int, float]:
        name = key[1]
        what = "semaphore" if key[0] else "lock"
        reporter = self._reporter
        observed = reporter.start(op, name, started) if reporter.observers.observer is not None else None
        in_flight: list[asyncio.Task[object]] = []  # an attempt that runs on after a cancellation
        waiting = None
        try:
            if wait == 0.0:
                run = attempts(self._backend, semaphore=key[0], fair=fair)
                token = (await run(attempt, give_back, self._background, in_flight)).token
                if token is None:
                    raise _NotGranted(f"{what} {name!r} is held (wait=0)")
                sent = started
            else:
                deadline = None if wait is None else started + wait
                waiting = reporter.waiting_hook(observed, op, name)
                on_wait = once(waiting)  # queued for the turn, or denied once
                async with self._turns.turn((key, fair), deadline, what, name, wait, on_wait, exclusive=not fair):
                    token, sent = await wait_for_grant(
                        self._backend, self._bus, key, attempt, deadline, wait, give_back, self._background,
                        fair_holder=holder if fair else None, on_wait=on_wait, in_flight=in_flight)
        except LockError as exc:
            outcome, decision, error = failed(exc)
            reporter.finish(observed, op, name, started, outcome, decision, error=error, waiting=waiting)
            await self._give_up(fair, name, holder)
            raise
        except asyncio.CancelledError:
            if fair:  # leave no queue entry behind, even when cancelled: after the attempt under way, if
                # any, which may still be joining the queue
                self._background.spawn(self._give_up_after(in_flight, name, holder))
            raise
        reporter.finish(observed, op, name, started, GRANTED, True, token, waiting=waiting)
        return token, sent

    async def _give_up_after(self, in_flight: list[asyncio.Task[object]], name: str, holder: str) -> None:
        await asyncio.gather(*in_flight, return_exceptions=True)
        await self._give_up(True, name, holder)

    async def _give_up(self, fair: bool, name: str, holder: str) -> None:
        if fair:
            with contextlib.suppress(LockError):  # the queue entry expires on its own within QUEUE_TTL
                await self._backend.cancel_wait(name, holder)

    async def acquire_many(self, names: Iterable[str], *, ttl: float = 30.0) -> dict[str, AsyncLease]:
        """Try each name once, without waiting; the granted ones as {name: lease}."""
        return await self._acquire_many(check_names(names), check_ttl(ttl), skip_done=False)

    async def _acquire_many(self, names: list[str], ttl: float, *, skip_done: bool, auto_renew: bool = False,
                            on_lost: AsyncOnLost | None = None,
                            at_most: float | None = None) -> dict[str, AsyncLease]:
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
            granted = await finish_anyway(self._backend.try_acquire_many(names, holder, ttl, skip_done=skip_done),
                                          self._background, functools.partial(self._give_back_many, holder))
        except LockError as exc:
            reporter.finish(observed, "acquire_many", label, started, ERROR, None, error=exc, names=asked)
            raise
        reporter.finish(observed, "acquire_many", label, started, GRANTED if granted else DENIED, bool(granted),
                        granted=tuple(granted), names=asked)
        return {name: AsyncLease(self, name, holder, token, ttl, started, auto_renew=auto_renew, on_lost=on_lost,
                                 at_most=at_most)
                for name, token in granted.items()}

    async def _give_back_many(self, holder: str, granted: dict[str, int]) -> None:
        """Give back what a batch granted after its caller was cancelled."""
        for name, token in granted.items():
            with contextlib.suppress(LockError):
                await self._backend.release(name, holder, token)

    async def inspect(self, name: str) -> LockInfo | None:
        """The live lease on ``name`` (holder id, token, seconds left), or None if it is free."""
        return await self._backend.inspect(check_name(name))

    # -- semaphores --------------------------------------------------------------------------------
    def semaphore(self, name: str, permits: int) -> AsyncSemaphore:
        """A semaphore of ``permits`` permits shared by every client using the same name."""
        return AsyncSemaphore(self, *check_semaphore(self._backend, name, permits))

    # -- job API -----------------------------------------------------------------------------------
    def jobs(self) -> AsyncJobLockManager:
        """The job lock manager of the asyncio API on this backend."""
        from lockapi.aio.jobs import AsyncJobLockManager

        return AsyncJobLockManager(self)

    def job_semaphore(self) -> AsyncJobSemaphore:
        """The job semaphore of the asyncio API on this backend."""
        from lockapi.aio.jobs import AsyncJobSemaphore

        return AsyncJobSemaphore(self)

    # -- scheduled work ------------------------------------------------------------------------------
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
        on_lost: AsyncOnRunLost | None = None,
    ) -> AsyncScheduledLock:
        """A guard for scheduled work on the event loop: ``@mgr.scheduled("nightly", at_most=1800)`` on an
        ``async def``, or ``async with mgr.scheduled(...) as run:``, runs on one node; the others skip
        (:class:`lockapi.RunSkipped`). The options of :meth:`lockapi.LockManager.scheduled`, checked here
        before any I/O; ``on_skip`` and ``on_lost`` may be coroutine functions."""
        from lockapi.aio.scheduling import AsyncScheduledLock

        return AsyncScheduledLock(self, name, at_most=at_most, at_least=at_least, wait=wait, ttl=ttl, key=key,
                                  remember=remember, on_skip=on_skip, on_lost=on_lost)

    # -- lifecycle ---------------------------------------------------------------------------------
    async def ping(self) -> None:
        """Raise :class:`BackendUnavailable` unless the backend answers within its timeout."""
        await self._backend.ping()

    async def aclose(self) -> None:
        """Finish background work (give-backs of cancelled grants), then close the backend."""
        await self._background.drain()
        await self._backend.aclose()

    async def __aenter__(self) -> AsyncLockManager:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()



class AsyncSemaphore:
    """A counting semaphore of the asyncio API (contract of :class:`lockapi.Semaphore`)."""

    def __init__(self, manager: AsyncLockManager, name: str, permits: int) -> None:
        self._manager = manager
        self.name = name
        self.permits = permits

    def __repr__(self) -> str:
        return f"<AsyncSemaphore {self.name!r} permits={self.permits}>"

    async def acquire(self, *, ttl: float = 30.0, wait: float | None = None) -> AsyncPermit:
        """Take a permit for ``ttl`` seconds, waiting up to ``wait`` seconds; :class:`LockTimeout`."""
        return await self._acquire("permit_acquire", check_ttl(ttl), check_wait(wait))

    async def try_acquire(self, *, ttl: float = 30.0) -> AsyncPermit | None:
        """Take a permit if one is free right now; None otherwise."""
        try:
            return await self._acquire("permit_try_acquire", check_ttl(ttl), 0.0)
        except _NotGranted:
            return None

    async def _acquire(self, op: str, ttl: float, wait: float | None) -> AsyncPermit:
        mgr = self._manager
        backend = mgr.backend
        holder = new_holder_id()
        name, permits = self.name, self.permits

        def attempt() -> Awaitable[Attempt]:
            return backend.try_acquire_permit(name, permits, holder, ttl)

        started = time.monotonic()
        token, sent = await mgr._wait(op, (True, name), attempt,
                                      functools.partial(backend.release_permit, name, holder), wait, started)
        return AsyncPermit(mgr, name, holder, token, ttl, sent)
