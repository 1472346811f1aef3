"""Schema: created on first use (also by several processes at once), table prefixes, create_schema=false."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from lockapi.errors import BackendUnavailable, ConfigError
from tests.sql.conftest import Factory

ROOT = Path(__file__).resolve().parents[2]


def tables(backend_engine: sa.Engine) -> set[str]:
    with backend_engine.connect() as conn:
        return set(sa.inspect(conn).get_table_names())


def test_schema_created_by_several_processes_at_once(sql_url: str, prefix: str, make_backend: Factory) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-m", "tests.sql.workers", "create", sql_url, prefix, f"n{i}"],
                         cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for i in range(4)
    ]
    try:
        for proc in procs:  # every child is up before any of them touches the database
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert [p.returncode for p in procs] == [0] * 4, results
    assert all(out.strip().isdigit() for out, _ in results), results  # each granted its own name
    backend = make_backend(sql_url, table_prefix=prefix)
    assert {f"{prefix}leases", f"{prefix}waiters", f"{prefix}done"} <= tables(backend.engine)
    assert all(backend.inspect(f"n{i}") is not None for i in range(4))


def test_table_prefixes_are_separate_lock_spaces(sql_url: str, prefix: str, make_backend: Factory,
                                                 name: str) -> None:
    first = make_backend(sql_url, table_prefix=prefix)
    second = make_backend(sql_url, table_prefix=prefix + "b_")
    assert first.try_acquire(name, "h1", 30).token is not None
    assert second.try_acquire(name, "h2", 30).token is not None, "another prefix is another set of tables"
    assert first.try_acquire(name, "h3", 30).token is None
    assert {f"{prefix}leases", f"{prefix}b_leases"} <= tables(first.engine)


def test_create_schema_false_uses_existing_tables_only(sql_url: str, prefix: str, make_backend: Factory,
                                                       name: str) -> None:
    lazy = make_backend(sql_url, table_prefix=prefix, create_schema="false")
    with pytest.raises(BackendUnavailable):
        lazy.try_acquire(name, "h1", 30)
    assert f"{prefix}leases" not in tables(lazy.engine)
    make_backend(sql_url, table_prefix=prefix).ensure_schema()
    assert lazy.try_acquire(name, "h1", 30).token is not None


@pytest.mark.parametrize("options", [
    {"table_prefix": "bad-prefix"}, {"table_prefix": "1x"}, {"table_prefix": "a" * 41},
    {"pool_size": "0"}, {"max_overflow": "-1"}, {"create_schema": "maybe"}, {"no_such_option": "1"},
])
def test_bad_options_fail_before_any_io(make_backend: Factory, options: dict[str, str]) -> None:
    # Port 1 on loopback: nothing listens, so any connection attempt would be BackendUnavailable.
    with pytest.raises(ConfigError):
        make_backend("postgresql://user:secret@127.0.0.1:1/db", **options)


def test_listen_is_a_postgresql_option(make_backend: Factory) -> None:
    with pytest.raises(ConfigError, match="listen"):
        make_backend("mysql://root@127.0.0.1:1/db", listen="false")
    assert make_backend("postgresql://root@127.0.0.1:1/db", listen="false").capabilities


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "postgresql+psycopg2://u@h/db",
                                 "mysql+mysqldb://u@h/db"])
def test_unsupported_urls_are_config_errors(make_backend: Factory, url: str) -> None:
    with pytest.raises(ConfigError):
        make_backend(url)


def test_default_embedded_path_is_created_on_first_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       make_backend: Factory, name: str) -> None:
    monkeypatch.chdir(tmp_path)
    backend = make_backend("sqlite:///lockapi.sqlite3")
    assert backend.try_acquire(name, "h", 30).token is not None
    assert (tmp_path / "lockapi.sqlite3").is_file()
    nested = make_backend(f"sqlite:///{tmp_path}/sub/dir/locks.db")
    assert nested.try_acquire(name, "h", 30).token is not None
    assert (tmp_path / "sub" / "dir" / "locks.db").is_file()
