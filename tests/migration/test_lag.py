"""Bounded lag: a shadow target too slow for the load. The replay sheds what it cannot compare in time
("stale, not compared", never counted as agreement), the lag per minute is recorded, and the alarm is
raised in the log, in `lockapi migrate status` and at the top of the report.

H is a SQLite file, R a real Redis server kept busy by Lua scripts that block it for 300 ms at a time,
longer than the node's ``max_lag`` of 0.2 s (a slow target, not a mock): since the replay sends what is
queued in one round trip, shorter blocks no longer make it fall behind. The replay runs in its worker
process, as in production.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from lockapi_migration.backend import MigrationBackend
from lockapi_migration.replay.lag import alarming
from lockapi_migration.replay.process import ProcessReplay
from lockapi_migration.tooling.classify import Verdict

import lockapi
from lockapi.cli import main as lockapi_main
from tests.servers.redis import RedisServer

BUSY = """
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
repeat local n = redis.call('TIME') until (n[1] * 1000000 + n[2]) - start > tonumber(ARGV[1])
return 1
"""


def test_a_slow_target_is_shed_as_stale_and_raises_the_lag_alarm(
        redis_standalone: RedisServer, tmp_path: Path, capfd: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    record = f"sqlite:///{tmp_path / 'records.db'}"
    source = f"sqlite:///{tmp_path / 'h.db'}"
    backend = lockapi.open_backend("migration://", {
        "source": source, "target": redis_standalone.url, "phase": "shadow", "record": record,
        "node": "slow-target", "max_lag": 0.2})
    assert isinstance(backend, MigrationBackend) and isinstance(backend.queue, ProcessReplay)
    stop = threading.Event()
    busy_client = redis_standalone.client()

    def keep_redis_busy() -> None:
        while not stop.is_set():
            busy_client.eval(BUSY, 0, 300_000)

    slower = threading.Thread(target=keep_redis_busy, daemon=True)
    with lockapi.LockManager(backend, url="slow") as mgr:
        slower.start()
        try:
            for i in range(1500):  # enough load to outrun the slowed target (the SQLite source is fast)
                lease = mgr.try_acquire(f"slow:{i % 10}", ttl=30)
                assert lease is not None and lease.release()  # the application never waits for R
        finally:
            stop.set()
            slower.join(10)
        backend.flush(60)
        worker_log = capfd.readouterr().err
        monkeypatch.delenv("LOCKAPI_CONFIG", raising=False)
        monkeypatch.setenv("LOCKAPI_URL", source)
        monkeypatch.setenv("LOCKAPI_MIGRATION_TARGET", redis_standalone.url)
        monkeypatch.setenv("LOCKAPI_MIGRATION_RECORD", record)
        capfd.readouterr()
        assert lockapi_main(["migrate", "status"]) == 0
        status = capfd.readouterr().out
    assert "LAG ALARM" in status and "slow-target/" in status, status
    from lockapi_migration.records.store import open_record_store
    from lockapi_migration.tooling.report import summarize

    store = open_record_store(record)
    try:
        records = list(store.records())
        samples = store.lag()
    finally:
        store.close()
    summary = summarize(records, max_lag=0.2, lag=samples)
    print(f"\nslow target: {summary.verdicts}; lag samples {samples}")
    assert summary.verdicts.get(Verdict.STALE.value, 0) > 0, summary.verdicts
    assert any(alarming(s) and s.stale > 0 and s.max > 0.2 for s in samples), samples
    assert summary.lag_alarm
    assert summary.false_grants == 0 and summary.false_denies == 0  # stale replays are not compared
    capfd.readouterr()
    assert lockapi_main(["migrate", "report", "--phase", "shadow"]) == 0
    report = capfd.readouterr()
    assert report.out.splitlines()[0].startswith("NOT SAFE to advance from shadow"), report.out
    assert "stale, not compared" in report.out and "LAG ALARM" in report.out
    assert "LAG ALARM on slow-target/" in worker_log  # the worker's warning (its stderr is the application's)


@pytest.mark.parametrize("nice", [None, 0, 5])
def test_the_replay_worker_runs_at_a_lower_priority(redis_standalone: RedisServer, tmp_path: Path,
                                                    nice: int | None) -> None:
    """The shadow's replay is background work: its process is niced (``replay_nice``, default 10) so that
    the application's process gets the CPU first on a busy machine; 0 keeps the caller's priority."""
    options: dict[str, object] = {
        "source": f"sqlite:///{tmp_path / 'h.db'}", "target": redis_standalone.url, "phase": "shadow",
        "record": f"sqlite:///{tmp_path / 'records.db'}"}
    if nice is not None:
        options["replay_nice"] = nice
    backend = lockapi.open_backend("migration://", options)
    try:
        assert isinstance(backend, MigrationBackend) and isinstance(backend.queue, ProcessReplay)
        worker = backend.queue._proc.pid
        expected = os.getpriority(os.PRIO_PROCESS, 0) + (10 if nice is None else nice)
        assert os.getpriority(os.PRIO_PROCESS, worker) == min(expected, 19)
    finally:
        backend.close()
