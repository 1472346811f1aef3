"""Fixtures for tests/scheduled: a lock store that several processes share, on SQLite and on Redis.

``shared_url`` is parametrised over a fresh SQLite file and the session Redis server (``redis_standalone``
in tests/conftest.py, started on first use). ``manager`` is a LockManager on it (another "host").
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

import lockapi


@pytest.fixture(params=["sqlite", "redis"])
def shared_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('scheduled') / 'locks.db'}"
    server = request.getfixturevalue("redis_standalone")
    return str(server.url)


@pytest.fixture
def manager(shared_url: str) -> Iterator[lockapi.LockManager]:
    with lockapi.connect(shared_url) as mgr:
        yield mgr


@pytest.fixture
def lock_name() -> str:
    return f"nightly-{uuid.uuid4().hex[:12]}"
