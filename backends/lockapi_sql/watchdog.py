"""A client-side deadline for drivers without a read timeout (psycopg).

A statement sent to a PostgreSQL server that stopped answering (SIGSTOP, a wedged host whose kernel
still ACKs) blocks forever: libpq has no read timeout, and neither keepalives nor ``tcp_user_timeout``
fire while the peer's kernel acknowledges. The watchdog shuts down the socket of any connection whose
operation outlives its deadline; the blocked read then fails at once, and the backend reports
:class:`BackendUnavailable` within ``timeout`` as promised. The pool discards that connection.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import socket
import threading
import time
from collections.abc import Iterator


class Watchdog:
    """One daemon thread (started on first use) that cuts connections whose deadline passed.

    The thread sleeps until the earliest deadline it knows of and is woken by a new guard only if that
    guard's deadline is earlier (calls share one timeout, so hardly ever): a thread wake-up per call
    cost each call a context switch and a GIL hand-off (the client CPU of a PostgreSQL or MariaDB
    acquire+release cycle went from about 290 to 200 µs without them).
    Guards that ended are dropped lazily, when they reach the top of the heap.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        """Guards all state; the thread waits on it."""
        self._heap: list[tuple[float, int, int]] = []  # (deadline, id, file descriptor)
        self._live: set[int] = set()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._wakes_at = 0.0
        """When the thread next looks at the heap: +inf while it waits for a first guard, 0 while it runs."""

    def watch(self, fileno: int, deadline: float) -> int:
        """Shut down the socket ``fileno`` if it is still watched at ``deadline`` (monotonic); the id to
        :meth:`unwatch` it with. The hot path of every guarded call: no generator, one plain lock."""
        ident = next(self._ids)
        with self._lock:
            heap, live = self._heap, self._live
            while heap and heap[0][1] not in live:
                heapq.heappop(heap)  # finished in time: keeps the heap as small as the calls in flight
            live.add(ident)
            heapq.heappush(heap, (deadline, ident, fileno))
            if self._thread is None:
                if not self._closed:
                    self._thread = threading.Thread(target=self._run, name="lockapi-sql-watchdog", daemon=True)
                    self._thread.start()
            elif deadline < self._wakes_at:
                self._cond.notify()
        return ident

    def unwatch(self, ident: int) -> None:
        """End :meth:`watch` ``ident``; once this returns its socket is not cut (the thread cuts under the
        same lock)."""
        with self._lock:
            self._live.discard(ident)

    @contextlib.contextmanager
    def guard(self, fileno: int, deadline: float) -> Iterator[None]:
        """:meth:`watch` for the duration of a block."""
        ident = self.watch(fileno, deadline)
        try:
            yield
        finally:
            self.unwatch(ident)

    def after_fork(self) -> None:
        """In a forked child: the parent's thread and guards are not ours (the next watch starts a thread)."""
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._heap, self._live, self._thread, self._wakes_at = [], set(), None, 0.0

    def close(self) -> None:
        """Stop the thread (after the backend's last operation). Idempotent."""
        with self._cond:
            self._closed = True
            thread, self._thread = self._thread, None
            self._cond.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)  # finished in time
                if not self._heap:
                    self._wakes_at = math.inf
                    self._cond.wait()
                    self._wakes_at = 0.0
                    continue
                deadline, ident, fileno = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._wakes_at = deadline
                    self._cond.wait(wait)
                    self._wakes_at = 0.0
                    continue
                heapq.heappop(self._heap)
                self._live.discard(ident)
                cut(fileno)  # under the lock: the guarded block cannot end and hand the socket on


def cut(fileno: int) -> None:
    """Shut down the socket ``fileno`` (both ways) without closing the descriptor its driver owns."""
    with contextlib.suppress(OSError):
        sock = socket.socket(fileno=fileno)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.detach()  # the driver still owns the descriptor
