"""A client-side deadline for drivers without a read timeout (psycopg).

A statement sent to a PostgreSQL server that stopped answering (SIGSTOP, a wedged host whose kernel
still ACKs) blocks forever: libpq has no read timeout, and neither keepalives nor ``tcp_user_timeout``
fire while the peer's kernel acknowledges. The watchdog shuts down the socket of any connection whose
operation outlives its deadline; the blocked read then fails at once, and the backend reports
:class:`BackendUnavailable` within ``timeout`` as promised. The pool discards that connection.
"""

from __future__ import annotations

import contextlib
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
    A guard is one entry in a dict (set and deleted under one plain lock, no heap per call); the thread
    looks for the earliest deadline only when it wakes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        """Guards all state; the thread waits on it."""
        self._live: dict[int, tuple[float, int]] = {}
        """id -> (deadline, file descriptor) of every guard in force."""
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._generation = 0
        """The running thread's number: :meth:`close` moves it on, which stops that thread."""
        self._wakes_at = 0.0
        """When the thread next looks at the guards: +inf while there are none, 0 while it runs."""

    def watch(self, fileno: int, deadline: float) -> int:
        """Shut down the socket ``fileno`` if it is still watched at ``deadline`` (monotonic); the id to
        :meth:`unwatch` it with. The hot path of every guarded call: no generator, one plain lock."""
        ident = next(self._ids)
        with self._lock:
            self._live[ident] = (deadline, fileno)
            if self._thread is None:  # first use, or the first after close(): a backend may be used again
                self._thread = threading.Thread(target=self._run, args=(self._generation,),
                                                name="lockapi-sql-watchdog", daemon=True)
                self._thread.start()
            elif deadline < self._wakes_at:
                self._cond.notify()
        return ident

    def unwatch(self, ident: int) -> None:
        """End :meth:`watch` ``ident``; once this returns its socket is not cut (the thread cuts under the
        same lock)."""
        with self._lock:
            self._live.pop(ident, None)

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
        self._live, self._thread, self._wakes_at = {}, None, 0.0

    def close(self) -> None:
        """Stop the thread (after the backend's last operation); a later :meth:`watch` starts another.
        Idempotent."""
        with self._cond:
            self._generation += 1
            thread, self._thread = self._thread, None
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    def _run(self, generation: int) -> None:
        while True:
            with self._cond:
                if self._generation != generation:
                    return
                if not self._live:
                    self._wakes_at = math.inf
                    self._cond.wait()
                    self._wakes_at = 0.0
                    continue
                ident, (deadline, fileno) = min(self._live.items(), key=_deadline)  # a few calls in flight
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._wakes_at = deadline
                    self._cond.wait(wait)
                    self._wakes_at = 0.0
                    continue
                del self._live[ident]
                cut(fileno)  # under the lock: the guarded block cannot end and hand the socket on


def _deadline(entry: tuple[int, tuple[float, int]]) -> float:
    return entry[1][0]


def cut(fileno: int) -> None:
    """Shut down the socket ``fileno`` (both ways) without closing the descriptor its driver owns."""
    with contextlib.suppress(OSError):
        sock = socket.socket(fileno=fileno)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.detach()  # the driver still owns the descriptor
