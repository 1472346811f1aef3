"""Exactly-once through the job API under random SIGKILL / SIGSTOP of workers, on every shared backend.

Four worker processes share 400 elements of one job with short ttls (see tests/reliability/exactly_once.py
for the fenced ledger and what counts as a bug). The test injects a fault every few hundred milliseconds:
SIGKILL (the worker is replaced by a new one) or SIGSTOP for longer than the ttl, then SIGCONT at its due
time while the faults go on (a kill or stop of another worker may fall inside a stop). A worker may be
stopped inside the ledger's flock, so the test itself never takes it while anyone is stopped.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lockapi
from lockapi import Job
from tests.children import CHILDREN
from tests.reliability.exactly_once import JOB, Fault, Ledger, problems, worker
from tests.reliability.targets import Target

ELEMENTS = 400
WORKERS = 4
FAULTS = 12


@pytest.fixture
def pool() -> Iterator[list[Any]]:
    """Worker processes the test started; any still alive at the end are resumed, killed and reaped."""
    procs: list[Any] = []
    yield procs
    for proc in procs:
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.join(30)


def test_every_element_is_processed_once_under_kills_and_pauses(
    server_target: Target, tmp_path: Path, pool: list[Any]
) -> None:
    t = server_target
    ttl = 1.0 + t.margin / 2
    ledger = Ledger(tmp_path / "ledger.json").create([f"e{i:03}" for i in range(ELEMENTS)])
    rng = random.Random(int(os.environ.get("LOCKAPI_CHAOS_SEED", "1313")))
    seeds = iter(range(10_000))

    def start() -> Any:
        proc = CHILDREN.Process(target=worker, args=(t.url, t.options, str(ledger.path), ttl, next(seeds)))
        proc.start()
        pool.append(proc)
        return proc

    live = [start() for _ in range(WORKERS)]
    faults: list[Fault] = []
    stopped: dict[Any, tuple[int, float]] = {}
    """Workers under SIGSTOP: when it was sent (monotonic ns) and when SIGCONT is due (monotonic s)."""

    def resume(proc: Any) -> None:
        started, _ = stopped.pop(proc)
        os.kill(proc.pid, signal.SIGCONT)
        faults.append(Fault(proc.pid, started, time.monotonic_ns()))

    injected = 0
    deadline = time.monotonic() + 200  # within the test's timeout (300 s), so a stuck run explains itself
    while injected < FAULTS and ledger.pending():  # never ledger.uncommitted() here: see pending()
        assert time.monotonic() < deadline, "the chaos phase did not finish"
        time.sleep(rng.uniform(0.2, 0.5))
        for proc, (_, due) in list(stopped.items()):
            if time.monotonic() >= due:
                resume(proc)
        running = [proc for proc in live if proc.is_alive() and proc not in stopped]
        if not running:
            if not stopped:
                break  # every worker found nothing left to do
            continue  # all stopped: the next fault waits for one to be resumed
        victim = rng.choice(running)
        injected += 1
        if rng.random() < 0.5:
            started = time.monotonic_ns()
            os.kill(victim.pid, signal.SIGKILL)
            victim.join(30)
            faults.append(Fault(victim.pid, started, None))
            live[live.index(victim)] = start()
        else:
            # The fault under test: stopped past its ttl. The faults go on meanwhile (a kill or a stop of
            # another worker may fall inside this one), and SIGCONT comes at the due time.
            stopped[victim] = (time.monotonic_ns(), time.monotonic() + rng.uniform(1.5, 2.5) * ttl)
            os.kill(victim.pid, signal.SIGSTOP)
    for proc in list(stopped):  # every stop lasts its full time, past the ttl, however the run ended
        time.sleep(max(stopped[proc][1] - time.monotonic(), 0))
        resume(proc)
    for proc in live:
        proc.join(max(deadline - time.monotonic(), 1))
    stuck = [proc for proc in live if proc.is_alive()]
    if stuck:
        for proc in stuck:
            os.kill(proc.pid, signal.SIGUSR1)  # each prints its stacks into the captured stderr
        time.sleep(1)
        left = ledger.uncommitted()
        with lockapi.connect(t.url, **t.options) as mgr:
            marked = [e for e in left if mgr.jobs().is_processed(Job(JOB, ttl=ttl), e)]
        pytest.fail(f"{len(stuck)} workers still running; uncommitted: {left[:20]}; "
                    f"of those marked done (nobody will take them again): {marked[:20]}")
    assert all(proc.exitcode == 0 for proc in live), [proc.exitcode for proc in live]
    found = problems(ledger)
    entries = ledger.entries()
    kinds = {k: sum(1 for e in entries if e["kind"] == k) for k in ("commit", "stale_begin", "rejected_commit")}
    print(f"\nexactly-once on {t.id}: {len(faults)} faults "
          f"({sum(f.end is None for f in faults)} kills), {kinds}")
    assert not found, "\n".join(found[:20])
