"""lockapi's conformance suite on each SQL dialect, against real servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockapi.testing import LockConformance
from tests.servers.mariadb import MariaDBServer
from tests.servers.postgres import PostgresServer


class TestSQLiteConformance(LockConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def lock_url(cls, tmp_path_factory: pytest.TempPathFactory) -> str:
        path: Path = tmp_path_factory.mktemp("sqlite-conformance") / "locks.db"
        return f"sqlite:///{path}"


class TestPostgresConformance(LockConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def lock_url(cls, pg: PostgresServer) -> str:
        return pg.url


class TestMariaDBConformance(LockConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def lock_url(cls, maria: MariaDBServer) -> str:
        return maria.url
