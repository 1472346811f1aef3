"""A blocking view of the asyncio API, so that one conformance suite checks both APIs.

:func:`blocking_manager` opens an :class:`lockapi.aio.AsyncLockManager` on its own event loop thread and
returns an object with the interface of :class:`lockapi.LockManager`: every call runs as a task on that
loop and the calling thread waits for it. Leases, semaphores, job managers and the backend (the async
SPI, seen as the sync one) are wrapped the same way. The caller's context variables travel with each
call, so a pause armed for a thread (:mod:`lockapi.testing.pauses`) also stops the work that thread
started on the loop.

For tests only: an application uses :mod:`lockapi.aio` directly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import inspect
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterator
from types import TracebackType
from typing import Any, TypeVar

import lockapi.aio
from lockapi.aio.jobs import AsyncSlot
from lockapi.aio.lease import AsyncLease
from lockapi.observers import Observer
from lockapi.testing.pauses import ACTOR

T = TypeVar("T")


class _Loop:
    """An event loop running in a daemon thread; :meth:`run` executes a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="lockapi-blocking-loop", daemon=True)
        self._thread.start()

    def run(self, make: Callable[[], Awaitable[T]]) -> T:
        context = contextvars.copy_context()
        context.run(ACTOR.set, ACTOR.get(threading.current_thread()))
        result: concurrent.futures.Future[T] = concurrent.futures.Future()

        async def call() -> T:
            return await make()

        def start() -> None:
            task = self.loop.create_task(call(), context=context)
            task.add_done_callback(lambda t: _settle(t, result))

        self.loop.call_soon_threadsafe(start)
        return result.result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.loop.close()


def _settle(task: asyncio.Task[T], result: concurrent.futures.Future[T]) -> None:
    if task.cancelled():
        result.cancel()
    elif (error := task.exception()) is not None:
        result.set_exception(error)
    else:
        result.set_result(task.result())


class BlockingLease:
    """An :class:`AsyncLease` seen as a :class:`lockapi.Lease`."""

    def __init__(self, loop: _Loop, lease: AsyncLease) -> None:
        self._loop = loop
        self.inner = lease

    name = property(lambda self: self.inner.name)
    holder = property(lambda self: self.inner.holder)
    token = property(lambda self: self.inner.token)
    ttl = property(lambda self: self.inner.ttl)
    lost = property(lambda self: self.inner.lost)

    def __repr__(self) -> str:
        return f"<blocking {self.inner!r}>"

    def release(self) -> bool:
        return self._loop.run(self.inner.release)

    def extend(self, ttl: float | None = None) -> bool:
        return self._loop.run(lambda: self.inner.extend(ttl))

    def is_held(self) -> bool:
        return self._loop.run(self.inner.is_held)

    def __enter__(self) -> BlockingLease:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._loop.run(lambda: self.inner.__aexit__(exc_type, exc, tb))


class _Wrapped:
    """Any async object seen as a blocking one: coroutine methods block, results are wrapped."""

    def __init__(self, loop: _Loop, inner: Any, leases: _Leases) -> None:
        self._loop = loop
        self._inner = inner
        self._leases = leases

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._inner, attr)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            async def run() -> Any:
                result = value(*args, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
                return result

            return self._leases.wrap(self._loop.run(run))

        return call


class _BlockingBackend(_Wrapped):
    """The async SPI seen as the sync one (``watch`` becomes a plain context manager)."""

    @contextlib.contextmanager
    def watch(self, name: str, wake: Any, *, semaphore: bool = False, holder: str | None = None) -> Iterator[None]:
        watching = self._inner.watch(name, wake, semaphore=semaphore, holder=holder)
        self._loop.run(watching.__aenter__)
        try:
            yield
        finally:
            self._loop.run(lambda: watching.__aexit__(None, None, None))

    def close(self) -> None:
        self._loop.run(self._inner.aclose)


class _Leases:
    """One :class:`BlockingLease` per async lease, so identity holds across calls and callbacks."""

    def __init__(self, loop: _Loop) -> None:
        self._loop = loop
        self._by_lease: weakref.WeakKeyDictionary[AsyncLease, BlockingLease] = weakref.WeakKeyDictionary()

    def of(self, lease: AsyncLease) -> BlockingLease:
        wrapped = self._by_lease.get(lease)
        if wrapped is None:
            wrapped = self._by_lease[lease] = BlockingLease(self._loop, lease)
        return wrapped

    def wrap(self, result: Any) -> Any:
        if isinstance(result, AsyncLease):
            return self.of(result)
        if isinstance(result, AsyncSlot):
            return _Wrapped(self._loop, result, self)
        if isinstance(result, dict) and result and all(isinstance(v, AsyncLease) for v in result.values()):
            return {k: self.of(v) for k, v in result.items()}
        return result


class BlockingManager:
    """An :class:`lockapi.aio.AsyncLockManager` on its own loop, with the interface of LockManager."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self._loop = _Loop()
        self._leases = _Leases(self._loop)
        try:
            self.inner: lockapi.aio.AsyncLockManager = self._loop.run(lambda: _connect(url, options))
        except BaseException:
            self._loop.stop()
            raise
        self.url = self.inner.url
        self.backend = _BlockingBackend(self._loop, self.inner.backend, self._leases)

    @property
    def capabilities(self) -> frozenset[lockapi.Capability]:
        return self.inner.capabilities

    def add_listener(self, listener: Any) -> None:
        self.inner.add_listener(listener)

    def remove_listener(self, listener: Any) -> None:
        self.inner.remove_listener(listener)

    def add_observer(self, observer: Observer) -> None:
        """Install ``observer`` on the async manager (its hooks run on the loop thread)."""
        self.inner.add_observer(observer)

    def remove_observer(self, observer: Observer) -> None:
        self.inner.remove_observer(observer)

    def _on_lost(self, on_lost: Any) -> Any:
        if not callable(on_lost):
            return on_lost  # let the manager reject it
        return lambda lease: on_lost(self._leases.of(lease))

    def acquire(self, name: Any, *, on_lost: Any = None, **kwargs: Any) -> BlockingLease:
        cb = self._on_lost(on_lost)
        return self._leases.of(self._loop.run(lambda: _await(self.inner.acquire(name, on_lost=cb, **kwargs))))

    def try_acquire(self, name: Any, *, on_lost: Any = None, **kwargs: Any) -> BlockingLease | None:
        cb = self._on_lost(on_lost)
        lease = self._loop.run(lambda: self.inner.try_acquire(name, on_lost=cb, **kwargs))
        return None if lease is None else self._leases.of(lease)

    def acquire_many(self, names: Any, **kwargs: Any) -> dict[str, BlockingLease]:
        leases = self._loop.run(lambda: self.inner.acquire_many(names, **kwargs))
        return {k: self._leases.of(v) for k, v in leases.items()}

    def inspect(self, name: Any) -> lockapi.LockInfo | None:
        return self._loop.run(lambda: self.inner.inspect(name))

    def semaphore(self, name: Any, permits: Any) -> Any:
        return _Wrapped(self._loop, self.inner.semaphore(name, permits), self._leases)

    def jobs(self) -> Any:
        return _Wrapped(self._loop, self.inner.jobs(), self._leases)

    def job_semaphore(self) -> Any:
        return _Wrapped(self._loop, self.inner.job_semaphore(), self._leases)

    def ping(self) -> None:
        self._loop.run(self.inner.ping)

    def close(self) -> None:
        try:
            self._loop.run(self.inner.aclose)
        finally:
            self._loop.stop()

    def __enter__(self) -> BlockingManager:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


async def _connect(url: str, options: dict[str, Any]) -> lockapi.aio.AsyncLockManager:
    return lockapi.aio.connect(url, **options)


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


def blocking_manager(url: str, **options: Any) -> BlockingManager:
    """Open :mod:`lockapi.aio` on ``url`` behind the blocking interface of :class:`lockapi.LockManager`."""
    return BlockingManager(url, options)
