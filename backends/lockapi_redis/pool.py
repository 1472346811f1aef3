"""The command connection pool: redis-py's pool with a bounded wait and a short hand-out path.

A connection is handed out in a few microseconds: the last idle one (LIFO), checked for a stale reply
or a server-side close with one ``poll``, and reconnected if needed. When ``max_connections`` are all in
use, a caller waits up to ``wait_timeout`` seconds for one to come back, then gets a ``ConnectionError``
that says which option to raise. The pool keeps redis-py's fork safety (a child process starts with no
connections) and, on sentinel, hands back a connection to a former master disconnected, so its next
use reconnects to the current master. redis-py's per-connection metrics hooks are not called.

Idle connections: at most ``max_idle`` stay open in the pool (one returned beyond that is closed), and
:meth:`close_idle` closes those unused for a given time (called by :mod:`lockapi_redis.idle`). The idle
list is LIFO, so the connections at its bottom are the ones unused longest.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from redis import ConnectionPool
from redis.connection import AbstractConnection
from redis.exceptions import ConnectionError, TimeoutError
from redis.sentinel import SentinelConnectionPool


def unused_prefix(idle: Sequence[object], cutoff: float) -> int:
    """How many connections at the bottom of a LIFO idle list were given back at or before ``cutoff``
    (``time.monotonic()``): the ones unused longest come first. Shared with :mod:`lockapi_redis.aio_pool`."""
    stale = 0
    while stale < len(idle) and getattr(idle[stale], "lockapi_idle_since", 0.0) <= cutoff:
        stale += 1
    return stale


class _Bounded:
    """Mixin over a redis-py ``ConnectionPool`` class; reuses its bookkeeping (idle list, in-use set,
    created count, lock, pid)."""

    _lock: Any
    _available_connections: list[AbstractConnection]
    _in_use_connections: set[AbstractConnection]
    _created_connections: int
    max_connections: int
    _owner_check = False
    """Whether ``owns_connection`` can say no for a live connection (sentinel: it points elsewhere)."""

    def __init__(self, *args: Any, wait_timeout: float, max_idle: int, **kwargs: Any) -> None:
        self.wait_timeout = wait_timeout
        self.max_idle = max_idle
        super().__init__(*args, **kwargs)

    def reset(self) -> None:
        super().reset()  # type: ignore[misc]
        self._freed = threading.Condition(self._lock)

    def get_connection(self, command_name: object = None, *keys: object, **options: object) -> AbstractConnection:
        self._checkpid()  # type: ignore[attr-defined]
        with self._lock:
            conn = self._take()
            self._in_use_connections.add(conn)
        try:
            if conn._sock is None:  # (is_connected is redis-py >= 8 only)
                conn.connect()
            else:
                try:
                    stale = conn.can_read()  # unread data, or the server closed it while idle
                except (ConnectionError, TimeoutError, OSError):
                    stale = True
                if stale:
                    conn.disconnect()
                    conn.connect()
        except BaseException:
            self.release(conn)
            raise
        return conn

    def _take(self) -> AbstractConnection:
        deadline = None
        while True:
            if self._available_connections:
                return self._available_connections.pop()
            if self._created_connections < self.max_connections:
                conn: AbstractConnection = self.make_connection()  # type: ignore[attr-defined]
                return conn
            now = time.monotonic()
            if deadline is None:
                deadline = now + self.wait_timeout
            if now >= deadline:
                raise ConnectionError(
                    f"no free connection within {self.wait_timeout:g}s: all max_connections="
                    f"{self.max_connections} are in use (raise max_connections, within what the server allows)")
            self._freed.wait(deadline - now)

    def release(self, connection: AbstractConnection) -> None:
        self._checkpid()  # type: ignore[attr-defined]
        with self._lock:
            try:
                self._in_use_connections.remove(connection)
            except KeyError:  # handed out before a fork, or released twice
                return
            if self._owner_check and not self.owns_connection(connection):  # type: ignore[attr-defined]
                connection.disconnect()
            if len(self._available_connections) >= self.max_idle:
                self._created_connections -= 1  # closed, not kept: a waiter may open a new one
                connection.disconnect()
            else:
                connection.lockapi_idle_since = time.monotonic()  # type: ignore[attr-defined]
                self._available_connections.append(connection)
            self._freed.notify()

    def close_idle(self, unused_for: float) -> int:
        """Close the idle connections that nobody used for ``unused_for`` seconds; return how many."""
        self._checkpid()  # type: ignore[attr-defined]
        cutoff = time.monotonic() - unused_for
        with self._lock:
            idle = self._available_connections
            stale = unused_prefix(idle, cutoff)
            if not stale:
                return 0
            closing, idle[:stale] = idle[:stale], []
            self._created_connections -= stale
            self._freed.notify(stale)
        for conn in closing:
            conn.disconnect()
        return stale


# redis-py annotates its pools with its concrete Connection class; these hand out any AbstractConnection.
class BoundedPool(_Bounded, ConnectionPool):  # type: ignore[misc]
    """For one server (standalone, TLS)."""


class BoundedSentinelPool(_Bounded, SentinelConnectionPool):  # type: ignore[misc]
    """For the master of a sentinel service; connections find the master through the sentinels."""

    _owner_check = True
