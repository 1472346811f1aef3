"""Faults of the lock holder: killed (SIGKILL) and paused past its ttl (SIGSTOP), on every shared backend.

The holder is a child process we start (:data:`tests.children.CHILDREN`) and signal by its own pid.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lockapi
from tests.children import CHILDREN
from tests.reliability.checker import FencedRecord, hold_and_hang, paused_holder
from tests.reliability.targets import Target

TTL = 3.0


@pytest.fixture
def children() -> Iterator[list[Any]]:
    """Child processes a test started; any still alive at the end are killed (by pid) and reaped."""
    procs: list[Any] = []
    yield procs
    for proc in procs:
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.join(30)


def test_killed_holder_frees_the_lock_after_its_ttl_not_before(
    server_target: Target, name: str, tmp_path: Path, children: list[Any]
) -> None:
    t = server_target
    ready = CHILDREN.Event()
    out = tmp_path / "held.txt"
    holder = CHILDREN.Process(target=hold_and_hang, args=(t.url, t.options, name, TTL, str(out), ready))
    holder.start()
    children.append(holder)
    assert ready.wait(120), "the holder never got the lock"
    requested, _granted, token = map(int, out.read_text().split())
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(30)
    assert holder.exitcode == -signal.SIGKILL
    with lockapi.connect(t.url, **t.options) as mgr:
        early = (time.monotonic_ns() - requested) / 1e9
        if early < TTL * 0.8:  # only meaningful while the ttl has not run out (a slow machine may miss it)
            assert mgr.try_acquire(name) is None, f"lock free {early:.2f}s after a {TTL}s grant to a dead holder"
        lease = mgr.acquire(name, ttl=30, wait=TTL + t.margin + 30)
        free_after = (time.monotonic_ns() - requested) / 1e9
        assert lease.token > token
        assert lease.release() is True
    print(f"\nkilled holder on {t.id}: lock free {free_after:.2f}s after the request (ttl {TTL}s)")
    assert free_after >= TTL - 0.05, f"free after {free_after:.3f}s, before the ttl of {TTL}s"
    bound = max(TTL, t.dead_holder_grace or 0.0) + t.margin + 3
    assert free_after <= bound, f"free only after {free_after:.3f}s with a ttl of {TTL}s (bound {bound:.1f}s)"


def test_paused_holder_is_fenced_off_and_told(server_target: Target, name: str, tmp_path: Path,
                                               children: list[Any]) -> None:
    t = server_target
    names = [f"{name}:a", f"{name}:b"]
    record = FencedRecord(tmp_path / "record.json").create()
    ready, go = CHILDREN.Event(), CHILDREN.Event()
    out = tmp_path / "paused.json"
    holder = CHILDREN.Process(target=paused_holder,
                           args=(t.url, t.options, names, TTL, str(record.path), str(out), ready, go))
    holder.start()
    children.append(holder)
    assert ready.wait(120), "the holder never got its locks"
    os.kill(holder.pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        with lockapi.connect(t.url, **t.options) as mgr:
            successors = [mgr.acquire(n, ttl=60, wait=TTL + t.margin + 30) for n in names]
            taken_after = time.monotonic() - stopped_at
            assert record.increment(successors[0].token) is True
            os.kill(holder.pid, signal.SIGCONT)  # before go.set(): setting an Event waits for its sleepers
            go.set()
            holder.join(120)
            assert holder.exitcode == 0
            report = json.loads(out.read_text())
            # The paused holder's stale release freed nothing: the successors still hold.
            assert all(s.is_held() for s in successors)
            assert mgr.try_acquire(names[0]) is None
            assert all(s.release() is True for s in successors)
    finally:
        if holder.is_alive():
            os.kill(holder.pid, signal.SIGCONT)
    print(f"\npaused holder on {t.id}: successor granted {taken_after:.2f}s after SIGSTOP (ttl {TTL}s); "
          f"holder saw {report}")
    assert successors[0].token > report["tokens"][0] and successors[1].token > report["tokens"][1]
    assert report["write_before"] is True
    assert report["lost_flag"] is True
    assert report["write_after"] is False, "the paused holder's write was not rejected by fencing"
    assert report["release"] is False
    assert report["exit"].startswith("LeaseLost"), report["exit"]
    state = record.state()
    assert (state["accepted"], state["rejected"], state["counter"]) == (2, 1, 2)
    assert state["highest"] == successors[0].token
