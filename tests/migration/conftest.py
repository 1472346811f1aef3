"""Fixtures for the migration tests: fresh memory:// store pairs (H, R) and a SQLite record store.

``Fleet.node(phase)`` opens a migrating LockManager the way ``lockapi.connect()`` would, with a short
heartbeat so registry tests do not wait; every node is closed at the end of the test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lockapi_migration.backend import MigrationBackend
from lockapi_migration.records.model import Record
from lockapi_migration.records.store import RecordStore, open_record_store

import lockapi
from lockapi import LockManager


class Fleet:
    """H and R stores unique to one test, a record store, and the nodes opened on them."""

    def __init__(self, folder: Path) -> None:
        tag = uuid.uuid4().hex[:10]
        self.h_url = f"memory://h-{tag}"
        self.r_url = f"memory://r-{tag}"
        self.record = f"sqlite:///{folder / 'records.sqlite3'}"
        self.managers: list[LockManager] = []
        self._count = 0

    def options(self, phase: str, **extra: Any) -> dict[str, Any]:
        self._count += 1
        return {"source": self.h_url, "source_options": {}, "target": self.r_url, "phase": phase,
                "record": self.record, "node": f"node-{self._count}", "heartbeat": 0.2, "live_after": 5.0,
                **extra}

    def node(self, phase: str, **extra: Any) -> LockManager:
        backend = lockapi.open_backend("migration://", self.options(phase, **extra))
        mgr = LockManager(backend, url=f"migration-{phase}")
        self.managers.append(mgr)
        return mgr

    def h(self) -> LockManager:
        """A plain (non-migrating) connection to H, e.g. an app still on the old configuration."""
        mgr = lockapi.connect(self.h_url)
        self.managers.append(mgr)
        return mgr

    def r(self) -> LockManager:
        mgr = lockapi.connect(self.r_url)
        self.managers.append(mgr)
        return mgr

    def records(self) -> list[Record]:
        """Every record so far (after flushing every open node)."""
        for mgr in self.managers:
            if isinstance(mgr.backend, MigrationBackend):
                mgr.backend.flush()
        store = self.store()
        try:
            return list(store.records())
        finally:
            store.close()

    def store(self) -> RecordStore:
        return open_record_store(self.record)

    def close(self) -> None:
        for mgr in reversed(self.managers):
            mgr.close()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    try:
        yield f
    finally:
        f.close()


def backend_of(mgr: LockManager) -> MigrationBackend:
    backend = mgr.backend
    assert isinstance(backend, MigrationBackend)
    return backend
