"""SQLite's page size (issue 14): a database file the backend creates gets SQLite.PAGE_SIZE pages (each
commit writes its changed page whole to the WAL: smaller pages, less work per acquire and release); a
file created beforehand with another page size keeps it and works as before."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from lockapi_sql.dialects import SQLite

import lockapi


def _page_size(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()


def test_a_database_the_backend_creates_has_small_pages(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    with lockapi.connect(f"sqlite:///{path}") as mgr:
        lease = mgr.try_acquire("pages", ttl=30)
        assert lease is not None and lease.release()
    assert SQLite.PAGE_SIZE < 4096
    assert _page_size(path) == SQLite.PAGE_SIZE


def test_a_long_name_spills_into_overflow_pages_and_locks_as_any(tmp_path: Path) -> None:
    path = tmp_path / "long.db"
    name = "n" * 1024  # longer than a page's local payload: the row's name spills
    with lockapi.connect(f"sqlite:///{path}") as mgr:
        lease = mgr.try_acquire(name, ttl=30)
        assert lease is not None
        assert mgr.try_acquire(name, ttl=30) is None
        info = mgr.inspect(name)
        assert info is not None and info.token == lease.token
        assert lease.release()
        again = mgr.try_acquire(name, ttl=30)
        assert again is not None and again.token > lease.token and again.release()
    assert _page_size(path) == SQLite.PAGE_SIZE


def test_a_database_created_with_other_pages_keeps_them_and_works(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA page_size = 4096")
    conn.execute("CREATE TABLE unrelated (x INTEGER)")  # the file exists with 4096-byte pages
    conn.close()
    with lockapi.connect(f"sqlite:///{path}") as mgr:
        first = mgr.try_acquire("pages", ttl=30)
        assert first is not None and first.release()
        second = mgr.try_acquire("pages", ttl=30)
        assert second is not None and second.token > first.token and second.release()
    assert _page_size(path) == 4096
