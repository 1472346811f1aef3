"""Migration: the checker in every phase, R down in shadow, one backend down in dual.

H (the source) is a SQLite file, R (the target) a Redis server, decision records a second SQLite file.
The migration is configured the way an application does it, through ``$LOCKAPI_MIGRATION_*`` (the
checker's spawned workers inherit the environment).

Expected: in every phase 8 processes see no overlap, no lost update and increasing tokens; in shadow
with R unreachable the application sees no error and the migration report counts R's errors; in dual
with either backend unreachable, acquires fail closed (BackendUnavailable, never a grant).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lockapi
from lockapi import BackendUnavailable, LockError
from tests.reliability.checker import run_checker
from tests.servers.common import free_port
from tests.servers.redis import RedisServer

PHASES = ["off", "shadow", "dual", "cutover", "done"]


@pytest.fixture
def migration_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.delenv("LOCKAPI_URL", raising=False)
    monkeypatch.delenv("LOCKAPI_CONFIG", raising=False)
    monkeypatch.setenv("LOCKAPI_MIGRATION_RECORD", f"sqlite:///{tmp_path / 'records.db'}")
    yield monkeypatch


@pytest.mark.parametrize("phase", PHASES)
def test_checker_in_every_phase(phase: str, migration_env: pytest.MonkeyPatch, redis_standalone: RedisServer,
                                name: str, tmp_path: Path) -> None:
    migration_env.setenv("LOCKAPI_MIGRATION_TARGET", redis_standalone.url)
    migration_env.setenv("LOCKAPI_MIGRATION_PHASE", phase)
    source = f"sqlite:///{tmp_path / 'h.db'}"
    with lockapi.connect(source) as mgr:  # warm the backends; the record-store race has its own test below
        mgr.try_acquire(f"{name}:warm-up")
    # 4 processes on the 2 cores interleave as much as 8 did; spawning each is what costs (~2 s)
    verdict = run_checker(source, {}, tmp_path / "checker", name=name, workers=4, rounds=20)
    print(f"\nchecker in phase {phase}: {len(verdict.grants)} grants, {verdict.rate:.0f}/s")
    assert verdict.problems(expected_grants=80) == []
    assert verdict.record["rejected"] == 0


def _connect_to_each_store(source: str, records: list[str], together: Any, results: Any) -> None:
    """For each fresh record store in turn: wait until every process is at ``together`` (a barrier),
    then connect (which opens the store) and report "ok" or the error."""
    for record in records:
        together.wait(120)
        os.environ["LOCKAPI_MIGRATION_RECORD"] = record  # read at connect time
        try:
            with lockapi.connect(source) as mgr:
                mgr.ping()
        except Exception as exc:
            results.put((record, repr(exc)))
        else:
            results.put((record, "ok"))


def test_many_processes_open_a_fresh_record_store_at_once(migration_env: pytest.MonkeyPatch,
                                                          redis_standalone: RedisServer, tmp_path: Path) -> None:
    """8 processes open each of 3 fresh record stores at the same moment (a barrier per store): the
    schema creation race. The processes are spawned once (spawning is what took the time)."""
    from tests.children import CHILDREN

    migration_env.setenv("LOCKAPI_MIGRATION_TARGET", redis_standalone.url)
    migration_env.setenv("LOCKAPI_MIGRATION_PHASE", "shadow")
    records = [f"sqlite:///{tmp_path / f'records{attempt}.db'}" for attempt in range(3)]
    together, results = CHILDREN.Barrier(8), CHILDREN.Queue()
    procs = [CHILDREN.Process(target=_connect_to_each_store,
                           args=(f"sqlite:///{tmp_path / 'h.db'}", records, together, results))
             for _ in range(8)]
    for proc in procs:
        proc.start()
    outcomes = sorted(results.get(timeout=180) for _ in range(24))
    for proc in procs:
        proc.join(120)
    assert outcomes == sorted((record, "ok") for record in records for _ in range(8)), outcomes
    assert [proc.exitcode for proc in procs] == [0] * 8


def test_r_down_in_shadow_is_invisible_and_counted(migration_env: pytest.MonkeyPatch, name: str,
                                                   tmp_path: Path) -> None:
    from lockapi_migration.records.store import open_record_store
    from lockapi_migration.tooling.report import summarize

    migration_env.setenv("LOCKAPI_MIGRATION_TARGET", f"redis://127.0.0.1:{free_port()}")  # nothing there
    migration_env.setenv("LOCKAPI_MIGRATION_PHASE", "shadow")
    with lockapi.connect(f"sqlite:///{tmp_path / 'h.db'}") as mgr:
        for i in range(10):
            lease = mgr.acquire(f"{name}:{i}", ttl=30, wait=1)
            assert lease.token > 0
            assert lease.release() is True
        assert mgr.try_acquire(name) is not None
        mgr.backend.flush(30)  # type: ignore[attr-defined]
        stats = mgr.backend.stats()  # type: ignore[attr-defined]
    store = open_record_store(f"sqlite:///{tmp_path / 'records.db'}")
    summary = summarize(list(store.records()))
    print(f"\nshadow with R down: stats {stats}; report errors {summary.errors} of {summary.records} records")
    assert summary.errors > 0, f"the report counted no R errors: {summary.verdicts}"
    assert summary.false_grants == 0


@pytest.mark.parametrize("down", ["h", "r"])
def test_one_backend_down_in_dual_fails_closed(down: str, migration_env: pytest.MonkeyPatch,
                                               redis_standalone: RedisServer, name: str, tmp_path: Path) -> None:
    # connect()'s timeout bounds every call, whichever side is down (the target inherits it: it once took
    # its own default of 5 s, so each call below waited 5 s for a dead R)
    dead_redis = f"redis://127.0.0.1:{free_port()}"
    source = f"sqlite:///{tmp_path / 'h.db'}" if down == "r" else dead_redis
    target = dead_redis if down == "r" else redis_standalone.url
    migration_env.setenv("LOCKAPI_MIGRATION_TARGET", target)
    migration_env.setenv("LOCKAPI_MIGRATION_PHASE", "dual")
    outcomes, took = [], []
    with lockapi.connect(source, timeout=1) as mgr:
        for i in range(5):
            started = time.monotonic()
            try:
                lease = mgr.acquire(f"{name}:{i}", ttl=30, wait=1)
                outcomes.append(f"GRANTED token {lease.token}")
            except LockError as exc:
                outcomes.append(type(exc).__name__)
            took.append(time.monotonic() - started)
        started = time.monotonic()
        try:
            got = mgr.try_acquire(name)
            outcomes.append("GRANTED" if got is not None else "denied")
        except LockError as exc:
            outcomes.append(type(exc).__name__)
        took.append(time.monotonic() - started)
    print(f"\ndual with {down.upper()} down: {outcomes}, seconds {[round(t, 2) for t in took]}")
    assert all(o == BackendUnavailable.__name__ for o in outcomes), outcomes
    # wait (1 s) + timeout (1 s) + a generous margin for a loaded machine; the side's own default is 5 s
    assert max(took) < 4.0, f"a call outlived connect()'s timeout: {took}"
