"""Deferred work: the caller appends to a queue; a daemon thread applies it off the hot path.

A lock operation only appends a reference to a :class:`collections.deque` (atomic, tens of
nanoseconds); the work (family lookup, labels, the metrics library's own bookkeeping, several
microseconds) runs on a daemon thread every :data:`INTERVAL` seconds, mostly while callers wait on the
backend's socket. Readers call :meth:`Deferred.drain` before they read (a scrape or an OpenTelemetry
collection), so they never see a value late; the queue is drained at interpreter exit too (short-lived
processes writing prometheus_client's multi-process files), and inline by the caller past
:data:`LIMIT` items, which bounds memory if the thread falls behind. The metrics observer's records go
to channels (:meth:`Deferred.channel`: one function per queue, so the caller appends the bare record,
with no ``(function, argument)`` pair to build); the drainer thread of a queue with channels is
started when the channel is made, and again in each forked child.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

INTERVAL = 0.1
"""Seconds between two drains by the background thread."""
LIMIT = 50_000
"""Queued items beyond which the caller drains the queue itself."""

_pid = os.getpid()
_live: weakref.WeakSet[Deferred] = weakref.WeakSet()


class Deferred:
    """A queue of calls, ``(function, argument)`` pairs, made off the caller's thread, and channels:
    queues of bare items that one function applies in bulk (the hot path appends the item, no pair).
    Thread-safe; one drain runs at a time, so no two queued calls ever run concurrently. A drain applies
    the queue first, then each channel in the order they were made."""

    def __init__(self) -> None:
        self._queue: deque[tuple[Callable[[Any], None], Any]] = deque()
        self._channels: list[tuple[deque[Any], Callable[[deque[Any]], None]]] = []
        self._thread_pid = 0
        self._lock = threading.Lock()
        self.draining = threading.Lock()
        """Held for a whole drain: a drain at exit waits for the thread's pass instead of racing it (an
        item the thread popped must be applied before the interpreter freezes daemon threads)."""
        self.closed = False
        self._started = False
        _live.add(self)

    def put(self, item: tuple[Callable[[Any], None], Any]) -> None:
        queue = self._queue
        queue.append(item)
        if self._thread_pid != _pid:
            self._start()
        if len(queue) > LIMIT:
            self.drain()

    def channel(self, function: Callable[[deque[Any]], None]) -> deque[Any]:
        """A new queue that a drain hands to ``function``, which pops and applies every item in it (and
        logs with :func:`failed`, not raises, for one that fails). Its appender appends inline: the
        drainer thread runs from now on (in forked children too), and the appender calls :meth:`drain`
        itself past :data:`LIMIT` items, as :meth:`put` does."""
        queue: deque[Any] = deque()
        with self.draining:
            self._channels = [*self._channels, (queue, function)]
        self._started = True
        if self._thread_pid != _pid:
            self._start()
        return queue

    def drain(self) -> None:
        """Apply every queued item now, on this thread."""
        queue = self._queue
        with self.draining:
            while True:
                try:
                    function, argument = queue.popleft()
                except IndexError:
                    break
                try:
                    function(argument)
                except Exception:
                    failed()
            for items, apply in self._channels:
                if items:
                    try:
                        apply(items)
                    except Exception:
                        failed()

    def _start(self) -> None:
        with self._lock:
            if self._thread_pid == _pid:
                return
            self._thread_pid = _pid  # a forked child has no thread: it starts its own
        ref = weakref.ref(self)
        wait = threading.Event().wait

        def run() -> None:
            while (alive := ref()) is not None and not alive.closed:
                alive.drain()
                del alive
                wait(INTERVAL)

        threading.Thread(target=run, name="lockapi-metrics", daemon=True).start()


def failed() -> None:
    """Log the exception being handled: a queued update that failed (the others are applied all the same)."""
    log.exception("lockapi: a deferred metric update failed", extra={"lockapi_event": "metric_failed"})


def _forked() -> None:
    global _pid
    _pid = os.getpid()
    for deferred in list(_live):  # a forked child has no thread: those that must run start again
        if deferred._started and not deferred.closed:
            deferred._start()


def _drain_all() -> None:
    for deferred in list(_live):
        deferred.drain()
        deferred.closed = True


os.register_at_fork(after_in_child=_forked)
atexit.register(_drain_all)
