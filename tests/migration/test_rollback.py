"""The rollback drill, end to end: a fleet of application processes (SQLite H, Redis R) rolled forward to
cutover, then back one phase at a time - cutover -> dual -> shadow -> off - one process at a time while
the others keep working. Throughout: no element processed twice (done markers written in cutover are
honoured after the way back), never two leaders at once, leader tokens only up, the job semaphore held;
afterwards `lockapi migrate check` (default thresholds but the decision minimum) passes every phase visited."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from lockapi_migration.records.store import open_record_store
from lockapi_migration.tooling.report import summarize

from lockapi.cli import main as lockapi_main
from tests.migration.workers import PER_GENERATION, Workers, assert_at_most
from tests.servers.redis import RedisServer

WORKERS = 3
FORWARD = ["shadow", "dual", "cutover"]
BACK = ["dual", "shadow", "off"]


def test_rollback_drill_cutover_to_off_with_the_fleet_running(
        redis_standalone: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    record = f"sqlite:///{tmp_path / 'records.sqlite3'}"
    env = {"LOCKAPI_URL": f"sqlite:///{tmp_path / 'h.sqlite3'}",
           "LOCKAPI_MIGRATION_TARGET": f"{redis_standalone.url}/3", "LOCKAPI_MIGRATION_RECORD": record}
    monkeypatch.delenv("LOCKAPI_CONFIG", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # for the in-process `lockapi migrate` commands
    workers = Workers(tmp_path, env)
    phases = ["off", *FORWARD, *BACK]
    try:
        for worker in range(WORKERS):
            workers.start(worker, "off", 0)
        workers.wait_generation(0)
        for generation, phase in enumerate(phases[1:], start=1):
            if phase == "cutover":
                assert lockapi_main(["migrate", "backfill"]) == 0
            for worker in range(WORKERS):  # rolling restart; the others keep working meanwhile
                workers.stop(worker)
                workers.start(worker, phase, generation)
            workers.wait_generation(generation)
        assert lockapi_main(["migrate", "status"]) == 0
        assert "fleet phases: off" in capsys.readouterr().out
    finally:
        workers.stop_all()

    events = workers.events()
    processed = Counter(e[0] for e in events.elements)
    assert [element for element, n in processed.items() if n > 1] == []  # none twice, across the way back
    assert len(processed) == PER_GENERATION * len(phases)
    assert_at_most(2, [(e[2], e[3]) for e in events.elements])
    leader = sorted(events.leader, key=lambda x: x[1])
    assert_at_most(1, [(start, end) for _, start, end in leader])
    tokens = [token for token, _, _ in leader]
    assert tokens == sorted(set(tokens)), "leader tokens went backwards on the way back"
    store = open_record_store(record)
    try:
        summary = summarize(store.records())
    finally:
        store.close()
    print(f"\nrollback drill: {summary.verdicts}")
    assert summary.false_grants == 0
    assert {"shadow", "dual", "cutover"} <= set(summary.phases_seen)
    capsys.readouterr()
    for phase in ("shadow", "dual", "cutover"):  # the checker is clean for every phase the fleet went through
        code = lockapi_main(["migrate", "check", "--phase", phase, "--min-decisions", "1"])
        out = capsys.readouterr().out
        assert code == 0 and out.startswith(f"SAFE to advance from {phase}"), out
