"""PostgreSQL push wake-ups: ONE ``LISTEN`` connection per backend, shared by every watch.

Releasing transactions run ``pg_notify(channel, payload)``; PostgreSQL delivers it on commit. A daemon
thread owns the listening connection and calls the wake callbacks registered for each payload. While
that connection is down (or before it first comes up) the thread falls back to polling: it calls every
registered callback every ``poll_interval`` seconds and reconnects with backoff; after (re)connecting it
wakes everyone once, since notifications sent meanwhile were lost.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from psycopg import sql

from lockapi.spi import Wake, Watchers
from lockapi_sql.schema import HEAD_SEPARATOR
from lockapi_sql.watchdog import cut

MAX_BACKOFF = 5.0


class Listener:
    """Dispatches NOTIFY payloads on ``channel`` to watchers; thread-safe; started on first use."""

    def __init__(self, connect_params: dict[str, Any], channel: str, *, timeout: float,
                 poll_interval: float = 0.5) -> None:
        self._params = {**connect_params, "autocommit": True}
        self._channel = channel
        self._timeout = timeout
        self._poll_interval = poll_interval
        self._lock = threading.Lock()
        self._watchers: Watchers[str] = Watchers()
        self._listening = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._conn: psycopg.Connection[Any] | None = None
        """The listening connection while the thread reads it (under ``_lock``; :meth:`close` cuts it)."""

    @contextlib.contextmanager
    def watch(self, payload: str, wake: Wake, holder: str | None = None) -> Iterator[None]:
        """Call ``wake`` on every notification of ``payload`` while open; one addressed to a fair waiter
        (``payload|holder``) wakes only that waiter and the watchers without ``holder``.

        Returns at once: while LISTEN is not in effect yet (the first watch, a reconnect), the thread's
        polling fallback calls ``wake`` periodically, and once LISTEN is in effect it wakes every watcher
        (a release in between is never missed), so a wait never outlasts its ``wait`` for a listener.
        """
        with self._watchers.register(payload, wake, holder):
            with self._lock:
                self._start()
            yield

    @property
    def listening(self) -> bool:
        """True while LISTEN is in effect (false during the polling fallback)."""
        return self._listening.is_set()

    def close(self) -> None:
        """Stop the thread (it closes its connection) and wait for it: at once while it listens or polls
        (its socket is shut down under it), within the ``timeout`` while it is connecting. Idempotent."""
        with self._lock:
            self._stopping.set()
            if self._conn is not None and self._pid == os.getpid():  # (a forked child's is its parent's)
                cut(self._conn.fileno())  # the thread's read fails now instead of at its next poll
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self._poll_interval + self._timeout + 1)

    def _start(self) -> None:
        """Start the thread if it is not running (also in a forked child, whose parent's thread is gone);
        not once closed."""
        if self._stopping.is_set():
            return
        if self._pid != os.getpid():  # forked: the parent's connection is not ours to use or close
            self._pid = os.getpid()
            self._listening.clear()
            self._thread = self._conn = None
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="lockapi-sql-listen", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        keep_connected(self._stopping, self._watchers, self._session, self._poll_interval)

    def _session(self) -> bool:
        """One connection: LISTEN, wake everyone, dispatch until it fails or :meth:`close`; True if
        LISTEN was in effect."""
        try:
            with psycopg.connect(**self._params) as conn:
                with self._lock:
                    if self._stopping.is_set():
                        return False
                    self._conn = conn
                try:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    self._listening.set()
                    self._watchers.wake_all()  # notifications sent while not listening are lost
                    self._listen(conn)
                finally:
                    with self._lock:  # before it closes: close() never cuts a reused descriptor
                        self._conn = None
        except psycopg.Error:
            pass
        finally:
            listened = self._listening.is_set()
            self._listening.clear()
        return listened

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        while not self._stopping.is_set():
            for notify in conn.notifies(timeout=self._poll_interval):
                dispatch(self._watchers, notify.payload)


def keep_connected(stopping: threading.Event, watchers: Watchers[str], session: Callable[[], bool],
                   poll_interval: float) -> None:
    """A wake-up thread's life until ``stopping`` is set: run ``session`` (one connection, returning when it
    ends; True if it had been serving) again and again, the next attempt ``poll_interval`` after one that
    had been serving and with a backoff doubling up to :data:`MAX_BACKOFF` after one that failed; while no
    session runs, wake every watcher every ``poll_interval`` (the polling fallback)."""
    backoff = poll_interval
    next_attempt = 0.0
    while not stopping.is_set():
        if time.monotonic() >= next_attempt:
            if session():
                backoff = poll_interval
            next_attempt = time.monotonic() + backoff
            backoff = min(backoff * 2, MAX_BACKOFF)
        if stopping.is_set():
            break
        watchers.wake_all()  # polling fallback
        stopping.wait(poll_interval)


def dispatch(watchers: Watchers[str], payload: str) -> None:
    """Wake the watchers a notification's payload addresses (``payload`` or ``payload|holder``)."""
    key, _, holder = payload.partition(HEAD_SEPARATOR)
    watchers.wake(key, holder or None)
