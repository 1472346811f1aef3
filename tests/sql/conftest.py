"""Real database servers for tests/sql, each started once per test session and stopped after.

* ``postgres_server``: PostgreSQL from /usr/lib/postgresql/<major>/bin, run as the postgres user.
* ``mariadb_server``: MariaDB from mariadb-install-db + mariadbd.
* ``sql_url``: parametrised over sqlite (a fresh file), postgresql and mariadb, for dialect-neutral tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers.mariadb import MariaDBServer, mariadb_server
from tests.servers.postgres import PostgresServer, postgres_server

DIALECTS = ["sqlite", "postgresql", "mariadb"]


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def maria() -> Iterator[MariaDBServer]:
    with mariadb_server() as server:
        yield server


@pytest.fixture(params=DIALECTS)
def sql_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A URL of each dialect (the servers start on first use)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'locks.db'}"
    server = request.getfixturevalue("pg" if request.param == "postgresql" else "maria")
    return str(server.url)
