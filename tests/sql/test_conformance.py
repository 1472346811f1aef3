"""lockapi's conformance suite on each SQL dialect, against real servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockapi.testing import LockConformance
from tests.conformance import Conformance
from tests.servers.mariadb import MariaDBServer
from tests.servers.postgres import PostgresServer


class TestSQLiteConformance(LockConformance):
    """Keeps the suite's default process context ("spawn"): the run a third-party backend gets."""

    @pytest.fixture(scope="class")
    @classmethod
    def lock_url(cls, tmp_path_factory: pytest.TempPathFactory) -> str:
        path: Path = tmp_path_factory.mktemp("sqlite-conformance") / "locks.db"
        return f"sqlite:///{path}"


class TestPostgresConformance(Conformance):
    @pytest.fixture(scope="class")
    @classmethod
    def lock_url(cls, pg: PostgresServer) -> str:
        return pg.url


class TestMariaDBConformance(Conformance):
    @pytest.fixture(scope="class")
    @classmethod
    def lock_url(cls, maria: MariaDBServer) -> str:
        return maria.url
