"""SQLite under a busy database (issue 14): calls do not wait in SQLite's busy handler (``busy_timeout``
is 0 once connected) but are retried by lockapi after short jittered sleeps, within the call's deadline.

* A database another process keeps locked: ``BackendUnavailable`` once ``timeout`` is spent, not later
  (and not at once: the call retried until then).
* A database another process locks for a while: the waiting call goes through once the lock is gone.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lockapi.errors import BackendUnavailable
from tests.sql.conftest import Factory

Locker = tuple[str, Callable[[], "subprocess.Popen[str]"]]


@pytest.fixture
def locker(tmp_path: Path) -> Iterator[Locker]:
    """(URL, process): another process that holds the database's write lock (``BEGIN IMMEDIATE``) from
    the moment it printed ``locked`` until a line arrives on its stdin; then it commits and exits."""
    path = tmp_path / "locks.db"
    url = f"sqlite:///{path}"
    child = textwrap.dedent(f"""
        import sqlite3, sys
        conn = sqlite3.connect({str(path)!r}, isolation_level=None, timeout=30)
        conn.execute("BEGIN IMMEDIATE")
        print("locked", flush=True)
        sys.stdin.readline()
        conn.execute("COMMIT")
    """)
    proc: subprocess.Popen[str] | None = None

    def start() -> subprocess.Popen[str]:
        nonlocal proc
        proc = subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield url, start
    if proc is not None:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def _unlock(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0


def test_database_locked_by_another_process_is_unavailable_within_timeout(locker: Locker,
                                                                           make_backend: Factory) -> None:
    url, start = locker
    backend = make_backend(url, timeout=1.0)
    backend.ensure_schema()
    assert backend.try_acquire("before", "h", 30).granted  # a pooled connection, busy_timeout 0
    proc = start()
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="database is locked"):
        backend.try_acquire("n", "h", 30)
    took = time.monotonic() - started
    assert 0.8 <= took < 1.0 + 1.5, took  # retried until the deadline, then gave up
    assert backend.inspect("before") is not None  # reads go on in WAL while a writer holds the lock
    _unlock(proc)
    assert backend.try_acquire("n", "h", 30).granted


def test_waiting_call_goes_through_when_the_other_process_commits(locker: Locker, make_backend: Factory) -> None:
    url, start = locker
    backend = make_backend(url, timeout=20.0)
    assert backend.inspect("n") is None  # a pooled connection (the file is in WAL mode from then on)
    proc = start()
    result: list[object] = []
    call = threading.Thread(target=lambda: result.append(backend.try_acquire("n", "h", 30)))
    call.start()
    call.join(0.3)
    assert call.is_alive() and not result  # retrying while the other process holds the lock
    _unlock(proc)
    call.join(30)
    assert not call.is_alive()
    assert len(result) == 1 and getattr(result[0], "granted", False)


def test_first_connection_waits_for_a_lock_taken_before_the_file_was_in_wal_mode(locker: Locker,
                                                                                make_backend: Factory) -> None:
    """The tables exist (created through the DDL engine, in the default journal mode) and another process
    holds the write lock when the first pooled connection switches the file to WAL: that switch waits
    within the call's deadline like any statement (SQLite itself does not wait for it)."""
    url, start = locker
    backend = make_backend(url, timeout=20.0)
    backend.ensure_schema()
    proc = start()
    result: list[object] = []
    call = threading.Thread(target=lambda: result.append(backend.try_acquire("n", "h", 30)))
    call.start()
    call.join(0.3)
    assert call.is_alive() and not result, result  # waiting for the lock, not failed at once
    _unlock(proc)
    call.join(30)
    assert not call.is_alive()
    assert len(result) == 1 and getattr(result[0], "granted", False), result
