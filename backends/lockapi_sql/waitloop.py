"""MariaDB push wake-ups without NOTIFY: ONE server-side wait per backend, shared by every watch.

MariaDB has no NOTIFY, so a daemon thread runs, on a connection of its own, one read-only statement at a
time: an anonymous block (``BEGIN NOT ATOMIC``, MariaDB >= 10.1) that sleeps server-side (``interval``, 1
ms, at first; then an eighth of the time waited so far, up to 20 ms: a short hold is noticed within about a
millisecond, a long one costs the server few looks) until one of the watched lease rows differs from the
thread's snapshot of them in a way that may have freed it (released, expired by the server's clock, or taken
and freed again: a row not live now that the snapshot did not see free with the same token; or live under
another token than the holder the snapshot saw), or ``longest`` seconds passed; it then reads the watched
rows once more (one consistent read). The thread compares that read with its snapshot, wakes the watchers of
the names that changed (payload keys as PostgreSQL's: ``l:``/``s:`` + name hash), keeps the read as the next
snapshot and starts the next wait. Consecutive snapshots are compared with each other, so no change between
two waits is lost. Leases and fencing are untouched: a wake-up is a hint, and the woken waiter's claim is
the usual conditional statement.

* **A new name** (the first watch of a name): its watchers must not wait out a running wait. The thread
  holds a user lock (``GET_LOCK('<random>', 0)``) on a second small connection while it waits, and the
  wait ends as soon as that lock is free (``IS_FREE_LOCK``); a watch that adds a name sets an event, and
  a second thread releases the lock (one round trip, on the contended path only; no ``KILL``: connection
  ids are reused after a server restart). The thread then reads the rows of the new names (its snapshot)
  and only THEN wakes their watchers once: they check again, so a release between a waiter's denied
  attempt and the snapshot is never missed.
* **While the connection is down** (or before it first is up) the thread polls: it wakes every watcher
  every ``poll_interval`` and reconnects with backoff (up to 5 s); once connected again it takes a new
  snapshot and wakes everyone (changes meanwhile were not seen). :meth:`WaitLoop.close` cuts both
  sockets, so it returns at once. A forked child starts threads of its own.
* **MySQL** has no anonymous blocks: the first wait fails to parse, and the thread then wakes every
  watcher every 50 ms (what polling waiters do) for the backend's life.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from lockapi.spi import Wake, Watchers
from lockapi_sql.dialects import mysql_error_code
from lockapi_sql.listener import keep_connected
from lockapi_sql.statements import RowKey, WaitStatements, WatchedKey, fired, payload
from lockapi_sql.watchdog import cut

UNSUPPORTED_POLL = 0.05
"""How often every watcher is woken when the server cannot run the wait (MySQL): the polling waiters' pace."""
PARSE_ERROR = 1064
THREADS = 2
"""Threads a backend's wait loop runs (the wait, and the one that frees the guard lock), whatever the
number of waiters."""


class WaitLoop:
    """Wakes watchers of lease rows that may have been freed; thread-safe; started on first use.

    ``connect(read_timeout)`` opens an autocommit PyMySQL connection within the backend's ``timeout``
    (:meth:`lockapi_sql.dialects.MySQL.connect`); ``fileno(conn)`` is its socket.
    """

    def __init__(self, connect: Callable[[float], Any], fileno: Callable[[Any], int], statements: WaitStatements,
                 *, timeout: float, interval: float = 0.001, longest: float = 5.0,
                 poll_interval: float = 0.5) -> None:
        self._connect = connect
        self._fileno = fileno
        self._sql = statements
        self._timeout = timeout
        self._interval = interval
        self._longest = longest
        self._poll_interval = poll_interval
        self._guard_name = ""
        """The user lock the thread holds while it waits: random, and new on every connect (a session the
        server has not yet seen die may still hold the last one; a forked child must not share it)."""
        self._lock = threading.Lock()
        """Guards the fields below and the connections' hand-over to :meth:`close`."""
        self._counts: dict[WatchedKey, int] = {}
        """Watched names: how many watches each."""
        self._watchers: Watchers[str] = Watchers()
        self._grew = threading.Event()
        """Set by a watch that added a name: the kicker thread frees the guard lock."""
        self._work = threading.Event()
        """Set by a watch that added a name: the idle waiting thread looks again."""
        self._stopping = threading.Event()
        self._pushing = threading.Event()
        self._guard_lock = threading.Lock()
        """Serialises the guard connection between the two threads."""
        self._guard: Any = None
        self._guard_held = False
        self._conn: Any = None
        self._thread: threading.Thread | None = None
        self._kicker: threading.Thread | None = None
        self._pid = os.getpid()
        self.session_id: int | None = None
        """The server's id of the wait's connection (``information_schema.processlist``), once connected."""
        self.unsupported = False
        """The server cannot run the wait (MySQL): every watcher is woken every 50 ms instead."""

    # -- the watch side -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def watch(self, kind: int, digest: str, wake: Wake, holder: str | None = None) -> Iterator[None]:
        """Call ``wake`` when the lock (``kind`` LOCK) or a semaphore slot (SEMAPHORE) of the name whose
        hash is ``digest`` may have been freed, while open. Returns at once, without I/O (also on an event
        loop): a new name is watched from the thread's next snapshot on, after which its watchers are
        woken once; until the thread is connected it wakes every watcher every ``poll_interval``.
        ``holder`` is accepted for the SPI's sake: every watcher of a freed name is woken (the claim
        keeps a fair queue's order)."""
        key = (kind, digest)
        with self._watchers.register(payload(kind, digest), wake, holder):
            with self._lock:
                count = self._counts.get(key, 0)
                self._counts[key] = count + 1
                self._start()
            if count == 0:
                self._work.set()
                self._grew.set()
            try:
                yield
            finally:
                with self._lock:
                    if self._counts[key] == 1:
                        del self._counts[key]
                    else:
                        self._counts[key] -= 1

    @contextlib.asynccontextmanager
    async def watch_async(self, kind: int, digest: str, wake: Wake, holder: str | None = None
                          ) -> AsyncIterator[None]:
        """:meth:`watch` for asyncio waiters (their ``wake`` is thread-safe: ``loop.call_soon_threadsafe``)."""
        with self.watch(kind, digest, wake, holder):
            yield

    @property
    def pushing(self) -> bool:
        """True while the thread is connected (false during the polling fallback)."""
        return self._pushing.is_set()

    def close(self) -> None:
        """Stop both threads (they close their connections) and wait for them: at once while they wait
        or poll (their sockets are shut down under them), within ``timeout`` while connecting. Idempotent."""
        with self._lock:
            self._stopping.set()
            if self._pid == os.getpid():  # (a forked child's connections are its parent's)
                for conn in (self._conn, self._guard):
                    if conn is not None:
                        cut(self._fileno(conn))
        self._grew.set()
        self._work.set()
        for thread in (self._thread, self._kicker):
            if thread is not None and thread is not threading.current_thread():
                thread.join(self._poll_interval + self._timeout + 1)

    def _start(self) -> None:
        """Start the threads if they are not running (also in a forked child); not once closed. Under
        ``_lock``."""
        if self._stopping.is_set():
            return
        if self._pid != os.getpid():  # forked: the parent's connections and threads are not ours
            self._pid = os.getpid()
            self._pushing.clear()
            self._guard_lock = threading.Lock()
            self._thread = self._kicker = self._conn = self._guard = None
            self._guard_held = False
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="lockapi-sql-wait", daemon=True)
            self._thread.start()
        if self._kicker is None or not self._kicker.is_alive():
            self._kicker = threading.Thread(target=self._kick, name="lockapi-sql-wait-kick", daemon=True)
            self._kicker.start()

    # -- the threads ----------------------------------------------------------------------------------
    def _kick(self) -> None:
        """Frees the guard lock whenever a watch added a name, which ends the running wait."""
        while True:
            self._grew.wait()
            self._grew.clear()
            if self._stopping.is_set():
                return
            with self._guard_lock:
                if self._guard is not None and self._guard_held:
                    self._guard_held = False
                    with contextlib.suppress(Exception):  # a dead guard connection frees the lock too
                        self._guard.cursor().execute(f"DO RELEASE_LOCK('{self._guard_name}')")

    def _run(self) -> None:
        keep_connected(self._stopping, self._watchers, self._session, self._poll_interval)

    def _session(self) -> bool:
        """One pair of connections waiting until they fail or :meth:`close`; True if the wait had run. A
        server that cannot run the wait (MySQL) is not asked again: every watcher is woken every
        :data:`UNSUPPORTED_POLL` instead, until closed."""
        if not self.unsupported:
            try:
                self._connect_and_wait()
            except Exception as exc:  # any failure: poll, reconnect; the thread lives on
                if mysql_error_code(exc) == PARSE_ERROR:
                    self.unsupported = True
        while self.unsupported and not self._stopping.is_set():
            self._watchers.wake_all()
            self._stopping.wait(UNSUPPORTED_POLL)
        pushed = self._pushing.is_set()
        self._pushing.clear()
        return pushed

    def _connect_and_wait(self) -> None:
        conn = guard = None
        try:
            conn = self._connect(self._longest + self._timeout)
            guard = self._connect(self._timeout)
            with self._lock:
                if self._stopping.is_set():
                    return
                self._conn = conn
                self.session_id = conn.thread_id()
            with self._guard_lock:
                self._guard, self._guard_held = guard, False
                self._guard_name = f"lockapi_wait_{secrets.token_hex(16)}"
            self._wait(conn.cursor())
        finally:
            with self._lock, self._guard_lock:  # before they close: close() never cuts a reused descriptor
                self._conn = self._guard = None
                self._guard_held = False
            for c in (conn, guard):
                if c is not None:
                    with contextlib.suppress(Exception):
                        c.close()

    def _wait(self, cursor: Any) -> None:
        """Wait, wake, repeat, until stopped; raises when the connection fails."""
        snapshot: dict[RowKey, tuple[int, bool]] = {}
        snapped: set[WatchedKey] = set()  # the names of the snapshot: every other name is new
        while not self._stopping.is_set():
            self._hold_guard()  # before reading the names: a name added after this read frees it
            self._work.clear()
            with self._lock:
                keys = set(self._counts)
            if not keys:
                snapshot, snapped = {}, set()
                self._pushing.set()
                self._work.wait(self._poll_interval)
                continue
            new = keys - snapped
            if new:
                cursor.execute(self._sql.rows(keys))
            else:  # (keys: the snapshot's names, less those no longer watched)
                cursor.execute(self._sql.wait(keys, snapshot, self._guard_name, self._interval, self._longest))
            rows = [(h, int(k), int(s), int(f), int(live)) for h, k, s, f, live in cursor.fetchall()]
            while cursor.nextset():  # an anonymous block ends with its own status
                pass
            changed = fired(snapshot, [row for row in rows if (row[1], row[0]) in snapped])
            snapshot = {(h, k, s): (f, bool(live)) for h, k, s, f, live in rows}
            snapped = keys
            if not self._pushing.is_set():  # (re)connected: changes while it was down were not seen
                self._pushing.set()
                self._watchers.wake_all()
                continue
            for kind, digest in changed | new:
                self._watchers.wake(payload(kind, digest))

    def _hold_guard(self) -> None:
        with self._guard_lock:
            if not self._guard_held:
                cursor = self._guard.cursor()
                cursor.execute(f"SELECT GET_LOCK('{self._guard_name}', 0)")
                (got,) = cursor.fetchone()
                if got != 1:
                    raise RuntimeError(f"user lock {self._guard_name} is taken")
                self._guard_held = True
