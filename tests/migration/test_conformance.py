"""The conformance suite (LockConformance, with the pause-point interleaving walk) on ``migration://``
in every phase over memory stores, and in dual over SQLite (H) -> Redis (R).

Each ``manager``/``other`` is its own migrating node (its own registry entry, records in a SQLite
record store), as two application servers would be.
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from pathlib import Path
from typing import Any

import pytest

from lockapi import BackendUnavailable, LockManager, LockTimeout
from lockapi.testing import LockConformance
from tests.servers.redis import RedisServer

HALF_EXTENDED = ("extend:h-extended", "permit_extend:h-extended")


class _TwoBackendLease(LockConformance):
    """Dual: a lease is two leases, and a holder stopped between extending the first and the second has
    a third outcome the single-backend walk does not allow: B is kept out by the side A extended while
    the other side lapses; when A resumes, its extend returns False (the lease is lost) and it gives the
    extended side back AT ONCE. Those two points get this scenario; the shared walk covers the rest."""

    def _points(self, manager: LockManager, *operations: str) -> list[str]:
        return [p for p in super()._points(manager, *operations) if p not in HALF_EXTENDED]

    @pytest.mark.parametrize("point", HALF_EXTENDED)
    def test_pause_between_the_two_extends(self, manager: LockManager, other: LockManager, name: str,
                                           point: str) -> None:
        semaphore = point.startswith("permit_")
        take: Any = (manager.semaphore(name, 1).acquire if semaphore else functools.partial(manager.acquire, name))
        compete: Any = (other.semaphore(name, 1).acquire if semaphore else functools.partial(other.acquire, name))
        a = take(ttl=self.short_ttl)
        b = None
        with self._paused(point, functools.partial(a.extend, 30)) as (run, _), contextlib.suppress(LockTimeout):
            b = compete(ttl=30, wait=self._expiry_wait())
        try:
            extended = run.outcome(self._resume_timeout(manager))
        except BackendUnavailable:
            extended = None
        if b is not None:  # both sides lapsed before B's wait ended: the single-backend outcome
            assert extended is not True, f"{point}: A's extend returned True while B holds"
            assert a.is_held() is False and b.is_held() and b.release()
            return
        if extended:  # the second extend landed in time: A holds both
            assert a.is_held() and a.release(), point
            return
        assert a.is_held() is False and a.extend() is False, f"{point}: a half-extended lease still stands"
        c = compete(ttl=30, wait=0)  # the extended side was given back at once: free for the next holder
        assert c.release(), point


class _MemoryMigration(LockConformance):
    phase = "off"
    short_ttl = 0.5
    margin = 1.0

    @pytest.fixture
    def lock_url(self) -> str:
        return "migration://"

    @pytest.fixture
    def lock_options(self, tmp_path: Path) -> dict[str, Any]:
        tag = uuid.uuid4().hex[:10]
        return {"source": f"memory://h-{tag}", "target": f"memory://r-{tag}", "phase": self.phase,
                "record": f"sqlite:///{tmp_path / 'records.db'}", "heartbeat": 0.5}


class TestOffConformance(_MemoryMigration):
    phase = "off"


class TestShadowConformance(_MemoryMigration):
    phase = "shadow"


class TestDualConformance(_TwoBackendLease, _MemoryMigration):
    phase = "dual"


class TestCutoverConformance(_MemoryMigration):
    phase = "cutover"


class TestDoneConformance(_MemoryMigration):
    phase = "done"


class TestDualSQLiteToRedisConformance(_TwoBackendLease):
    short_ttl = 1.0

    @pytest.fixture
    def lock_url(self) -> str:
        return "migration://"

    @pytest.fixture
    def lock_options(self, tmp_path: Path, redis_standalone: RedisServer) -> dict[str, Any]:
        return {"source": f"sqlite:///{tmp_path / 'h.db'}", "target": redis_standalone.url, "phase": "dual",
                "record": f"sqlite:///{tmp_path / 'records.db'}", "heartbeat": 0.5}
