"""PostgreSQL push wake-ups for asyncio: :class:`lockapi_sql.listener.Listener`'s semantics on ONE
``LISTEN`` connection per backend (psycopg's ``AsyncConnection``) read by a task, no thread.

While LISTEN is not in effect (before it first is, while the connection is down) the task polls: it
wakes every watcher every ``poll_interval`` seconds and reconnects with backoff; once LISTEN is in
effect it wakes everyone once (notifications sent meanwhile were lost), so a wait never outlasts its
``wait``. A notification addressed to a fair waiter (``payload|holder``) wakes only that waiter and the
watchers without a holder (the fair head).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
from psycopg import sql

from lockapi.spi import Wake, Watchers
from lockapi_sql.listener import MAX_BACKOFF, dispatch


class AsyncListener:
    """Dispatches NOTIFY payloads on ``channel`` to watchers; for one event loop; started on first use."""

    def __init__(self, connect: Callable[[], Awaitable[Any]], channel: str, *, timeout: float,
                 poll_interval: float = 0.5) -> None:
        self._connect = connect
        self._channel = channel
        self._timeout = timeout
        self._poll_interval = poll_interval
        self._watchers: Watchers[str] = Watchers()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.listening = False
        """True while LISTEN is in effect (false during the polling fallback)."""

    @contextlib.asynccontextmanager
    async def watch(self, payload: str, wake: Wake, holder: str | None = None) -> AsyncIterator[None]:
        """Call ``wake`` on every notification of ``payload`` while open (see the module)."""
        with self._watchers.register(payload, wake, holder):
            if not self._closed and (self._task is None or self._task.done()):
                self._task = asyncio.get_running_loop().create_task(self._run(), name="lockapi-sql-listen")
            yield

    async def aclose(self) -> None:
        """Stop the task (it closes its connection). Idempotent."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = self._poll_interval
        next_attempt = 0.0
        while not self._closed:
            if loop.time() >= next_attempt:
                conn = None
                try:
                    async with asyncio.timeout(self._timeout):
                        conn = await self._connect()
                        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                except (psycopg.Error, OSError, TimeoutError):
                    if conn is not None:
                        conn.pgconn.finish()
                    conn = None
                if conn is not None:
                    try:
                        backoff = self._poll_interval
                        self.listening = True
                        self._watchers.wake_all()  # notifications sent while we were not listening are lost
                        while not self._closed:
                            async for notify in conn.notifies(timeout=self._poll_interval):
                                dispatch(self._watchers, notify.payload)
                    except (psycopg.Error, OSError):
                        pass
                    finally:
                        self.listening = False
                        conn.pgconn.finish()
                next_attempt = loop.time() + backoff
                backoff = min(backoff * 2, MAX_BACKOFF)
            if self._closed:
                break
            self._watchers.wake_all()  # polling fallback
            await asyncio.sleep(self._poll_interval)
