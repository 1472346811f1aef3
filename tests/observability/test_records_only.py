"""Records-only observers: plain tuples instead of the Operation protocol, next to full observers."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

import lockapi
from lockapi.observers import EndRecord, LeaseEnd, Observer, Operation, Record


class Recorder(Observer):
    records_only = True

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.waits: list[tuple[str, str, str]] = []
        self.ends: list[EndRecord] = []
        self.full_calls: list[str] = []
        self.waiting_seen = threading.Event()

    def record(self, record: Record) -> None:
        self.records.append(record)

    def record_waiting(self, record: tuple[str, str, str]) -> None:
        self.waits.append(record)
        self.waiting_seen.set()

    def record_end(self, record: EndRecord) -> None:
        self.ends.append(record)

    def start(self, op: Operation) -> Any:
        self.full_calls.append("start")

    def finish(self, op: Operation, state: Any) -> None:
        self.full_calls.append("finish")

    def lease_ended(self, end: LeaseEnd) -> None:
        self.full_calls.append("lease_ended")


class Full(Observer):
    def __init__(self) -> None:
        self.finished: list[Operation] = []
        self.ends: list[LeaseEnd] = []

    def finish(self, op: Operation, state: Any) -> None:
        self.finished.append(op)

    def lease_ended(self, end: LeaseEnd) -> None:
        self.ends.append(end)


def test_a_records_only_observer_gets_tuples_and_no_operation_hooks(prefix: str) -> None:
    recorder = Recorder()
    with lockapi.connect(f"memory://{prefix}") as mgr:
        mgr.add_observer(recorder)
        assert mgr._reporter.observer is None and mgr._reporter.observers.recorders == (recorder,)
        lease = mgr.try_acquire(f"{prefix}:1", ttl=30)
        assert lease is not None
        assert mgr.try_acquire(f"{prefix}:1", ttl=30) is None
        assert lease.extend(20)
        assert lease.release()
    assert recorder.full_calls == []
    assert {(r[1], r[2]) for r in recorder.records} == {(f"{prefix}:1", "memory")}
    assert [(r[0], r[3]) for r in recorder.records] == [("try_acquire", "granted"), ("try_acquire", "denied"),
                                                        ("extend", "extended"), ("release", "released")]
    granted = recorder.records[0]
    assert granted[7] == lease.token and granted[5] >= granted[4] and granted[6] is None and granted[8] is None
    assert granted[9] == () and granted[10] == ()
    [end] = recorder.ends
    assert end[:4] == ("lock", f"{prefix}:1", "memory", lease.token) and end[5:] == ("released", None)
    assert end[4] >= 0


def test_a_waiting_caller_is_recorded_with_its_wait_time(prefix: str) -> None:
    recorder = Recorder()
    name = f"{prefix}:w"
    with lockapi.connect(f"memory://{prefix}") as mgr:
        mgr.add_observer(recorder)
        holder = mgr.acquire(name, ttl=30)
        got: list[lockapi.Lease] = []
        waiter = threading.Thread(target=lambda: got.append(mgr.acquire(name, ttl=30, wait=60)))
        waiter.start()
        assert recorder.waiting_seen.wait(30)
        holder.release()
        waiter.join(30)
        assert got and got[0].release()
    assert recorder.waits == [("acquire", name, "memory")]
    acquired = [r for r in recorder.records if r[0] == "acquire" and r[3] == "granted"]
    assert len(acquired) == 2
    assert acquired[0][6] is None
    waited = acquired[1][6]
    assert waited is not None and acquired[1][4] <= waited <= acquired[1][5]


def test_acquire_many_records_carry_names_and_granted(prefix: str) -> None:
    recorder = Recorder()
    names = [f"{prefix}:a", f"{prefix}:b"]
    with lockapi.connect(f"memory://{prefix}") as mgr:
        mgr.add_observer(recorder)
        blocker = mgr.acquire(names[1], ttl=30)
        leases = mgr.acquire_many(names, ttl=30)
        assert list(leases) == [names[0]]
        for lease in (*leases.values(), blocker):
            assert lease.release()
    [batch] = [r for r in recorder.records if r[0] == "acquire_many"]
    assert batch[3] == "granted" and batch[9] == tuple(names) and batch[10] == (names[0],)


def test_records_only_and_full_observers_each_get_their_protocol(prefix: str) -> None:
    recorder, full = Recorder(), Full()
    lockapi.observers.add(full)
    try:
        with lockapi.connect(f"memory://{prefix}") as mgr:
            mgr.add_observer(recorder)
            assert mgr._reporter.observer is full
            mgr.acquire(f"{prefix}:1", ttl=30).release()
    finally:
        lockapi.observers.remove(full)
    assert [op.op for op in full.finished] == [r[0] for r in recorder.records] == ["acquire", "release"]
    assert [(e.kind, e.name, e.end) for e in full.ends] == [(r[0], r[1], r[5]) for r in recorder.ends] \
        == [("lock", f"{prefix}:1", "released")]
    assert recorder.full_calls == []


def test_a_records_only_observer_that_raises_is_logged_and_the_others_still_told(
        prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Observer):
        records_only = True

        def record(self, record: Record) -> None:
            raise RuntimeError("boom")

        def record_end(self, record: EndRecord) -> None:
            raise RuntimeError("boom")

    recorder = Recorder()
    with lockapi.connect(f"memory://{prefix}") as mgr, caplog.at_level(logging.ERROR):
        mgr.add_observer(Broken())
        mgr.add_observer(recorder)
        assert mgr.acquire(f"{prefix}:1", ttl=30).release()
    assert [r[0] for r in recorder.records] == ["acquire", "release"] and len(recorder.ends) == 1
    hooks = [getattr(r, "lockapi_hook", None) for r in caplog.records
             if getattr(r, "lockapi_event", None) == "observer_failed"]
    assert hooks == ["record", "record", "record_end"]


def test_a_lease_lost_is_recorded_once_with_its_cause(prefix: str) -> None:
    recorder = Recorder()
    now = [1000.0]
    name = f"{prefix}:lost"
    with lockapi.connect(f"memory://{prefix}", clock=lambda: now[0]) as mgr:
        mgr.add_observer(recorder)
        lease = mgr.acquire(name, ttl=1)
        now[0] += 2
        successor = mgr.acquire(name, ttl=10)
        assert not lease.release()
        assert not lease.extend()
        assert successor.release()
    assert [(e[1], e[5], e[6]) for e in recorder.ends] == [(name, "lost", "expired"), (name, "released", None)]
