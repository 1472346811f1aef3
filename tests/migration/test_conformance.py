"""The conformance suite (LockConformance, with the pause-point interleaving walk) on ``migration://``
in every phase over memory stores (dual: SQLite H -> memory R), and in dual over SQLite (H) -> Redis (R).

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

import lockapi
from lockapi import BackendUnavailable, LockManager, LockTimeout
from tests.conformance import Conformance
from tests.servers.redis import RedisServer

HALF_EXTENDED = ("extend:h-extended", "permit_extend:h-extended")
R_BEHIND = ("acquire:r-behind", "acquire:r-floored", "permit_acquire:r-behind", "permit_acquire:r-floored")
"""The points of dual's re-floor path: passed when R's grant came back below H's token."""


def _h_ahead(source: str, name: str) -> None:
    """Move H's counters for ``name`` (lock and semaphore) far above R's, through a plain connection to
    H, so the next dual acquire of ``name`` takes the re-floor path (R's low grant given back, R floored,
    R asked again)."""
    h = lockapi.open_backend(source, {})
    try:
        for semaphore in (False, True):
            h.set_fence_floor(name, 1 << 60, semaphore=semaphore)
    finally:
        h.close()


class _TwoBackendLease(Conformance):
    # Dual's re-floor path runs only while R's counter is behind H's for the name. The declaration check
    # moves H ahead for its workload's names first, so every declared point is passed.
    """Dual: a lease is two leases, and a holder stopped between extending the first and the second has
    a third outcome the single-backend walk does not allow: B is kept out by the side A extended while
    the other side lapses; when A resumes, its extend returns False (the lease is lost) and it gives the
    extended side back AT ONCE. Those two points get this scenario; the shared walk covers the rest."""

    def _points(self, manager: LockManager, *operations: str) -> list[str]:
        return [p for p in super()._points(manager, *operations) if p not in HALF_EXTENDED]

    def test_pause_points_are_declared(self, manager: LockManager, other: LockManager, name: str,
                                       lock_options: dict[str, Any]) -> None:
        _h_ahead(lock_options["source"], name)
        super().test_pause_points_are_declared(manager, other, name)

    @pytest.mark.parametrize("point", HALF_EXTENDED)
    def test_pause_between_the_two_extends(self, manager: LockManager, other: LockManager, name: str,
                                           point: str) -> None:
        semaphore = point.startswith("permit_")
        take: Any = (manager.semaphore(name, 1).acquire if semaphore else functools.partial(manager.acquire, name))
        compete: Any = (other.semaphore(name, 1).acquire if semaphore else functools.partial(other.acquire, name))
        a = take(ttl=self.short_ttl)
        b = None
        # B waits until A's unextended side has surely lapsed (short_ttl), plus the margin: the extended
        # side keeps it out for 30 s, so a longer wait (the walk's _expiry_wait) only adds idle seconds.
        with self._paused(point, functools.partial(a.extend, 30)) as (run, _), contextlib.suppress(LockTimeout):
            b = compete(ttl=30, wait=self.short_ttl + self.margin + 1)
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


class _MemoryMigration(Conformance):
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
    """Dual over SQLite (H) -> memory (R): H seeds its tokens from the clock (about 2**50), R starts at 1,
    so every fresh name of the walk takes the re-floor path and its points are walked too."""

    phase = "dual"

    @pytest.fixture
    def lock_options(self, tmp_path: Path) -> dict[str, Any]:
        return {"source": f"sqlite:///{tmp_path / 'h.db'}", "target": f"memory://r-{uuid.uuid4().hex[:10]}",
                "phase": self.phase, "record": f"sqlite:///{tmp_path / 'records.db'}", "heartbeat": 0.5}


class TestCutoverConformance(_MemoryMigration):
    phase = "cutover"


class TestDoneConformance(_MemoryMigration):
    phase = "done"


class TestDualSQLiteToRedisConformance(_TwoBackendLease):
    """Both seed tokens from their clocks, so whether R comes back behind H on a fresh name is not known
    in advance: the re-floor points are walked by TestDualConformance (the path is the strategy's own,
    whatever the backends) and only passed here (the declaration check)."""

    short_ttl = 1.0

    def _points(self, manager: LockManager, *operations: str) -> list[str]:
        return [p for p in super()._points(manager, *operations) if p not in R_BEHIND]

    @pytest.fixture
    def lock_url(self) -> str:
        return "migration://"

    @pytest.fixture
    def lock_options(self, tmp_path: Path, redis_standalone: RedisServer) -> dict[str, Any]:
        return {"source": f"sqlite:///{tmp_path / 'h.db'}", "target": redis_standalone.url, "phase": "dual",
                "record": f"sqlite:///{tmp_path / 'records.db'}", "heartbeat": 0.5}
