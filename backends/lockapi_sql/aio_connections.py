"""The SQL backend's asyncio connections: :class:`lockapi_sql.connections.Connections` on the drivers'
own asyncio connections (psycopg's ``AsyncConnection``, aiomysql), for one event loop.

A call runs a plan (:mod:`lockapi_sql.plans`) with :func:`lockapi.aio.spi.drive_async` under the
backend's ``timeout`` as one deadline, with the sync pool's rules (:class:`lockapi_sql.connections.Retries`,
shared): retried by running the plan again after a deadlock, a lock wait or a busy database while time
is left, and once on a fresh connection when the connection dies during the call (a pooled one, or one
this call opened: the reply may be all that was lost); driver errors become the same lockapi errors
(:func:`lockapi_sql.connections.translate`).

The deadline is kept without a thread and without cancelling the driver: the pool's one timer on the
loop shuts down the socket of a connection whose call outlives it (what the sync watchdog does), so the
pending read fails at once and the call ends with :class:`BackendUnavailable`. (Cancelling psycopg mid-query
would make it ask the server to cancel and wait for that, up to ten more seconds on a frozen server.)
A call cancelled by its caller drops its connection (its state is unknown), as does a call that failed
inside a transaction; on PostgreSQL the connection closes itself as the cancellation reaches psycopg,
instead of that cancel protocol (the dialect's ``async_connect``). Not fork-safe (asyncio objects are
not): a child process opens its own backend.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from lockapi.aio.spi import drive_async
from lockapi.errors import BackendUnavailable
from lockapi_sql.connections import AGAIN, FRESH, Retries, translate
from lockapi_sql.dialects import Dialect
from lockapi_sql.plans import ALL, BEGIN, COUNT, ONE, TOKEN, First, Plan, Step, Then
from lockapi_sql.watchdog import cut

T = TypeVar("T")


async def _settling(checkout: Coroutine[Any, Any, T]) -> T:
    """Await ``checkout`` to its end although the caller is cancelled meanwhile (the cancellation is
    left for the caller to find, as a settling call's): the retry of a statement whose fate is unknown
    must find out what it did. A task, so that the cancellation does not reach the connect under way."""
    task = asyncio.ensure_future(checkout)
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                raise


class AsyncSession:
    """One pooled asyncio connection, for life: runs a plan's steps. A session goes back to the pool only
    idle (``in_transaction`` and ``cut`` false); one that is not is dropped with its connection."""

    __slots__ = ("_dialect", "_returning", "conn", "cut", "in_transaction")

    def __init__(self, dialect: Dialect, conn: Any) -> None:
        self._dialect = dialect
        self.conn = conn
        self._returning = dialect.returning
        self.in_transaction = False
        self.cut = False

    async def run(self, step: Step) -> Any:
        """The result of one step (see :mod:`lockapi_sql.plans`), as :meth:`Session.run` gives it."""
        kind, statement, params = step
        if kind >= BEGIN:
            await self._dialect.async_execute(self.conn, statement, None)
            self.in_transaction = kind == BEGIN
            return None
        cursor = await self._dialect.async_execute(self.conn, statement, params)
        if kind == TOKEN:
            if self._returning:
                row = await cursor.fetchone()
                return None if row is None else int(row[0])
            return int(cursor.lastrowid) if cursor.rowcount == 1 else None
        if kind == COUNT:
            return int(cursor.rowcount)
        if kind == ONE:
            return await cursor.fetchone()
        if kind == ALL:
            return list(await cursor.fetchall())
        return None

    def cut_off(self) -> None:
        """The deadline passed: shut the socket down (the pending read fails at once)."""
        self.cut = True
        with contextlib.suppress(Exception):
            cut(self._dialect.async_fileno(self.conn))


class AsyncConnections:
    """Up to ``size + overflow`` asyncio connections, ``size`` of them kept idle; for one event loop."""

    def __init__(self, dialect: Dialect, *, size: int, overflow: int, timeout: float, where: str) -> None:
        self._dialect = dialect
        self._size = size
        self._limit = size + overflow
        self._timeout = timeout
        self._where = where
        self._idle: list[AsyncSession] = []
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False
        self._calls: dict[AsyncSession, float] = {}
        """The calls in flight and their deadlines (:meth:`_expire` cuts those past theirs)."""
        self._timer: asyncio.TimerHandle | None = None
        """The pool's one deadline timer (see :meth:`_expire`), pending while calls may be in flight."""
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def call(self, plan: Callable[..., Plan[T]], *args: Any) -> Coroutine[Any, Any, T]:
        """Run ``plan(*args)`` on a connection within one ``timeout``; see the module docstring. (A plain
        function returning the call's coroutine: one coroutine frame fewer on every reply's way.)"""
        loop = asyncio.get_running_loop()
        return self._run(loop, loop.time() + self._timeout, None, None, plan, args)

    def direct(self, first: Callable[..., First[T]], *args: Any) -> Coroutine[Any, Any, T]:
        """Run direct plan ``first(*args)`` (see :mod:`lockapi_sql.plans`): :meth:`call` of its
        :func:`~lockapi_sql.plans.unfold` (the same retries, errors and deadline), without a generator
        and its driver for its one statement; a :class:`~lockapi_sql.plans.Then` goes on as a call within
        the same deadline."""
        loop = asyncio.get_running_loop()
        step, finish = first(*args)
        return self._run(loop, loop.time() + self._timeout, step, finish, None, ())

    def settled(self, first: Callable[..., First[T]], *args: Any) -> Coroutine[Any, Any, T]:
        """:meth:`direct`, settling (the dialect must have ``async_settles``): a cancellation does not
        interrupt a statement of the call, whose replies are read on and the result returned (the
        deadline still ends it); it interrupts the call only where nothing it sent can have taken
        effect: while checking out the first connection, while pausing before a retry after an error,
        or before the statement that follows a denial. After a connection died with a statement's fate
        unknown, the retry on a fresh connection settles too (it finds out what happened)."""
        loop = asyncio.get_running_loop()
        step, finish = first(*args)
        return self._run(loop, loop.time() + self._timeout, step, finish, None, (), settle=True)

    async def _run(self, loop: asyncio.AbstractEventLoop, deadline: float, step: Step | None,
                   finish: Callable[[Any, Step], T | Then] | None, plan: Callable[..., Plan[T]] | None,
                   args: tuple[Any, ...], *, settle: bool = False) -> T:
        """The one retry loop of :meth:`call` (``plan`` given), :meth:`direct` (``step`` and its
        ``finish``) and :meth:`settled` (``settle``): each attempt on a connection (idle, else checked
        out), errors to :meth:`_failed`."""
        retries: Retries | None = None
        calls = self._calls
        unknown = False  # settling, a statement's fate is unknown (its connection died): settle the retry
        while True:
            if self._idle:
                session, reused = self._idle.pop(), True
            elif unknown:
                session, reused = await _settling(self._checkout(deadline))
            else:
                session, reused = await self._checkout(deadline)
            calls[session] = deadline  # watched by the deadline timer (see _expire)
            if self._timer is None or self._timer_loop is not loop:
                self._timer, self._timer_loop = loop.call_at(deadline, self._expire), loop
            if settle:
                self._dialect.async_settle(session.conn, True)
            try:
                if plan is None:
                    answer = await session.run(step)  # type: ignore[arg-type]
                else:
                    answer = await drive_async(plan(*args), session.run)
            except BaseException as exc:
                if settle:
                    self._dialect.async_settle(session.conn, False)
                retries, pause = self._failed(exc, session, reused, retries, loop, deadline)
                if pause is None:
                    unknown = settle
                elif unknown:
                    await _settling(asyncio.sleep(pause))
                else:
                    await asyncio.sleep(pause)
                continue
            if settle:
                self._dialect.async_settle(session.conn, False)
            calls.pop(session, None)  # succeeded: back to the pool, unless the deadline cut it (and took it out)
            if session.cut:
                self._discard(session)
            else:
                self._checkin(session)
            if plan is not None:
                result: T = answer
                return result
            assert finish is not None and step is not None
            then = finish(answer, step)
            if not isinstance(then, Then):
                return then
            plan, args, retries = then.plan, then.args, None  # the same deadline, as a call

    def _failed(self, exc: BaseException, session: AsyncSession, reused: bool, retries: Retries | None,
                loop: asyncio.AbstractEventLoop, deadline: float) -> tuple[Retries, float | None]:
        """An attempt that raised ``exc``: its connection kept or dropped, and ``exc`` (translated) raised,
        or ``(retries, pause)``: try again after ``pause`` seconds (None: at once, on a fresh connection)."""
        self._calls.pop(session, None)
        d = self._dialect
        if not d.is_driver_error(exc):
            # the plan's own error, or the caller cancelled: keep the connection only if it is idle
            keep = not (session.in_transaction or session.cut or isinstance(exc, asyncio.CancelledError))
            (self._checkin if keep else self._discard)(session)
            raise exc
        kind = d.classify(exc)
        if retries is None:
            retries = Retries(d, deadline)
        keep, then, pause = retries.after(kind, loop.time(), cut=session.cut, in_transaction=session.in_transaction)
        (self._checkin if keep else self._discard)(session)
        if then == AGAIN:
            return retries, pause
        if then == FRESH:
            if reused:
                self._drain()
            return retries, None
        raise translate(self._where, exc, kind) from exc

    def _expire(self) -> None:
        """The pool's deadline timer: cut the calls whose deadline passed, then wait for the earliest
        deadline left. One timer per pool instead of one per call: a call that starts while it is
        pending has a deadline no earlier than the timer's (every call's deadline is its start plus
        the one ``timeout``), so at most one expiry per ``timeout`` is spent on calls that ended in time."""
        loop = self._timer_loop
        assert loop is not None
        self._timer = None
        now = loop.time() + 0.001  # a timer fires up to the loop's clock resolution early
        earliest = math.inf
        for session, deadline in list(self._calls.items()):
            if deadline <= now:
                del self._calls[session]
                session.cut_off()
            else:
                earliest = min(earliest, deadline)
        if earliest < math.inf:
            self._timer = loop.call_at(earliest, self._expire)

    def close(self) -> None:
        """Close the idle connections, and each busy one when its call ends (it does not go back to the
        pool, which nobody would close); a later call opens a connection of its own and closes it after
        it. Idempotent."""
        self._closed = True
        self._drain()
        if self._timer is not None and not self._calls:
            self._timer.cancel()
            self._timer = None

    # -- the pool ---------------------------------------------------------------------------------------
    async def _checkout(self, deadline: float) -> tuple[AsyncSession, bool]:
        loop = asyncio.get_running_loop()
        while not self._idle and self._open >= self._limit:
            if loop.time() >= deadline:
                raise BackendUnavailable(f"{self._where}: all {self._limit} connections busy for the whole "
                                         f"timeout (raise the pool_size or max_overflow option)")
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except TimeoutError:
                pass
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # we were handed a free slot we will not use: pass it on
                raise
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
        if self._idle:
            return self._idle.pop(), True
        self._open += 1
        d = self._dialect
        try:
            async with asyncio.timeout_at(deadline):
                return AsyncSession(d, await d.async_connect(max(0.001, deadline - loop.time()))), False
        except BaseException as exc:
            self._open -= 1
            self._wake_one()
            if isinstance(exc, TimeoutError):
                raise BackendUnavailable(f"{self._where}: no connection within the timeout "
                                         f"({self._timeout:g} s)") from None
            if d.is_driver_error(exc):
                raise translate(self._where, exc, d.classify(exc)) from exc
            raise

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _checkin(self, session: AsyncSession) -> None:
        if len(self._idle) < self._size and not self._closed:
            self._idle.append(session)
            if self._waiters:
                self._wake_one()
            return
        self._discard(session)

    def _discard(self, session: AsyncSession) -> None:
        self._open -= 1
        self._wake_one()
        with contextlib.suppress(Exception):
            self._dialect.async_close(session.conn)

    def _drain(self) -> None:
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        for session in idle:
            with contextlib.suppress(Exception):
                self._dialect.async_close(session.conn)
        for _ in idle:
            self._wake_one()
