"""``lockapi sql init URL`` and ``lockapi sql ddl URL``, through the registered argparse command."""

from __future__ import annotations

import argparse

import pytest
import sqlalchemy as sa
from lockapi_sql.cli import register

from tests.servers.common import free_port
from tests.sql.conftest import Factory


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lockapi")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


@pytest.mark.parametrize(("url", "marker"), [
    ("sqlite:///locks.db", "INTEGER NOT NULL"),
    ("postgresql://user:pw@db.example/locks", "BIGSERIAL"),
    ("mysql+pymysql://user:pw@db.example/locks", "ENGINE=InnoDB"),
    ("mariadb://user:pw@db.example/locks", "AUTO_INCREMENT"),
])
def test_ddl_prints_the_tables_without_connecting(capsys: pytest.CaptureFixture[str], url: str,
                                                  marker: str) -> None:
    assert run(["sql", "ddl", url + "?table_prefix=ops_"]) == 0
    out = capsys.readouterr().out
    for table in ("ops_leases", "ops_waiters", "ops_done"):
        assert f"CREATE TABLE {table} (" in out
    assert marker in out
    assert "PRIMARY KEY (name_hash, kind, slot)" in out
    assert "-- ALTER TABLE ops_leases ADD COLUMN waited_us BIGINT NOT NULL DEFAULT 0;" in out  # upgrades
    assert run(["sql", "ddl", url, "--table-prefix", "flag_"]) == 0
    assert "CREATE TABLE flag_leases" in capsys.readouterr().out


def test_init_creates_the_tables(sql_url: str, prefix: str, make_backend: Factory,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["sql", "init", sql_url, "--table-prefix", prefix]) == 0
    assert f"{prefix}leases" in capsys.readouterr().out
    backend = make_backend(sql_url, table_prefix=prefix, create_schema="false")
    with backend.engine.connect() as conn:
        names = set(sa.inspect(conn).get_table_names())
    assert {f"{prefix}leases", f"{prefix}waiters", f"{prefix}done"} <= names
    assert backend.try_acquire("after-init", "h", 30).token is not None
    assert run(["sql", "init", sql_url, "--table-prefix", prefix]) == 0, "init twice is fine"


def test_init_reports_errors_with_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["sql", "init", f"postgresql://u:topsecret@127.0.0.1:{free_port()}/db", "--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert "topsecret" not in err and "u:***@" in err
    assert run(["sql", "init", "sqlite:///x.db?table_prefix=no-dashes"]) == 2
    assert run(["sql", "ddl", "sqlite:///x.db?bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err
