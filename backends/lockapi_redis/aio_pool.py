"""The asyncio command connection pool: the policy of :mod:`lockapi_redis.pool`, for redis.asyncio.

A connection is handed out from the last idle one (LIFO) without a lock (one event loop), checked for
a server-side close (the stream saw EOF) and reconnected if needed. When ``max_connections`` are all in
use, a caller waits up to ``wait_timeout`` seconds (FIFO) for one to come back, then gets a
``ConnectionError`` that says which option to raise. At most ``max_idle`` connections stay open idle (one
given back beyond that is closed) and :meth:`close_idle` closes those unused for a given time. On
sentinel, a connection to a former master is closed when given back, so its next use reconnects to the
current master. redis.asyncio's own pools take a lock and record metrics on every hand-out; this one
does neither. Use a pool from one event loop; asyncio objects are not fork-safe (a child process makes
its own backend).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from typing import Any

from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ConnectionError

from .pool import unused_prefix


def _stale(conn: AbstractConnection) -> bool:
    """True if the server closed ``conn`` while it was idle (its stream saw EOF or an error)."""
    reader = conn._reader
    return reader is None or reader.at_eof() or reader.exception() is not None


def close_now(conn: AbstractConnection) -> None:
    """Close ``conn`` without waiting (its next use reconnects)."""
    conn._close()  # redis.asyncio's own non-awaiting close


class _AsyncBounded:
    """Mixin over a redis.asyncio pool class, reusing only its connection making (``make_connection``,
    ``connection_kwargs``, the sentinel master lookup); hand-out and bookkeeping are its own."""

    max_connections: int
    _owner_check = False

    def __init__(self, *args: Any, wait_timeout: float, max_idle: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wait_timeout = wait_timeout
        self.max_idle = max_idle
        self._idle: list[AbstractConnection] = []
        self._open: set[AbstractConnection] = set()
        self._waiters: collections.deque[asyncio.Future[AbstractConnection]] = collections.deque()

    def take_ready(self) -> AbstractConnection | None:
        """An idle connection that is ready to use, without awaiting anything (the common case); None
        when :meth:`take` must connect one or wait for one."""
        idle = self._idle
        if idle:
            conn = idle[-1]
            if conn.is_connected and not _stale(conn):
                return idle.pop()
        return None

    async def take(self) -> AbstractConnection:
        """A connected connection; give it back with :meth:`give`."""
        if self._idle:
            conn = self._idle.pop()
        elif len(self._open) < self.max_connections:
            conn = self.make_connection()  # type: ignore[attr-defined]
            self._open.add(conn)
        else:
            conn = await self._wait()
        try:
            if not conn.is_connected:
                await conn.connect()
            elif _stale(conn):
                await conn.disconnect(nowait=True)
                await conn.connect()
        except BaseException:
            self.give(conn)
            raise
        return conn

    async def _wait(self) -> AbstractConnection:
        waiter: asyncio.Future[AbstractConnection] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.wait_timeout):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():  # handed one just as we gave up: pass it on
                self.give(waiter.result())
            else:
                waiter.cancel()
            if isinstance(exc, TimeoutError):
                raise ConnectionError(
                    f"no free connection within {self.wait_timeout:g}s: all max_connections="
                    f"{self.max_connections} are in use (raise max_connections, within what the server allows)"
                ) from None
            raise
        finally:
            with contextlib.suppress(ValueError):  # handed a connection: give() took it off already
                self._waiters.remove(waiter)

    def give(self, conn: AbstractConnection) -> None:
        """Return a connection taken with :meth:`take` (to a waiting caller first)."""
        if conn not in self._open:  # closed by aclose() meanwhile
            close_now(conn)
            return
        if self._owner_check and not self._owns(conn):
            close_now(conn)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if len(self._idle) >= self.max_idle:
            self._open.discard(conn)  # closed, not kept
            close_now(conn)
        else:
            conn.lockapi_idle_since = time.monotonic()  # type: ignore[attr-defined]
            self._idle.append(conn)

    def _owns(self, conn: AbstractConnection) -> bool:
        return True

    def close_idle(self, unused_for: float) -> int:
        """Close the idle connections that nobody used for ``unused_for`` seconds; return how many."""
        stale = unused_prefix(self._idle, time.monotonic() - unused_for)
        closing, self._idle[:stale] = self._idle[:stale], []
        for conn in closing:
            self._open.discard(conn)
            close_now(conn)
        return stale

    @property
    def open_connections(self) -> int:
        """Connections made and not closed for good (in use or idle)."""
        return len(self._open)

    async def disconnect(self, inuse_connections: bool = True) -> None:
        """Close the idle connections (and, by default, the ones in use: their callers fail)."""
        closing = list(self._open) if inuse_connections else list(self._idle)
        self._idle.clear()
        if inuse_connections:
            self._open.clear()
        else:
            self._open.difference_update(closing)
        for conn in closing:
            close_now(conn)

    async def aclose(self) -> None:
        await self.disconnect()


class AsyncBoundedPool(_AsyncBounded, ConnectionPool):
    """For one server (standalone, TLS)."""


class AsyncBoundedSentinelPool(_AsyncBounded, SentinelConnectionPool):
    """For the master of a sentinel service; connections find the master through the sentinels."""

    _owner_check = True

    def _owns(self, conn: AbstractConnection) -> bool:
        master = self.master_address
        return master is None or master == (conn.host, conn.port)  # type: ignore[attr-defined]
