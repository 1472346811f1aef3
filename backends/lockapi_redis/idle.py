"""The ``idle_timeout`` option: give connections back to the server when the process stops using them.

Managed Redis tiers cap the connections a server accepts, shared by every process of every application
that uses it; a process whose lock traffic stopped should not keep its peak number of connections open.
With ``idle_timeout`` > 0 one daemon thread per backend sweeps every ``idle_timeout / 4`` seconds and
closes, through the callbacks it was given, what has been unused for ``idle_timeout``: pooled command
connections and pub/sub connections with no subscription left. A later call opens a new connection (one
connect, plus the TLS handshake and AUTH where configured).

The thread ends with :meth:`IdleSweeper.close` (the backend's ``close()``); the backend starts it again
in a child process after ``fork``, since threads do not survive a fork. The asyncio backend sweeps from
a task on its event loop instead (:class:`AsyncIdleSweeper`), started with its first call.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Callable

log = logging.getLogger("lockapi.redis.idle")

Sweep = Callable[[float], object]
"""Close what has been unused for the given number of seconds."""


class IdleSweeper:
    """Calls each sweep with ``idle_timeout`` every ``idle_timeout / 4`` seconds until closed."""

    def __init__(self, idle_timeout: float, sweeps: list[Sweep]) -> None:
        self.idle_timeout = idle_timeout
        self._sweeps = sweeps
        self.start()

    def start(self) -> None:
        """Start the sweeping thread (again, in a child process after a fork)."""
        self._stop = threading.Event()
        thread = threading.Thread(target=self._run, args=(self._stop,), name="lockapi-redis-idle", daemon=True)
        thread.start()
        self._thread: threading.Thread | None = thread

    def close(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    def _run(self, stop: threading.Event) -> None:
        interval = self.idle_timeout / 4
        while not stop.wait(interval):
            for sweep in self._sweeps:
                try:
                    sweep(self.idle_timeout)
                except Exception:  # a sweep must never end the thread; the next one tries again
                    log.debug("idle connection sweep failed", exc_info=True)


class AsyncIdleSweeper:
    """:class:`IdleSweeper` for the asyncio backend: a task on the event loop instead of a thread (the
    connections it closes belong to that loop). Sweeps may be coroutine functions."""

    def __init__(self, idle_timeout: float, sweeps: list[Callable[[float], object]]) -> None:
        self.idle_timeout = idle_timeout
        self._sweeps = sweeps
        self._task = asyncio.get_running_loop().create_task(self._run(), name="lockapi-redis-idle")

    async def aclose(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        interval = self.idle_timeout / 4
        while True:
            await asyncio.sleep(interval)
            for sweep in self._sweeps:
                try:
                    result = sweep(self.idle_timeout)
                    if inspect.isawaitable(result):
                        await result
                except Exception:  # a sweep must never end the task; the next one tries again
                    log.debug("idle connection sweep failed", exc_info=True)
