"""The job guard for Python schedulers: ``mgr.scheduled(...)`` / ``lockapi.scheduled(...)``."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import lockapi
from lockapi import Event, LeaseLost, LockManager, RunSkipped
from lockapi.testing.pauses import pause_at
from lockapi.testing.suite import WaitingCount
from tests.children import CHILDREN
from tests.scheduled import workers


def scheduled_events(seen: list[Event]) -> list[tuple[str, bool | None]]:
    return [(e.op, e.outcome) for e in seen if e.op.startswith("scheduled")]


@pytest.fixture
def other(shared_url: str) -> Any:
    with lockapi.connect(shared_url) as mgr:
        yield mgr


def test_one_node_runs_the_other_skips_with_run_skipped(manager: LockManager, other: LockManager,
                                                        lock_name: str) -> None:
    seen: list[Event] = []
    manager.add_listener(seen.append)
    other.add_listener(seen.append)
    with manager.scheduled(lock_name, at_most=60) as run:
        assert run.token is not None and lockapi.current_run() is None  # only decorated calls set it
        with pytest.raises(RunSkipped) as skipped, other.scheduled(lock_name, at_most=60):
            pytest.fail("the body ran on the second node")
        assert skipped.value.reason == "held" and isinstance(skipped.value, lockapi.LockTimeout)
    assert manager.inspect(lock_name) is None, "released at the end without at_least"
    assert scheduled_events(seen) == [("scheduled", True), ("scheduled", False), ("scheduled_end", True)]


def test_decorator_returns_the_result_or_on_skip(manager: LockManager, other: LockManager, lock_name: str) -> None:
    skips: list[RunSkipped] = []

    @other.scheduled(lock_name, at_most=60, on_skip=lambda s: skips.append(s) or "skipped")
    def job(x: int) -> int:
        return x * 2

    @other.scheduled(lock_name, at_most=60)
    def silent() -> str:
        return "ran"

    assert job(2) == 4
    with manager.scheduled(lock_name, at_most=60):
        assert job(3) == "skipped" and silent() is None
    assert len(skips) == 1 and skips[0].name == lock_name
    assert job.__name__ == "job"


def test_async_functions_are_guarded(manager: LockManager, other: LockManager, lock_name: str) -> None:
    @other.scheduled(lock_name, at_most=60, on_skip=lambda s: "skipped")
    async def job() -> int | None:
        run = lockapi.current_run()
        return None if run is None else run.token

    async def both() -> tuple[Any, Any]:
        first = await job()
        async with manager.scheduled(lock_name, at_most=60):
            second = await job()
        return first, second

    first, second = asyncio.run(both())
    assert isinstance(first, int) and second == "skipped"


def test_a_waiting_node_runs_after_the_holder(manager: LockManager, other: LockManager, lock_name: str) -> None:
    order: list[str] = []
    errors: list[BaseException] = []
    holding = threading.Event()
    waiting = WaitingCount(lock_name)
    other.add_observer(waiting)

    def holder() -> None:
        try:
            with manager.scheduled(lock_name, at_most=60):
                order.append("first")
                holding.set()
                waiting.wait_for(1, 60, "the second node did not wait for the held lock")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=holder)
    thread.start()
    assert holding.wait(30), "the first node did not get the lock"
    with other.scheduled(lock_name, at_most=60, wait=90):
        order.append("second")
    thread.join(30)
    assert not errors, errors
    assert order == ["first", "second"]


def test_at_least_keeps_the_lock_after_a_quick_run(manager: LockManager, other: LockManager, lock_name: str) -> None:
    with manager.scheduled(lock_name, at_most=60, at_least=30):
        pass
    info = other.inspect(lock_name)
    assert info is not None and 0 < info.ttl_remaining <= 30
    with pytest.raises(RunSkipped):
        other.scheduled(lock_name, at_most=60).__enter__()


def test_at_most_caps_the_renewals_and_reports_the_run_lost(manager: LockManager, other: LockManager,
                                                            lock_name: str) -> None:
    seen: list[Event] = []
    manager.add_listener(seen.append)
    lost = threading.Event()
    guard = manager.scheduled(lock_name, at_most=1.5, ttl=0.5, on_lost=lambda run: lost.set())
    with pytest.raises(LeaseLost, match="lost its lock"), guard as run:
        time.sleep(1.0)
        assert not run.lost, "auto-renewal keeps it past its ttl"
        assert lost.wait(30), "on_lost was not called when at_most ran out"
        assert run.lost and "at_most" in (run.lost_reason or "")
        deadline = time.monotonic() + 30
        while other.try_acquire(lock_name, ttl=30) is None:
            assert time.monotonic() < deadline, "the lock outlived at_most"
            time.sleep(0.02)
    assert ("scheduled_lost", False) in scheduled_events(seen)
    assert scheduled_events(seen)[-1] == ("scheduled_end", False)


def test_a_lease_taken_away_is_reported(manager: LockManager, lock_name: str) -> None:
    if lockapi.Capability.ADMIN not in manager.capabilities:
        pytest.skip("backend has no force_release")
    lost: list[lockapi.ScheduledRun] = []
    reported = threading.Event()

    def on_lost(run: lockapi.ScheduledRun) -> None:
        lost.append(run)
        reported.set()

    with pytest.raises(LeaseLost), manager.scheduled(lock_name, at_most=60, ttl=0.6, on_lost=on_lost) as run:
        assert manager.backend.force_release(lock_name)
        assert reported.wait(30)
    assert lost == [run]


def test_an_exception_in_the_run_propagates_and_still_holds_at_least(manager: LockManager, other: LockManager,
                                                                     lock_name: str) -> None:
    seen: list[Event] = []
    manager.add_listener(seen.append)
    with pytest.raises(ZeroDivisionError), manager.scheduled(lock_name, at_most=60, at_least=30):
        1 / 0  # noqa: B018
    assert other.inspect(lock_name) is not None
    end = [e for e in seen if e.op == "scheduled_end"]
    assert end[0].outcome is None and "ZeroDivisionError" in (end[0].error or "")


def test_release_early_frees_the_lock_before_the_run_ends(manager: LockManager, other: LockManager,
                                                           lock_name: str) -> None:
    with manager.scheduled(lock_name, at_most=60) as run:
        run.release()
        assert other.inspect(lock_name) is None
        with other.scheduled(lock_name, at_most=60):
            pass


def test_a_key_runs_once_whatever_the_clocks(manager: LockManager, other: LockManager, lock_name: str) -> None:
    calls: list[str] = []

    def job(day: str) -> str:
        calls.append(day)
        return day

    a = manager.scheduled(lock_name, at_most=60, key=lambda day: day, on_skip=lambda s: s.reason)(job)
    b = other.scheduled(lock_name, at_most=60, key=lambda day: day, on_skip=lambda s: s.reason)(job)
    assert a("2026-12-01") == "2026-12-01"
    assert b("2026-12-01") == "done"
    assert b("2026-12-02") == "2026-12-02"
    assert calls == ["2026-12-01", "2026-12-02"]


def test_key_done_marker_is_read_after_the_lock_is_held(manager: LockManager, other: LockManager,
                                                        lock_name: str) -> None:
    """A is stopped after taking the key's lock and before reading its done marker, past its ttl; B takes
    the key, runs and marks it. A must then skip it."""
    ran: list[str] = []
    outcome: list[Any] = []
    a = manager.scheduled(lock_name, at_most=1, ttl=0.5, key="k", on_skip=lambda s: s.reason)(
        lambda: ran.append("a"))
    b = other.scheduled(lock_name, at_most=60, key="k", wait=30)(lambda: ran.append("b"))
    thread = threading.Thread(target=lambda: outcome.append(a()))
    with pause_at("job_lock:acquired", thread=thread) as pause:
        thread.start()
        pause.wait_reached()
        b()
    thread.join(60)
    assert ran == ["b"] and outcome == ["done"]


def test_key_marked_done_before_release_survives_a_pause_past_the_ttl(manager: LockManager, other: LockManager,
                                                                     lock_name: str) -> None:
    """A is stopped after marking its key done and before releasing, until its lease ran out: B never runs the key
    again, and A learns its lock was lost."""
    ran: list[str] = []
    errors: list[BaseException] = []
    a = manager.scheduled(lock_name, at_most=1, ttl=0.5, key="k")(lambda: ran.append("a"))
    b = other.scheduled(lock_name, at_most=60, key="k", on_skip=lambda s: ran.append(f"b {s.reason}"))(
        lambda: ran.append("b"))

    def run_a() -> None:
        try:
            a()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run_a)
    with pause_at("job_done:marked", thread=thread) as pause:
        thread.start()
        pause.wait_reached()
        deadline = time.monotonic() + 30
        while other.inspect(manager.scheduled(lock_name, at_most=60).lock_name("k")) is not None:
            assert time.monotonic() < deadline, "A's lease never expired"
            time.sleep(0.02)
        b()
    thread.join(60)
    assert ran == ["a", "b done"]
    assert len(errors) == 1 and isinstance(errors[0], LeaseLost)


def test_scheduled_processes_run_a_trigger_once(shared_url: str, lock_name: str, tmp_path: Path) -> None:
    ctx = CHILDREN
    start = ctx.Event()
    log = tmp_path / "log"
    procs = [ctx.Process(target=workers.fire, args=(shared_url, lock_name, start, str(log), 30.0))
             for _ in range(3)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 120
    start.set()
    for p in procs:
        p.join(max(deadline - time.monotonic(), 1))
        assert p.exitcode == 0
    outcomes = [line.split(" ", 1)[1] for line in log.read_text().splitlines()]
    assert len(outcomes) == 3
    assert sum(o.startswith("ran ") for o in outcomes) == 1, outcomes
    assert outcomes.count("skipped") == 2


@pytest.mark.parametrize("bad", [
    {"at_most": 0}, {"at_most": 10, "at_least": 11}, {"at_most": 10, "ttl": 20}, {"at_most": 10, "wait": -1},
    {"at_most": 10, "at_least": -1}, {"at_most": 10, "key": 5}, {"at_most": 10, "on_skip": "x"},
    {"at_most": 10, "key": "a\x00b"},
])
def test_bad_arguments_are_rejected_before_io(bad: dict[str, Any]) -> None:
    def no_io() -> LockManager:
        raise AssertionError("connected before checking the arguments")

    with pytest.raises(lockapi.InvalidArgument):
        lockapi.ScheduledLock(no_io, "job", **bad)
