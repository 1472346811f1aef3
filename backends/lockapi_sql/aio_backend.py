"""The SQL backend for :mod:`lockapi.aio`, natively on the drivers' asyncio connections.

It runs the same plans as :class:`lockapi_sql.SQLBackend` (:mod:`lockapi_sql.plans`: the statements of
:mod:`lockapi_sql.statements`, the same results, errors and pause points) from the same configuration
(the sync backend of the scheme is built to parse it; it opens nothing); only the I/O differs: psycopg's
``AsyncConnection`` on PostgreSQL, aiomysql on MariaDB/MySQL (:mod:`lockapi_sql.aio_connections`), and on
PostgreSQL one LISTEN connection read by a task for wake-ups (:mod:`lockapi_sql.aio_listener`). No thread
serves a lock operation or a waiter; MariaDB's wake-ups come from the sync backend's server-side wait
(:mod:`lockapi_sql.waitloop`: two threads per backend, whatever the number of waiters, which wake tasks
through their thread-safe ``wake``). The one exception is creating the tables (once, on first use, unless
``create_schema`` is off), which runs the sync backend's DDL on a thread within the ``timeout``.

SQLite has no class here: its statements take microseconds on a local file and its only asyncio driver
(aiosqlite) runs them on a thread per connection anyway, so SQLite is served by
:class:`lockapi.aio.spi.SyncBackendAdapter` on a bounded pool (docs/backends/sql.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any, ClassVar, TypeVar

from lockapi.aio.spi import AsyncBackend, drive_async
from lockapi.spi import Attempt, BackendConfig, BackendUnavailable, Capability, LockInfo, Wake
from lockapi_sql.aio_connections import AsyncConnections
from lockapi_sql.backend import MariaDBBackend, PostgresBackend, SQLBackend, lock_info
from lockapi_sql.dialects import PostgreSQL
from lockapi_sql.plans import First, Plan, Plans
from lockapi_sql.schema import LOCK, SEMAPHORE, key_of
from lockapi_sql.statements import payload

T = TypeVar("T")


class AsyncSQLBackend(AsyncBackend):
    """Lease rows in PostgreSQL or MariaDB/MySQL for asyncio code; see the module. Options as
    :class:`lockapi_sql.SQLBackend`'s (``pool_size``/``max_overflow`` size this backend's asyncio pool)."""

    sync_type: ClassVar[type[SQLBackend]] = SQLBackend

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        config.options.int("async_threads", 8, minimum=1)  # lockapi.aio's option for adapted backends: no pool here
        self._sync = sync = self.sync_type(config)  # parses and checks everything; opens nothing
        self.dialect = sync.dialect
        if self.dialect.async_driver is None:
            raise BackendUnavailable(f"{type(self).__name__} has no asyncio driver for {config.scheme}")
        self.description = type(self).description or sync.description
        self.capabilities = sync.capabilities - {Capability.ITER_DONE}  # iter_done is not in the async SPI
        self.pause_points = sync.pause_points
        self.contended_pause_points = sync.contended_pause_points
        self.plans = Plans(sync.dialect, sync.tables, sync.sql)
        # PostgreSQL (psycopg) can finish a cancelled statement (dialect.async_settle): its plain attempt
        # settles, so core runs it without a task of its own
        self.settles_cancelled_attempts = self.dialect.async_settles
        self.connections = AsyncConnections(sync.dialect, size=sync.pool_size, overflow=sync.max_overflow,
                                            timeout=config.timeout, where=config.redacted_url)
        self._listener = None
        if Capability.PUSH_WAKEUP in sync.capabilities and isinstance(self.dialect, PostgreSQL):
            from lockapi_sql.aio_listener import AsyncListener

            dialect = self.dialect
            params = {**dialect.connect_params(config.timeout), "autocommit": True}

            async def listen_connection() -> Any:
                import psycopg

                return await psycopg.AsyncConnection.connect(**params)

            self._listener = AsyncListener(listen_connection, sync.tables.notify_channel, timeout=config.timeout)
        self._schema_lock: asyncio.Lock | None = None
        self._schema_ready = sync.schema_ready
        self._timeout, self._where = config.timeout, config.redacted_url

    # -- plumbing ---------------------------------------------------------------------------------------
    async def ensure_schema(self) -> None:
        """Create the tables if they are missing (the sync backend's DDL, on a thread, once), or raise
        :class:`BackendUnavailable` within the ``timeout``, also while the loop's default executor is
        busy with other work (the step's thread then ends on its own timeouts)."""
        if self._schema_ready:
            return
        if self._schema_lock is None:
            self._schema_lock = asyncio.Lock()
        since = self._sync.schema_tries  # callers queued behind a failing attempt share its failure
        try:
            async with asyncio.timeout(self._timeout), self._schema_lock:
                if not self._schema_ready:
                    await asyncio.to_thread(functools.partial(self._sync.ensure_schema, waited_since=since))
                    self._schema_ready = self._sync.schema_ready  # create_schema off and no tables: look again
        except TimeoutError:
            raise BackendUnavailable(f"{self._where}: no answer within the timeout ({self._timeout:g} s) "
                                     f"while checking lockapi's tables") from None

    def _ready(self, run: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> Coroutine[Any, Any, T]:
        """``run(*args)`` (one of the pool's calls), once the tables exist. This and the three below are
        plain functions that return the pool's coroutine, as are the hot operations: a layer that only
        forwards adds no coroutine frame for each reply to pass through."""
        if self._schema_ready:
            return run(*args)
        return self._after_schema(run, *args)

    async def _after_schema(self, run: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        await self.ensure_schema()
        return await run(*args)

    def _call(self, plan: Callable[..., Plan[T]], *args: Any) -> Coroutine[Any, Any, T]:
        """Run ``plan(*args)``: :meth:`AsyncConnections.call`."""
        return self._ready(self.connections.call, plan, *args)

    def _settled(self, first: Callable[..., First[T]], *args: Any) -> Coroutine[Any, Any, T]:
        """:meth:`_direct`, settling (:meth:`AsyncConnections.settled`)."""
        return self._ready(self.connections.settled, first, *args)

    def _direct(self, first: Callable[..., First[T]], *args: Any) -> Coroutine[Any, Any, T]:
        """Run a direct plan (the hot single-statement operations): :meth:`AsyncConnections.direct`."""
        return self._ready(self.connections.direct, first, *args)

    async def _call_step(self, call: tuple[Any, ...]) -> Any:
        return await self._call(*call)

    # -- locks ------------------------------------------------------------------------------------------
    def try_acquire(self, name: str, holder: str, ttl: float, *,
                    queue_ttl: float | None = None) -> Coroutine[Any, Any, Attempt]:
        if queue_ttl is None:
            if self.settles_cancelled_attempts:
                return self._settled(self.plans.acquire_first, name, holder, ttl)
            return self._direct(self.plans.acquire_first, name, holder, ttl)
        return drive_async(self.plans.acquire_fair(name, holder, ttl, queue_ttl), self._call_step)

    async def cancel_wait(self, name: str, holder: str) -> None:
        await self._call(self.plans.cancel_wait, name, holder)

    def release(self, name: str, holder: str, token: int) -> Coroutine[Any, Any, bool]:
        return self._direct(self.plans.release_first, name, holder, token)

    def extend(self, name: str, holder: str, token: int, ttl: float) -> Coroutine[Any, Any, bool]:
        return self._direct(self.plans.extend_first, name, holder, token, ttl)

    async def inspect(self, name: str) -> LockInfo | None:
        return lock_info(name, await self._call(self.plans.inspect, name))

    def holds(self, name: str, holder: str, token: int) -> Coroutine[Any, Any, bool]:
        return self._direct(self.plans.holds_first, name, holder, token)

    async def try_acquire_many(
        self, names: Sequence[str], holder: str, ttl: float, *, skip_done: bool = False
    ) -> dict[str, int]:
        if not names:
            return {}
        return await self._call(self.plans.acquire_many, names, holder, ttl, skip_done)

    # -- semaphores -------------------------------------------------------------------------------------
    async def try_acquire_permit(self, name: str, permits: int, holder: str, ttl: float) -> Attempt:
        return await self._call(self.plans.acquire_permit, name, permits, holder, ttl)

    def release_permit(self, name: str, holder: str, token: int) -> Coroutine[Any, Any, bool]:
        return self._direct(self.plans.release_first, name, holder, token, True)

    def extend_permit(self, name: str, holder: str, token: int, ttl: float) -> Coroutine[Any, Any, bool]:
        return self._direct(self.plans.extend_first, name, holder, token, ttl, True)

    def holds_permit(self, name: str, holder: str, token: int) -> Coroutine[Any, Any, bool]:
        return self._direct(self.plans.holds_first, name, holder, token, True)

    # -- done markers -----------------------------------------------------------------------------------
    async def mark_done(self, name: str, ttl: float) -> None:
        await self._call(self.plans.mark_done, name, ttl)

    async def done(self, names: Sequence[str]) -> set[str]:
        if not names:
            return set()
        return await self._call(self.plans.done, names)

    # -- administration ---------------------------------------------------------------------------------
    async def set_fence_floor(self, name: str, token: int, *, semaphore: bool = False) -> None:
        await self._call(self.plans.set_fence_floor, name, token, semaphore)

    async def force_release(self, name: str) -> bool:
        return await self._call(self.plans.force_release, name)

    # -- waiting and lifecycle --------------------------------------------------------------------------
    def watch(
        self, name: str, wake: Wake, *, semaphore: bool = False, holder: str | None = None
    ) -> contextlib.AbstractAsyncContextManager[None]:
        kind = SEMAPHORE if semaphore else LOCK
        if self._sync.wait_loop is not None:  # its thread wakes asyncio waiters thread-safely (their wake)
            return self._sync.wait_loop.watch_async(kind, key_of(name), wake, holder)
        if self._listener is None:
            return contextlib.nullcontext()
        watch = self._listener.watch(payload(kind, key_of(name)), wake, holder)
        return watch if semaphore else self._marked(watch, name, wake)

    @contextlib.asynccontextmanager
    async def _marked(self, watch: contextlib.AbstractAsyncContextManager[None], name: str,
                      wake: Wake) -> AsyncIterator[None]:
        """As :meth:`lockapi_sql.SQLBackend._marked`: the subscription, then the row's mark (one
        statement on this backend's asyncio pool), waking at once if the lock may be free already."""
        async with watch:
            with self.plans.watching(name):
                try:
                    free = await self._call(self.plans.mark, name)
                except BackendUnavailable:
                    free = True
                if free:
                    wake()
                yield

    async def ping(self) -> None:
        await self._call(self.plans.ping)

    async def aclose(self) -> None:
        if self._listener is not None:
            await self._listener.aclose()
        self.connections.close()
        # its engine (DDL), and MariaDB's wait threads, joined off the loop (close() cuts their sockets:
        # at once, unless one is connecting); it opened no lock connection
        if self._sync.wait_loop is not None:
            await asyncio.to_thread(self._sync.close)
        else:
            self._sync.close()


class AsyncPostgresBackend(AsyncSQLBackend):
    """PostgreSQL on psycopg's AsyncConnection; LISTEN/NOTIFY wake-ups read by a task."""

    sync_type = PostgresBackend
    description = "PostgreSQL lease rows on psycopg's AsyncConnection (LISTEN/NOTIFY wake-ups read by a task)"
    capabilities = PostgresBackend.capabilities - {Capability.ITER_DONE}


class AsyncMariaDBBackend(AsyncSQLBackend):
    """MariaDB and MySQL on aiomysql; on MariaDB wake-ups from a server-side wait (two threads)."""

    sync_type = MariaDBBackend
    description = "MariaDB/MySQL lease rows on aiomysql (server-side wait wake-ups on MariaDB)"
    capabilities = MariaDBBackend.capabilities - {Capability.ITER_DONE}


__all__ = ["AsyncMariaDBBackend", "AsyncPostgresBackend", "AsyncSQLBackend"]
