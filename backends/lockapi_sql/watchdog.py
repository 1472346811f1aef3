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
    A guard is one entry in a dict, set and deleted without the lock (one atomic dict operation each,
    no heap per call): the lock is taken by a guard only to start the thread or wake it for an earlier
    deadline, and by an ended guard only when the thread took its entry first (then it waits for that
    cut to finish, so a connection it hands on is never cut afterwards). The thread looks for the
    earliest deadline only when it wakes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        """Guards the thread's state and its cuts; the thread waits on it (the guards' dict is changed
        without it, see the class docstring)."""
        self._live: dict[int, tuple[float, int]] = {}
        """id -> (deadline, file descriptor) of every guard in force."""
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._generation = 0
        """The running thread's number: :meth:`close` moves it on, which stops that thread."""
        self._wakes_at = math.inf
        """When the thread next looks at the guards; +inf while it looks or has none, so a guard added
        meanwhile wakes it (set before the thread reads the guards: see :meth:`_run`)."""

    def watch(self, fileno: int, deadline: float) -> int:
        """Shut down the socket ``fileno`` if it is still watched at ``deadline`` (monotonic); the id to
        :meth:`unwatch` it with. The hot path of every guarded call: no generator, and no lock unless the
        thread must be started or woken for an earlier deadline."""
        ident = next(self._ids)
        self._live[ident] = (deadline, fileno)  # before reading _wakes_at: the thread sets it before it reads this
        if self._thread is None or deadline < self._wakes_at:
            with self._lock:
                if self._thread is None:  # first use, or the first after close(): a backend may be used again
                    self._thread = threading.Thread(target=self._run, args=(self._generation,),
                                                    name="lockapi-sql-watchdog", daemon=True)
                    self._thread.start()
                else:
                    self._cond.notify()
        return ident

    def unwatch(self, ident: int) -> None:
        """End :meth:`watch` ``ident``; once this returns its socket is not cut. Exactly one of this and
        the thread takes the entry out (one atomic ``dict.pop`` each); the thread does so under the lock
        and cuts before releasing it, so if it took the entry this waits for the lock."""
        if self._live.pop(ident, None) is None:
            with self._lock:
                pass

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
        self._live, self._thread, self._wakes_at = {}, None, math.inf

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
                # +inf before reading the guards: a guard added after this read sees it and notifies (the
                # notify waits for the lock, which wait() releases), so none is missed
                self._wakes_at = math.inf
                if not self._live:
                    self._cond.wait()
                    continue
                ident, (deadline, fileno) = min(self._live.copy().items(), key=_deadline)  # a few in flight
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._wakes_at = deadline
                    self._cond.wait(wait)
                    continue
                if self._live.pop(ident, None) is not None:  # else its guard just ended: not cut
                    cut(fileno)  # under the lock: an unwatch that lost the race waits for the cut to end


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
