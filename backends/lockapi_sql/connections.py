"""The SQL backend's connections: a small pool of autocommit DBAPI connections, one deadline per call,
and the one place where driver errors become lockapi errors.

A call (:meth:`Connections.call`) gets a connection (pooled, or a new one connected within the time
left), runs a plan (:mod:`lockapi_sql.plans`) on it under the backend's ``timeout`` as one deadline (a
watchdog cuts a connection whose server stopped answering), and gives the connection back (dropped if
the call failed inside a transaction). It is retried, by running the plan again, while time is left
after a deadlock, a lock wait or a busy database, and once on a fresh connection when its connection
dies (a pooled one after a server restart, or one it had just opened): every request the backend sends
is idempotent, so a retry after a reply that was lost never doubles an effect. Those rules are
:class:`Retries`, which the asyncio pool (:mod:`lockapi_sql.aio_connections`) follows too. Driver
errors leave as :class:`BackendUnavailable` (or :class:`ConfigError` for wrong credentials or a missing
database), one line, the cause chained.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from lockapi.errors import BackendUnavailable, ConfigError
from lockapi_sql.dialects import CONFIG, DEAD, RETRY, DBAPIConnection, Dialect
from lockapi_sql.plans import ALL, BEGIN, COUNT, ONE, TOKEN, First, Plan, Step, Then
from lockapi_sql.watchdog import Watchdog

T = TypeVar("T")
_ABANDONED: list[DBAPIConnection] = []
"""Connections inherited from a parent process: never used, never closed (closing would end the
parent's session), kept referenced so the garbage collector does not close them either."""


def translate(where: str, exc: BaseException, kind: str | None = None) -> Exception:
    """The lockapi error for driver error ``exc`` of a call to ``where`` (the redacted URL): one line,
    where and what to do (both APIs)."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    detail = f"{type(exc).__name__}: {lines[0]}"
    if kind == CONFIG:
        return ConfigError(f"{where}: {detail} (check the URL's user, password and database)")
    return BackendUnavailable(f"{where}: {detail}")


AGAIN, FRESH, RAISE = "again", "fresh", "raise"
"""What a call does after a driver error (:meth:`Retries.after`): run the plan again (after a pause) on a
connection from the pool; run it again on a new connection (the failed one came from the pool: drop
the idle ones too, they are probably dead as well, e.g. after a server restart); raise the error."""


class Retries:
    """The retry rules of one call, shared by the sync and the asyncio pool; no I/O (the pools sleep,
    check connections in and out, and raise). Made on a call's first driver error (the hot path makes
    none); the call keeps it across its attempts.

    * A deadlock, a lock wait or a busy database (:data:`RETRY`) is retried after a jittered pause
      (:attr:`Dialect.retry_delay`, doubling) while the pause still ends before the deadline; the
      connection is kept unless the call failed inside a transaction (never rolled back on a connection
      whose caller gave up).
    * A dead connection (:data:`DEAD`) is retried once on a fresh connection, also when the dead one was
      fresh: it was open, so the server may have done the work and lost only the reply (every plan is
      idempotent: a retry finds the caller's own grant). A server that is really down fails the connect.
    * Nothing is retried once the deadline passed or the call's connection was cut for it.
    """

    __slots__ = ("_delay", "_fresh", "_longest", "deadline")

    def __init__(self, dialect: Dialect, deadline: float) -> None:
        self.deadline = deadline
        self._delay, self._longest = dialect.retry_delay
        self._fresh = True

    def pause(self, now: float) -> float | None:
        """Seconds to sleep before the next retry of a :data:`RETRY` error, or None: no time left."""
        if now + self._delay >= self.deadline:
            return None
        pause = self._delay * (1 + random.random())
        self._delay = min(self._delay * 2, self._longest)
        return pause

    def after(self, kind: str | None, now: float, *, cut: bool, in_transaction: bool) -> tuple[bool, str, float]:
        """After a driver error of ``kind`` (:meth:`Dialect.classify`) at ``now``: (keep the connection,
        :data:`AGAIN`/:data:`FRESH`/:data:`RAISE`, seconds to sleep first). ``cut``: the deadline cut the
        call's connection."""
        late = cut or now >= self.deadline
        if kind == RETRY and not late:
            pause = self.pause(now)
            return not in_transaction, RAISE if pause is None else AGAIN, pause or 0.0
        if kind == DEAD and self._fresh and not late:
            self._fresh = False
            return False, FRESH, 0.0
        return False, RAISE, 0.0


class Session:
    """One connection for the duration of one call: runs the steps of a plan (:mod:`lockapi_sql.plans`)."""

    __slots__ = ("_conn", "_dialect", "_returning", "in_transaction")

    def __init__(self, dialect: Dialect, conn: DBAPIConnection) -> None:
        self._dialect = dialect
        self._conn = conn
        self._returning = dialect.returning
        self.in_transaction = False

    def drive(self, plan: Plan[T]) -> T:
        """:func:`lockapi.spi.drive` with this session's steps (the same semantics, inlined: this is the
        hot path of every sync call)."""
        run = self.run
        try:
            step = plan.send(None)
            while True:
                try:
                    answer = run(step)
                except BaseException as exc:
                    step = plan.throw(exc)
                    continue
                step = plan.send(answer)
        except StopIteration as stop:
            result: T = stop.value
            return result

    def run(self, step: Step) -> Any:
        """The result of one step (see :mod:`lockapi_sql.plans` for each kind's)."""
        kind, statement, params = step
        if kind >= BEGIN:
            self._dialect.command(self._conn, statement)
            self.in_transaction = kind == BEGIN
            return None
        return read(kind, self._dialect.execute(self._conn, statement, params), self._returning)


def read(kind: int, cursor: Any, returning: bool) -> Any:
    """The result of a statement step of ``kind`` (see :mod:`lockapi_sql.plans`) from the cursor that ran
    it; ``returning``: the dialect's :attr:`~lockapi_sql.dialects.Dialect.returning`."""
    if kind == TOKEN:
        if returning:
            row = cursor.fetchone()
            return None if row is None else int(row[0])
        return int(cursor.lastrowid) if cursor.rowcount == 1 else None
    if kind == COUNT:
        return int(cursor.rowcount)
    if kind == ONE:
        rows = cursor.fetchall()  # to the end: no statement left open on the connection's cursor
        return rows[0] if rows else None
    if kind == ALL:
        return list(cursor.fetchall())
    return None


class Connections:
    """Up to ``size + overflow`` connections, ``size`` of them kept idle; thread-safe and fork-safe."""

    def __init__(self, dialect: Dialect, *, size: int, overflow: int, timeout: float, where: str) -> None:
        self._dialect = dialect
        self._size = size
        self._limit = size + overflow
        self._timeout = timeout
        self._where = where
        self._idle: list[DBAPIConnection] = []
        self._open = 0
        self._cond = threading.Condition()
        self._waiting = 0
        self._watchdog = Watchdog() if dialect.needs_watchdog else None
        _POOLS.add(self)

    def call(self, plan: Callable[..., Plan[T]], *args: Any) -> T:
        """Run ``plan(*args)`` on a connection within one ``timeout``; see the module docstring."""
        return self._call(time.monotonic() + self._timeout, plan, args)

    def direct(self, first: Callable[..., First[T]], *args: Any) -> T:
        """Run direct plan ``first(*args)`` (see :mod:`lockapi_sql.plans`): :meth:`call` of its
        :func:`~lockapi_sql.plans.unfold`, without a generator or a session for its one statement (the
        same retries and errors); a :class:`~lockapi_sql.plans.Then` goes on as a call within the same
        deadline."""
        deadline = time.monotonic() + self._timeout
        step, finish = first(*args)
        kind, statement, params = step
        dialect = self._dialect
        retries: Retries | None = None
        while True:
            try:
                conn, reused = self._idle.pop(), True  # the fast path: list.pop is atomic
            except IndexError:
                conn, reused = self._checkout(deadline)
            watchdog = self._watchdog
            try:
                if watchdog is None:
                    answer = read(kind, dialect.execute(conn, statement, params), dialect.returning)
                else:
                    watch = watchdog.watch(conn.lockapi_fileno, deadline)
                    try:
                        answer = read(kind, dialect.execute(conn, statement, params), dialect.returning)
                    finally:
                        watchdog.unwatch(watch)  # before a retry's pause: the connection may be pooled by then
            except BaseException as exc:
                retries = self._failed(exc, conn, reused, retries, deadline, in_transaction=False)
                continue
            if len(self._idle) < self._size and not self._waiting:
                self._idle.append(conn)  # the fast path back
            else:
                self._checkin(conn)
            result = finish(answer, step)
            if isinstance(result, Then):
                then: T = self._call(deadline, result.plan, result.args)
                return then
            return result

    def _call(self, deadline: float, plan: Callable[..., Plan[T]], args: tuple[Any, ...]) -> T:
        """:meth:`call` with its deadline (:meth:`direct` goes on with a call within its own); the same
        attempt loop as :meth:`direct`'s, with a session per attempt for the plan's steps."""
        retries: Retries | None = None
        while True:
            try:
                conn, reused = self._idle.pop(), True
            except IndexError:
                conn, reused = self._checkout(deadline)
            session = Session(self._dialect, conn)
            watchdog = self._watchdog
            try:
                if watchdog is None:
                    result = session.drive(plan(*args))
                else:
                    watch = watchdog.watch(conn.lockapi_fileno, deadline)
                    try:
                        result = session.drive(plan(*args))
                    finally:
                        watchdog.unwatch(watch)
            except BaseException as exc:
                retries = self._failed(exc, conn, reused, retries, deadline, in_transaction=session.in_transaction)
                continue
            if len(self._idle) < self._size and not self._waiting:
                self._idle.append(conn)
            else:
                self._checkin(conn)
            return result

    def _failed(self, exc: BaseException, conn: DBAPIConnection, reused: bool, retries: Retries | None,
                deadline: float, *, in_transaction: bool) -> Retries:
        """After an attempt of a call failed with ``exc`` on ``conn`` (``reused``: from the pool): keep
        or drop the connection, then raise, or return the call's :class:`Retries` to attempt it again
        (after the pause, or on a fresh connection)."""
        if not self._dialect.is_driver_error(exc):
            # an error raised by the plan itself: the connection is fine unless a transaction is open
            (self._discard if in_transaction else self._checkin)(conn)
            raise exc
        kind = self._dialect.classify(exc)
        if retries is None:
            retries = Retries(self._dialect, deadline)
        keep, then, pause = retries.after(kind, time.monotonic(), cut=False, in_transaction=in_transaction)
        (self._checkin if keep else self._discard)(conn)
        if then == AGAIN:
            time.sleep(pause)
            return retries
        if then == FRESH:
            if reused:
                self._drain()
            return retries
        raise self.translate(exc, kind) from exc

    def translate(self, exc: BaseException, kind: str | None = None) -> Exception:
        """The lockapi error for driver error ``exc``: one line, where and what to do."""
        return translate(self._where, exc, kind)

    def close(self) -> None:
        """Close the idle connections and stop the watchdog; later calls open new ones. Idempotent."""
        self._drain()
        if self._watchdog is not None:
            self._watchdog.close()

    # -- the pool ---------------------------------------------------------------------------------------
    def _after_fork(self) -> None:
        """In a forked child: the parent's connections are not ours."""
        _ABANDONED.extend(self._idle)
        self._idle, self._open, self._waiting = [], 0, 0
        self._cond = threading.Condition()
        if self._watchdog is not None:
            self._watchdog.after_fork()

    def _checkout(self, deadline: float) -> tuple[DBAPIConnection, bool]:
        with self._cond:
            while not self._idle and self._open >= self._limit:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BackendUnavailable(f"{self._where}: all {self._limit} connections busy for the whole "
                                             f"timeout (raise the pool_size or max_overflow option)")
                self._waiting += 1
                try:
                    self._cond.wait(left)
                finally:
                    self._waiting -= 1
            if self._idle:
                return self._idle.pop(), True
            self._open += 1
        retries = Retries(self._dialect, deadline)
        while True:
            try:
                conn = self._dialect.connect(max(0.001, deadline - time.monotonic()))
            except BaseException as exc:
                kind = self._dialect.classify(exc) if self._dialect.is_driver_error(exc) else None
                # a busy database while setting up the connection (SQLite switching to WAL does not
                # wait in its busy handler): retried like a statement, within the deadline
                pause = retries.pause(time.monotonic()) if kind == RETRY else None
                if pause is not None:
                    time.sleep(pause)
                    continue
                with self._cond:
                    self._open -= 1
                    self._cond.notify()
                if self._dialect.is_driver_error(exc):
                    raise self.translate(exc, kind) from exc
                raise
            if self._watchdog is not None:
                # a connection keeps its socket for life: read once here, not on every guarded call
                conn.lockapi_fileno = self._dialect.fileno(conn)
            return conn, False

    def _checkin(self, conn: DBAPIConnection) -> None:
        with self._cond:
            if len(self._idle) < self._size:
                self._idle.append(conn)
                self._cond.notify()
                return
        self._discard(conn)

    def _discard(self, conn: DBAPIConnection) -> None:
        with self._cond:
            self._open -= 1
            self._cond.notify()
        with contextlib.suppress(Exception):
            conn.close()

    def _drain(self) -> None:
        with self._cond:
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.close()



_POOLS: weakref.WeakSet[Connections] = weakref.WeakSet()


def _reset_pools_in_child() -> None:
    for pool in list(_POOLS):
        pool._after_fork()


os.register_at_fork(after_in_child=_reset_pools_in_child)
