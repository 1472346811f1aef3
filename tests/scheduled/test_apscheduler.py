"""APScheduler 3 with real scheduler processes: a job added to three schedulers runs once per trigger."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

import lockapi
from lockapi.integrations.apscheduler import LockedExecutor, trigger_key

ROOT = Path(__file__).resolve().parents[2]
COUNT, INTERVAL = 4, 1.0


def run_schedulers(url: str, log: Path, mode: str, processes: int = 3) -> list[str]:
    prefix = f"aps-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "tests.scheduled.aps_worker", url, str(log), prefix,
                               str(COUNT), str(INTERVAL), mode], cwd=ROOT, env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
             for _ in range(processes)]
    try:
        for p in procs:  # every process has imported lockapi and APScheduler: no start-up race
            assert p.stdout is not None and p.stdout.readline().strip() == "ready", "a scheduler did not start"
        start = time.time() + 1.0  # time for each to add the job and start its scheduler
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(f"{start}\n")
            p.stdin.close()
        codes = [p.wait(COUNT * INTERVAL + 120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert codes == [0] * processes
    return log.read_text().splitlines()


def test_three_schedulers_run_each_trigger_once(shared_url: str, tmp_path: Path) -> None:
    lines = run_schedulers(shared_url, tmp_path / "log", "trigger")
    keys = Counter(line.split()[1] for line in lines)
    assert len(keys) == COUNT, f"not every trigger ran: {sorted(keys)}"
    assert set(keys.values()) == {1}, f"a trigger ran twice: {keys}"


def test_three_schedulers_with_one_lock_per_job_and_at_least(shared_url: str, tmp_path: Path) -> None:
    lines = run_schedulers(shared_url, tmp_path / "log", "window")
    times = sorted(float(line.split()[2]) for line in lines)
    assert len(times) == COUNT, f"{len(times)} executions for {COUNT} triggers"
    assert all(b - a > INTERVAL / 2 for a, b in itertools.pairwise(times))


def test_trigger_keys_are_the_same_on_every_scheduler() -> None:
    when = datetime(2026, 12, 2, 2, 0, tzinfo=timezone(timedelta(hours=1)))
    assert trigger_key(when) == trigger_key(when.astimezone(UTC)) == "2026-12-02T01:00:00+00:00"


def test_bad_settings_are_rejected_before_io() -> None:
    with pytest.raises(lockapi.InvalidArgument):
        LockedExecutor(url="sqlite:////nonexistent/dir/x.db", at_most=10, at_least=20)
    with pytest.raises(lockapi.InvalidArgument):
        LockedExecutor(url="sqlite:////nonexistent/dir/x.db", prefix="")
