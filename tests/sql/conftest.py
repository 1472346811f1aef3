"""Fixtures for tests/sql. The servers ``pg`` and ``maria`` are the session-wide ones in tests/conftest.py.

* ``sql_url``: parametrised over sqlite (a fresh file), postgresql and mariadb, for dialect-neutral tests.
* ``make_backend``: builds SQLBackends through the SPI and closes them at teardown.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl

import pytest
from lockapi_sql import SQLBackend

from lockapi.spi import BackendConfig, Options
from tests.servers.mariadb import MariaDBServer
from tests.servers.postgres import PostgresServer

DIALECTS = ["sqlite", "postgresql", "mariadb"]


@pytest.fixture(params=DIALECTS)
def sql_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A URL of each dialect (the servers start on first use)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'locks.db'}"
    server = request.getfixturevalue("pg" if request.param == "postgresql" else "maria")
    return str(server.url)


Factory = Callable[..., SQLBackend]


def backend_for(url: str, timeout: float = 10.0, **options: Any) -> SQLBackend:
    """An SQLBackend for ``url`` built straight through the SPI (as lockapi.connect would)."""
    base, _, query = url.partition("?")
    merged = {**dict(parse_qsl(query)), **options}
    scheme = base.split("://", 1)[0].split("+", 1)[0]
    return SQLBackend(BackendConfig(url=base, scheme=scheme, options=Options(merged), timeout=timeout))


def seeded(backend: SQLBackend) -> bool:
    """SQLite seeds fencing tokens from the database clock (so that a power loss never makes one repeat):
    its tokens go up but not one by one."""
    return backend.dialect.scheme == "sqlite"


@pytest.fixture
def make_backend() -> Iterator[Factory]:
    """Build backends with :func:`backend_for`; all are closed at teardown."""
    made: list[SQLBackend] = []

    def make(url: str, timeout: float = 10.0, **options: Any) -> SQLBackend:
        made.append(backend_for(url, timeout, **options))
        return made[-1]

    yield make
    for backend in made:
        backend.close()


@pytest.fixture
def prefix() -> str:
    """A table prefix of its own for one test (fresh, empty tables)."""
    return f"t{uuid.uuid4().hex[:10]}_"


@pytest.fixture
def name() -> str:
    return f"sql-test:{uuid.uuid4().hex}"


@pytest.fixture
def pg_url(pg: PostgresServer) -> str:
    return pg.url


@pytest.fixture
def maria_url(maria: MariaDBServer) -> str:
    return maria.url
