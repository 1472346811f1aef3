"""The asyncio backend SPI: what a backend implements to serve :mod:`lockapi.aio` natively.

An async backend is registered in the entry-point group ``lockapi.async_backends`` under the same
scheme as its sync backend (``lockapi.backends``). Every method has the contract of the method of the
same name in :class:`lockapi.spi.Backend` (one attempt, never waits for a lock, returns or raises
:class:`BackendUnavailable` within ``config.timeout``, the rules of docs/semantics.md), as a coroutine.

A scheme without an async backend is served by :class:`SyncBackendAdapter`, which runs the sync SPI on a
bounded thread pool: the sync SPI alone is enough to be a backend. Waiting never occupies a thread
either way: core waits on the event loop, woken by :meth:`AsyncBackend.watch` or by polling.

The only module of ``lockapi.aio`` a backend may import, besides :mod:`lockapi.spi`.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import contextvars
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar

from lockapi.spi import (
    Attempt,
    Backend,
    BackendConfig,
    Capability,
    LockError,
    LockInfo,
    UnsupportedFeature,
    Wake,
)

__all__ = ["AsyncBackend", "SyncBackendAdapter", "drive_async"]

T = TypeVar("T")


S = TypeVar("S")
Result = TypeVar("Result")


async def drive_async(plan: Generator[S, Any, Result], run: Callable[[S], Awaitable[Any]]) -> Result:
    """:func:`lockapi.spi.drive` with an asyncio step runner (a cancellation is thrown into the plan
    like an error)."""
    answer: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = plan.send(answer) if error is None else plan.throw(error)
        except StopIteration as stop:
            result: Result = stop.value
            return result
        try:
            answer, error = await run(step), None
        except BaseException as exc:
            answer, error = None, exc


class AsyncBackend(abc.ABC):
    """A connection to one lock store for asyncio code. Safe to use from many tasks of one event loop.

    Class attributes as in :class:`lockapi.spi.Backend`: ``capabilities``, ``description``,
    ``pause_points`` (a native async backend calls :func:`lockapi.spi.pause_point` between round trips
    too), ``max_permits``.
    """

    capabilities: frozenset[Capability] = frozenset()
    description: str = ""
    pause_points: frozenset[str] = frozenset()
    contended_pause_points: frozenset[str] = frozenset()
    max_permits: int = 2**31 - 1
    settles_cancelled_attempts: bool = False
    """Whether :meth:`try_acquire` without ``queue_ttl`` is cancel-safe by itself: an attempt interrupted
    by a cancellation completes (within ``config.timeout``, as any call) and returns its result, or
    raises a :class:`LockError`; it raises :class:`asyncio.CancelledError` only where nothing can have
    been granted (before its request was sent, or after a failed one). Core then runs it in the
    caller's task, gives back a grant whose caller was cancelled meanwhile, and re-raises the caller's
    cancellation (its count, ``Task.cancelling()``, grew during the attempt). False (the default): core
    runs each attempt in a task of its own, which a cancellation of the caller does not reach."""

    def __init__(self, config: BackendConfig) -> None:
        self.config = config

    @property
    def sync_backend(self) -> Backend | None:
        """The sync backend this one adapts, if it is an adapter (for tools built on the sync SPI)."""
        return None

    # -- locks -------------------------------------------------------------------------------------
    @abc.abstractmethod
    async def try_acquire(self, name: str, holder: str, ttl: float, *, queue_ttl: float | None = None) -> Attempt:
        """See :meth:`lockapi.spi.Backend.try_acquire`."""

    @abc.abstractmethod
    async def release(self, name: str, holder: str, token: int) -> bool:
        """See :meth:`lockapi.spi.Backend.release`."""

    @abc.abstractmethod
    async def extend(self, name: str, holder: str, token: int, ttl: float) -> bool:
        """See :meth:`lockapi.spi.Backend.extend`."""

    @abc.abstractmethod
    async def inspect(self, name: str) -> LockInfo | None:
        """See :meth:`lockapi.spi.Backend.inspect`."""

    async def holds(self, name: str, holder: str, token: int) -> bool:
        """See :meth:`lockapi.spi.Backend.holds`."""
        info = await self.inspect(name)
        return info is not None and info.holder == holder and info.token == token

    async def cancel_wait(self, name: str, holder: str) -> None:  # noqa: B027 - optional hook
        """See :meth:`lockapi.spi.Backend.cancel_wait`."""

    async def try_acquire_many(
        self, names: Sequence[str], holder: str, ttl: float, *, skip_done: bool = False
    ) -> dict[str, int]:
        """See :meth:`lockapi.spi.Backend.try_acquire_many`."""
        granted: dict[str, int] = {}
        try:
            for name in names:
                attempt = await self.try_acquire(name, holder, ttl)
                if attempt.token is not None:
                    granted[name] = attempt.token
            if skip_done and granted:
                for name in await self.done(list(granted)):
                    await self.release(name, holder, granted.pop(name))
        except BaseException:
            for name, token in granted.items():
                with contextlib.suppress(LockError):
                    await asyncio.shield(self.release(name, holder, token))
            raise
        return granted

    # -- semaphores --------------------------------------------------------------------------------
    @abc.abstractmethod
    async def try_acquire_permit(self, name: str, permits: int, holder: str, ttl: float) -> Attempt:
        """See :meth:`lockapi.spi.Backend.try_acquire_permit`."""

    @abc.abstractmethod
    async def release_permit(self, name: str, holder: str, token: int) -> bool:
        """See :meth:`lockapi.spi.Backend.release_permit`."""

    @abc.abstractmethod
    async def extend_permit(self, name: str, holder: str, token: int, ttl: float) -> bool:
        """See :meth:`lockapi.spi.Backend.extend_permit`."""

    @abc.abstractmethod
    async def holds_permit(self, name: str, holder: str, token: int) -> bool:
        """See :meth:`lockapi.spi.Backend.holds_permit`."""

    # -- done markers ------------------------------------------------------------------------------
    @abc.abstractmethod
    async def mark_done(self, name: str, ttl: float) -> None:
        """See :meth:`lockapi.spi.Backend.mark_done`."""

    @abc.abstractmethod
    async def done(self, names: Sequence[str]) -> set[str]:
        """See :meth:`lockapi.spi.Backend.done`."""

    # -- administration ----------------------------------------------------------------------------
    async def set_fence_floor(self, name: str, token: int, *, semaphore: bool = False) -> None:
        """See :meth:`lockapi.spi.Backend.set_fence_floor`."""
        raise UnsupportedFeature(f"{type(self).__name__} cannot move fencing counters")

    async def force_release(self, name: str) -> bool:
        """See :meth:`lockapi.spi.Backend.force_release`."""
        raise UnsupportedFeature(f"{type(self).__name__} cannot force-release locks")

    # -- waiting -----------------------------------------------------------------------------------
    def watch(
        self, name: str, wake: Wake, *, semaphore: bool = False, holder: str | None = None
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """See :meth:`lockapi.spi.Backend.watch`: the subscription is in effect once ``__aenter__``
        returns. ``wake`` may be called from any thread (core makes it safe for the loop)."""
        return contextlib.nullcontext()

    # -- lifecycle ---------------------------------------------------------------------------------
    async def ping(self) -> None:
        """See :meth:`lockapi.spi.Backend.ping`."""
        await self.inspect("lockapi:ping")

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release connections and background tasks. Idempotent."""


def _delegate(method: str) -> Any:
    async def call(self: SyncBackendAdapter, *args: Any, **kwargs: Any) -> Any:
        return await self._call(getattr(self._sync, method), *args, **kwargs)

    call.__name__ = method
    call.__doc__ = f"Runs :meth:`lockapi.spi.Backend.{method}` of the adapted backend."
    return call


class SyncBackendAdapter(AsyncBackend):
    """Serves a sync :class:`lockapi.spi.Backend` to asyncio code.

    Each call runs on a thread pool of at most ``async_threads`` threads (an option of
    :func:`lockapi.aio.connect`, default 8) per backend, so a slow store occupies a bounded number of
    threads; waiters occupy none (they wait on the loop). A backend whose calls never block
    (``inline = True``, e.g. the in-memory one) runs them directly on the loop. Wake-ups from the sync
    backend's ``watch`` (any thread) are handed to the loop thread-safely.
    """

    inline: ClassVar[bool] = False
    """True when the sync backend's calls never block on I/O: they then run on the event loop."""
    sync_class: ClassVar[type[Backend] | None] = None
    """For an adapter registered as an async entry point: the sync backend class it constructs."""

    def __init__(self, config: BackendConfig, sync_class: type[Backend] | None = None) -> None:
        super().__init__(config)
        threads = config.options.int("async_threads", 8, minimum=1)
        cls = sync_class or self.sync_class
        if cls is None:
            raise TypeError(f"{type(self).__name__} needs the sync backend class it adapts")
        self._sync = cls(config)
        self.capabilities = self._sync.capabilities
        self.description = self._sync.description
        self.pause_points = self._sync.pause_points
        self.contended_pause_points = self._sync.contended_pause_points
        self.max_permits = self._sync.max_permits
        self._pool = None if self.inline else ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix=f"lockapi-{config.scheme}")

    @property
    def sync_backend(self) -> Backend:
        return self._sync

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._pool is None:
            return fn(*args, **kwargs)
        context = contextvars.copy_context()  # the caller's context variables reach the thread
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(context.run, fn, *args, **kwargs))

    try_acquire = _delegate("try_acquire")
    release = _delegate("release")
    extend = _delegate("extend")
    inspect = _delegate("inspect")
    holds = _delegate("holds")
    cancel_wait = _delegate("cancel_wait")
    try_acquire_many = _delegate("try_acquire_many")
    try_acquire_permit = _delegate("try_acquire_permit")
    release_permit = _delegate("release_permit")
    extend_permit = _delegate("extend_permit")
    holds_permit = _delegate("holds_permit")
    mark_done = _delegate("mark_done")
    done = _delegate("done")
    set_fence_floor = _delegate("set_fence_floor")
    force_release = _delegate("force_release")
    ping = _delegate("ping")

    @contextlib.asynccontextmanager
    async def _watching(self, name: str, wake: Wake, semaphore: bool, holder: str | None) -> AsyncIterator[None]:
        watch = self._sync.watch(name, wake, semaphore=semaphore, holder=holder)
        await self._call(watch.__enter__)
        try:
            yield
        finally:
            await asyncio.shield(self._call(watch.__exit__, None, None, None))

    def watch(
        self, name: str, wake: Wake, *, semaphore: bool = False, holder: str | None = None
    ) -> contextlib.AbstractAsyncContextManager[None]:
        if Capability.PUSH_WAKEUP not in self.capabilities:
            return contextlib.nullcontext()
        return self._watching(name, wake, semaphore, holder)

    async def aclose(self) -> None:
        await self._call(self._sync.close)
        if self._pool is not None:
            self._pool.shutdown(wait=False)
