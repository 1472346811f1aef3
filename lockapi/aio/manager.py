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
from lockapi.aio.waiting import Background, Turns, guarded, wait_for_grant
from lockapi.errors import InvalidArgument, InvalidArgumentType, LockError, LockTimeout, UnsupportedFeature
from lockapi.events import Event, Listener, Listeners
from lockapi.manager import new_holder_id
from lockapi.spi import Attempt, Capability, LockInfo
from lockapi.validation import check_name, check_names, check_permits, check_ttl, check_wait
from lockapi.waiting import QUEUE_TTL, LocalBus

if TYPE_CHECKING:
    from lockapi.aio.jobs import AsyncJobLockManager, AsyncJobSemaphore


def _check_callback(on_lost: object) -> Any:
    if on_lost is not None and not callable(on_lost):
        raise InvalidArgumentType(f"on_lost must be callable or None, got {type(on_lost).__name__}")
    return on_lost


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
        self._listeners = Listeners()
        self._turns = Turns()
        self._background = Background()
        self.url = url
        """The connection URL, with any password redacted."""

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
        self._listeners.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    @property
    def waiting(self) -> int:
        """Tasks of this manager waiting for a lock or permit right now."""
        return self._turns.waiting()

    # -- locks -------------------------------------------------------------------------------------
    def acquire(self, name: str, *, ttl: float = 30.0, wait: float | None = None, fair: bool = False,
                auto_renew: bool = False, on_lost: AsyncOnLost | None = None) -> Acquiring:
        """Take the lock ``name`` for ``ttl`` seconds, waiting up to ``wait`` seconds (None: forever).

        ``await mgr.acquire(...)`` gives the lease; ``async with mgr.acquire(...) as lease`` releases it
        at the end. Arguments are checked at the call, before any I/O. Raises :class:`LockTimeout`.
        """
        start = self._lock_start("acquire", name, ttl, check_wait(wait), fair, auto_renew, on_lost)
        return Acquiring(start)

    async def try_acquire(self, name: str, *, ttl: float = 30.0, fair: bool = False, auto_renew: bool = False,
                          on_lost: AsyncOnLost | None = None) -> AsyncLease | None:
        """Take the lock ``name`` if it is free right now; None otherwise. Never waits."""
        try:
            return await self._lock_start("try_acquire", name, ttl, 0.0, fair, auto_renew, on_lost)()
        except _NotGranted:
            return None

    def _lock_start(self, op: str, name: str, ttl: float, wait: float | None, fair: bool, auto_renew: bool,
                    on_lost: AsyncOnLost | None) -> Callable[[], Awaitable[AsyncLease]]:
        name = check_name(name)
        ttl = check_ttl(ttl)
        callback = _check_callback(on_lost)
        if fair and Capability.FAIR not in self._backend.capabilities:
            raise UnsupportedFeature(f"{type(self._backend).__name__} has no fair locks (fair=True)")
        backend = self._backend

        async def start() -> AsyncLease:
            holder = new_holder_id()
            queue_ttl = QUEUE_TTL if fair else None

            def attempt() -> Awaitable[Attempt]:
                return backend.try_acquire(name, holder, ttl, queue_ttl=queue_ttl)

            give_back = functools.partial(backend.release, name, holder)
            started = time.monotonic()
            token, sent = await self._wait(op, (False, name), attempt, give_back, wait, started,
                                           fair=fair, holder=holder)
            self._emit(op, name, True, token, started)
            return AsyncLease(self, name, holder, token, ttl, sent, auto_renew=bool(auto_renew), on_lost=callback)

        return start

    async def _wait(self, op: str, key: tuple[bool, str], attempt: Callable[[], Awaitable[Attempt]],
                    give_back: Callable[[int], Awaitable[object]], wait: float | None, started: float, *,
                    fair: bool = False, holder: str = "") -> tuple[int, float]:
        name = key[1]
        what = "semaphore" if key[0] else "lock"
        try:
            if wait == 0.0:
                token = (await guarded(attempt, give_back, self._background)).token
                if token is None:
                    raise _NotGranted(f"{what} {name!r} is held (wait=0)")
                return token, started
            deadline = None if wait is None else started + wait
            async with self._turns.turn((key, fair), deadline, what, name, wait, exclusive=not fair):
                return await wait_for_grant(self._backend, self._bus, key, attempt, deadline, wait, give_back,
                                            self._background, fair_holder=holder if fair else None)
        except _NotGranted:
            self._emit(op, name, False, None, started)
            await self._give_up(fair, name, holder)
            raise
        except LockError as exc:
            self._emit(op, name, None, None, started, exc)
            await self._give_up(fair, name, holder)
            raise
        except asyncio.CancelledError:
            if fair:  # leave no queue entry behind, even when cancelled
                self._background.spawn(self._give_up(fair, name, holder))
            raise

    async def _give_up(self, fair: bool, name: str, holder: str) -> None:
        if fair:
            with contextlib.suppress(LockError):  # the queue entry expires on its own within QUEUE_TTL
                await self._backend.cancel_wait(name, holder)

    async def acquire_many(self, names: Iterable[str], *, ttl: float = 30.0) -> dict[str, AsyncLease]:
        """Try each name once, without waiting; the granted ones as {name: lease}."""
        return await self._acquire_many(check_names(names), check_ttl(ttl), skip_done=False)

    async def _acquire_many(self, names: list[str], ttl: float, *, skip_done: bool) -> dict[str, AsyncLease]:
        if not names:
            return {}
        holder = new_holder_id()
        started = time.monotonic()
        label = f"<{len(names)} names>"
        task = asyncio.ensure_future(self._backend.try_acquire_many(names, holder, ttl, skip_done=skip_done))
        try:
            granted = await asyncio.shield(task)
        except asyncio.CancelledError:
            self._background.spawn(self._give_back_many(holder, task))
            raise
        except LockError as exc:
            self._emit("acquire_many", label, None, None, started, exc)
            raise
        self._emit("acquire_many", label, bool(granted), None, started)
        return {name: AsyncLease(self, name, holder, token, ttl, started) for name, token in granted.items()}

    async def _give_back_many(self, holder: str, task: Awaitable[dict[str, int]]) -> None:
        """Give back what a batch granted after its caller was cancelled."""
        try:
            granted = await task
        except Exception:
            return
        for name, token in granted.items():
            with contextlib.suppress(LockError):
                await self._backend.release(name, holder, token)

    async def inspect(self, name: str) -> LockInfo | None:
        """The live lease on ``name`` (holder id, token, seconds left), or None if it is free."""
        return await self._backend.inspect(check_name(name))

    # -- semaphores --------------------------------------------------------------------------------
    def semaphore(self, name: str, permits: int) -> AsyncSemaphore:
        """A semaphore of ``permits`` permits shared by every client using the same name."""
        permits = check_permits(permits)
        if permits > self._backend.max_permits:
            raise InvalidArgument(
                f"{type(self._backend).__name__} supports at most {self._backend.max_permits} permits per "
                f"semaphore, got {permits}"
            )
        return AsyncSemaphore(self, check_name(name, "semaphore name"), permits)

    # -- job API -----------------------------------------------------------------------------------
    def jobs(self) -> AsyncJobLockManager:
        """The job lock manager of the asyncio API on this backend."""
        from lockapi.aio.jobs import AsyncJobLockManager

        return AsyncJobLockManager(self)

    def job_semaphore(self) -> AsyncJobSemaphore:
        """The job semaphore of the asyncio API on this backend."""
        from lockapi.aio.jobs import AsyncJobSemaphore

        return AsyncJobSemaphore(self)

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

    def _emit(self, op: str, name: str, outcome: bool | None, token: int | None, started: float,
              error: BaseException | None = None) -> None:
        if self._listeners:
            self._listeners.emit(Event(op, name, outcome, token, time.monotonic() - started,
                                       None if error is None else repr(error)))


class _NotGranted(LockTimeout):
    """A no-wait attempt was denied: ``try_acquire`` turns it into None, ``acquire(wait=0)`` raises it."""


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
        mgr._emit(op, name, True, token, started)
        return AsyncPermit(mgr, name, holder, token, ttl, sent)
