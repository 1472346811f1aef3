"""End to end: Hazelcast (5.7, map mode) to Redis, with a fleet of worker processes rolled through every phase.

Real servers (tests/servers): one Hazelcast member for the module, Redis per test. The record store is a
SQLite file shared by the processes. Workers are configured only through ``LOCKAPI_*`` environment
variables, exactly like an application, and are restarted one at a time while the others keep working.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from lockapi_migration.fleet import PhaseConflict
from lockapi_migration.records.store import open_record_store
from lockapi_migration.tooling.classify import Verdict
from lockapi_migration.tooling.report import render_text, summarize

import lockapi
from lockapi import BackendUnavailable, LockManager
from lockapi.cli import main as lockapi_main
from tests.migration.conftest import backend_of
from tests.migration.workers import PER_GENERATION, Workers, assert_at_most
from tests.servers.common import free_port
from tests.servers.hazelcast import MAP_VERSION, HazelcastCluster, hazelcast_cluster
from tests.servers.redis import RedisServer, redis_server

PHASES = ["off", "shadow", "dual", "cutover", "done"]
WORKERS = 3
MAX_LAG = 5.0
"""The fleet's and the gate's max_lag. Not the 1 s default: replaying onto Hazelcast in cutover, the
Python client's reactor can lose a wake-up (its waker stays "awake" with an empty pipe), after which
every request waits out the 10 ms poll and the replay runs ~1 s behind on this machine. This test is
about correctness across the phases; tests/migration/test_lag.py covers the lag gate."""


@pytest.fixture(scope="module")
def hazelcast() -> Iterator[HazelcastCluster]:
    with hazelcast_cluster(MAP_VERSION, 1) as cluster:
        yield cluster


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


def _check(gate_ok: bool, *extra: str) -> None:
    code = lockapi_main(["migrate", "check", "--max-false-grants", "0", "--max-false-deny-rate", "0.05",
                         "--min-decisions", "20", "--max-error-rate", "0.01", "--max-lag", str(MAX_LAG), *extra])
    assert code == (0 if gate_ok else 1)


def test_fleet_moves_hazelcast_to_redis_without_downtime(
    hazelcast: HazelcastCluster, redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    record = f"sqlite:///{tmp_path / 'records.sqlite3'}"
    env = {"LOCKAPI_URL": hazelcast.url("map"), "LOCKAPI_MIGRATION_TARGET": redis.url,
           "LOCKAPI_MIGRATION_RECORD": record, "LOCKAPI_MIGRATION_MAX_LAG": str(MAX_LAG)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # for the in-process `lockapi migrate` commands
    workers = Workers(tmp_path, env)
    try:
        for worker in range(WORKERS):
            workers.start(worker, "off", 0)
        workers.wait_generation(0)
        for generation, phase in enumerate(PHASES[1:], start=1):
            previous = PHASES[generation - 1]
            if previous == "dual":
                _check(False)  # the done markers have not moved yet
                assert lockapi_main(["migrate", "backfill"]) == 0
            _check(True)
            skipped = PHASES[min(generation + 1, len(PHASES) - 1)] if generation < 4 else "shadow"
            with pytest.raises(PhaseConflict, match=rf"\({previous}\)"):
                _open(env, skipped)
            for worker in range(WORKERS):  # rolling restart; the others keep working meanwhile
                workers.stop(worker)
                workers.start(worker, phase, generation)
            workers.wait_generation(generation)
        assert lockapi_main(["migrate", "status"]) == 0
    finally:
        workers.stop_all()
    capsys.readouterr()

    events = workers.events()
    processed = Counter(e[0] for e in events.elements)
    assert [element for element, n in processed.items() if n > 1] == []  # none twice, gen-0 ones included
    assert len(processed) == PER_GENERATION * len(PHASES)
    assert_at_most(2, [(e[2], e[3]) for e in events.elements])  # the job semaphore held
    leader = sorted(events.leader, key=lambda x: x[1])
    assert_at_most(1, [(start, end) for _, start, end in leader])  # never two holders at once
    tokens = [token for token, _, _ in leader]
    assert tokens == sorted(set(tokens)), "leader tokens went backwards"
    store = open_record_store(record)
    try:
        summary = summarize(store.records())
    finally:
        store.close()
    print("\n" + render_text(summary))
    assert summary.false_grants == 0
    assert summary.decisions > 100
    assert summary.false_denies <= summary.acquire_decisions * 0.05
    assert set(summary.phases_seen) == {"shadow", "dual", "cutover"}


def _open(env: dict[str, str], phase: str) -> object:
    return lockapi.open_backend("migration://", {"source": env["LOCKAPI_URL"], "target": env[
        "LOCKAPI_MIGRATION_TARGET"], "phase": phase, "record": env["LOCKAPI_MIGRATION_RECORD"]})


def _node(hazelcast: HazelcastCluster, redis_url: str, phase: str, record: str) -> LockManager:
    backend = lockapi.open_backend("migration://", {
        "source": hazelcast.url("map"), "source_options": {"timeout": 2}, "target": redis_url, "phase": phase,
        "record": record, "heartbeat": 0.5})
    return LockManager(backend)


def test_shadow_with_r_stopped_the_app_sees_no_error(hazelcast: HazelcastCluster, redis: RedisServer,
                                                     tmp_path: Path) -> None:
    record = f"sqlite:///{tmp_path / 'records.sqlite3'}"
    with _node(hazelcast, f"{redis.url}?timeout=1", "shadow", record) as node:
        with node.acquire("fault:a", ttl=10):
            pass
        redis.stop()
        slowest = 0.0
        for i in range(10):
            started = time.monotonic()
            with node.acquire(f"fault:b{i}", ttl=10, wait=5):
                pass
            slowest = max(slowest, time.monotonic() - started)
        backend_of(node).flush()
        store = open_record_store(record)
        summary = summarize(store.records())
        store.close()
    assert summary.verdicts.get(Verdict.ERROR_R.value, 0) + summary.verdicts.get(Verdict.TIMEOUT_R.value, 0) >= 10
    assert any(e["side"] == "r" for e in summary.top_errors)
    assert slowest < 1.0, f"the caller waited {slowest:.3f}s while R was down"


def test_dual_fails_closed_when_either_backend_is_down(hazelcast: HazelcastCluster, redis: RedisServer,
                                                       tmp_path: Path) -> None:
    record = f"sqlite:///{tmp_path / 'records.sqlite3'}"
    with _node(hazelcast, f"{redis.url}?timeout=1", "dual", record) as node:
        assert node.try_acquire("dual:a", ttl=10) is not None
        redis.stop()
        with pytest.raises(BackendUnavailable):
            node.try_acquire("dual:b", ttl=10)
    with lockapi.connect(hazelcast.url("map")) as h:
        assert h.inspect("dual:b") is None  # H's grant was given back
    redis.start()
    dead_h = f"hazelcast://127.0.0.1:{free_port()}?cluster_name=nobody&mode=map&timeout=2"
    with pytest.raises(BackendUnavailable):
        backend = lockapi.open_backend("migration://", {"source": dead_h, "target": redis.url, "phase": "dual",
                                                       "record": record})
        with LockManager(backend) as node:
            node.try_acquire("dual:c", ttl=10)
    with lockapi.connect(redis.url) as r:
        assert r.inspect("dual:c") is None
