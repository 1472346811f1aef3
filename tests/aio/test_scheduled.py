"""The scheduled-work guard of the asyncio API, ``AsyncLockManager.scheduled``: the promises of
tests/scheduled/test_guard.py (one node per trigger, at_least, at_most, keys in the exactly-once order,
events) with the I/O on the event loop, on memory, SQLite, Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import lockapi
import lockapi.aio
from lockapi import Event, LeaseLost, RunSkipped
from lockapi.aio import AsyncLockManager, AsyncScheduledRun
from lockapi.testing.pauses import pause_at
from lockapi.testing.suite import WaitingCount

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def name() -> str:
    return f"nightly-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["memory", "sqlite", "redis", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "memory":
        return f"memory://aio-scheduled-{uuid.uuid4().hex}"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'locks.db'}"
    server = request.getfixturevalue("redis_standalone" if request.param == "redis" else "pg")
    return str(server.url)


def with_two_nodes(url: str, body: Callable[[AsyncLockManager, AsyncLockManager], Awaitable[None]]) -> None:
    """Run ``body(node, other)`` on two managers of ``url`` (two nodes sharing the store)."""
    async def main() -> None:
        async with lockapi.aio.connect(url) as node, lockapi.aio.connect(url) as other:
            await body(node, other)

    asyncio.run(main())


def scheduled_events(seen: list[Event]) -> list[tuple[str, bool | None]]:
    return [(e.op, e.outcome) for e in seen if e.op.startswith("scheduled")]


async def lock_free(mgr: AsyncLockManager, lock: str, what: str, timeout: float = 30.0) -> None:
    """Return once nobody holds ``lock`` (a lease running out by the backend's clock)."""
    deadline = time.monotonic() + timeout
    while await mgr.inspect(lock) is not None:
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


# -- one node per trigger ----------------------------------------------------------------------------
def test_one_node_runs_the_other_skips_with_run_skipped(url: str, name: str) -> None:
    async def body(node: AsyncLockManager, other: AsyncLockManager) -> None:
        seen: list[Event] = []
        node.add_listener(seen.append)
        other.add_listener(seen.append)
        async with node.scheduled(name, at_most=60) as run:
            assert isinstance(run, AsyncScheduledRun) and run.token is not None
            assert lockapi.current_run() is None, "only decorated calls set the current run"
            with pytest.raises(RunSkipped) as skipped:
                async with other.scheduled(name, at_most=60):
                    pytest.fail("the body ran on the second node")
            assert skipped.value.reason == "held" and isinstance(skipped.value, lockapi.LockTimeout)
        assert await other.inspect(name) is None, "released at the end without at_least"
        assert scheduled_events(seen) == [("scheduled", True), ("scheduled", False), ("scheduled_end", True)]

    with_two_nodes(url, body)


def test_decorated_coroutines_return_their_result_or_on_skip(url: str, name: str) -> None:
    async def body(node: AsyncLockManager, other: AsyncLockManager) -> None:
        skips: list[RunSkipped] = []

        async def on_skip(skipped: RunSkipped) -> str:  # a coroutine function is awaited
            skips.append(skipped)
            return "skipped"

        @other.scheduled(name, at_most=60, on_skip=on_skip)
        async def job(x: int) -> tuple[int, int | None]:
            run = lockapi.aio.current_run()
            assert run is lockapi.current_run() and run is not None and run.key is None
            return x * 2, run.token

        @other.scheduled(name, at_most=60, on_skip=lambda s: "plain")
        async def plain() -> str:
            return "ran"

        @other.scheduled(name, at_most=60)
        async def silent() -> str:
            return "ran"

        doubled, token = await job(2)
        assert doubled == 4 and isinstance(token, int)
        async with node.scheduled(name, at_most=60):
            assert await job(3) == "skipped" and await plain() == "plain" and await silent() is None
        assert len(skips) == 1 and skips[0].name == name
        assert job.__name__ == "job" and lockapi.aio.current_run() is None

    with_two_nodes(url, body)


def test_a_waiting_node_runs_after_the_holder(url: str, name: str) -> None:
    async def body(node: AsyncLockManager, other: AsyncLockManager) -> None:
        order: list[str] = []
        waiting = WaitingCount(name)
        other.add_observer(waiting)
        holding = asyncio.Event()

        async def holder() -> None:
            async with node.scheduled(name, at_most=60):
                order.append("first")
                holding.set()
                await asyncio.to_thread(waiting.wait_for, 1, 60, "the second node did not wait for the lock")

        first = asyncio.create_task(holder())
        await asyncio.wait_for(holding.wait(), 60)
        async with other.scheduled(name, at_most=60, wait=90):
            order.append("second")
        await first
        assert order == ["first", "second"]

    with_two_nodes(url, body)


def test_sync_and_async_guards_contend_like_two_nodes(url: str, name: str) -> None:
    async def body(node: AsyncLockManager, other: AsyncLockManager) -> None:
        with lockapi.connect(url) as sync:
            async with node.scheduled(name, at_most=60, at_least=30):
                with pytest.raises(RunSkipped), sync.scheduled(name, at_most=60):
                    pytest.fail("the sync guard ran while the async run held the lock")
            with pytest.raises(RunSkipped), sync.scheduled(name, at_most=60):
                pytest.fail("the sync guard ran within the async run's at_least")

    with_two_nodes(url, body)


# -- the timing: at_least, at_most -------------------------------------------------------------------
def test_at_least_keeps_the_lock_after_a_quick_run(url: str, name: str) -> None:
    async def body(node: AsyncLockManager, other: AsyncLockManager) -> None:
        async with node.scheduled(name, at_most=60, at_least=30):
            pass
        info = await other.inspect(name)
        assert info is not None and 0 < info.ttl_remaining <= 30
        with pytest.raises(RunSkipped):
            async with other.scheduled(name, at_most=60):
                pytest.fail("ran within at_least of the previous run")

    with_two_nodes(url, body)


def test_at_most_caps_the_renewals_on_the_loop_and_reports_the_run_lost(url: str, name: str) -> None:
    async def body(node: AsyncLockManager, other: AsyncLockManager) -> None:
        seen: list[Event] = []
        node.add_listener(seen.append)
        lost = asyncio.Event()
        reported: list[AsyncScheduledRun] = []

        async def on_lost(run: AsyncScheduledRun) -> None:  # a coroutine function is run on the loop
            reported.append(run)
            lost.set()

        await other.inspect(name)  # the backend's own threads and tasks, if any, start before counting
        await node.inspect(name)
        threads = threading.active_count()
        with pytest.raises(LeaseLost, match="lost its lock"):
            async with node.scheduled(name, at_most=1.5, ttl=0.5, on_lost=on_lost) as run:
                await asyncio.sleep(1.0)  # two ttls: only renewals keep it
                assert not run.lost, "auto-renewal keeps it past its ttl"
                assert await other.try_acquire(name, ttl=30) is None
                if not url.startswith("sqlite"):  # SQLite runs on the adapter's pool (docs/asyncio.md)
                    assert threading.active_count() == threads, "a run started a thread"
                await asyncio.wait_for(lost.wait(), 30)
                assert run.lost and "at_most" in (run.lost_reason or "") and reported == [run]
                deadline = time.monotonic() + 30
                while await other.try_acquire(name, ttl=30) is None:
                    assert time.monotonic() < deadline, "the lock outlived at_most"
                    await asyncio.sleep(0.02)
        assert ("scheduled_lost", False) in scheduled_events(seen)
        assert scheduled_events(seen)[-1] == ("scheduled_end", False)

    with_two_nodes(url, body)


def test_a_lease_taken_away_is_reported(url: str, name: str) -> None:
    async def body(node: AsyncLockManager, other: AsyncLockManager) -> None:
        if lockapi.Capability.ADMIN not in node.capabilities:
            pytest.skip("backend has no force_release")
        lost: list[AsyncScheduledRun] = []
        reported = asyncio.Event()

        def on_lost(run: AsyncScheduledRun) -> None:
            lost.append(run)
            reported.set()

        with pytest.raises(LeaseLost):
            async with node.scheduled(name, at_most=60, ttl=0.6, on_lost=on_lost) as run:
                assert await other.backend.force_release(name)
                await asyncio.wait_for(reported.wait(), 30)
        assert lost == [run]

    with_two_nodes(url, body)


# -- how a run ends ----------------------------------------------------------------------------------
def test_an_exception_in_the_run_propagates_and_still_holds_at_least(url: str, name: str) -> None:
    async def body(node: AsyncLockManager, other: AsyncLockManager) -> None:
        seen: list[Event] = []
        node.add_listener(seen.append)
        with pytest.raises(ZeroDivisionError):
            async with node.scheduled(name, at_most=60, at_least=30):
                1 / 0  # noqa: B018
        assert await other.inspect(name) is not None
        end = [e for e in seen if e.op == "scheduled_end"]
        assert end[0].outcome is None and "ZeroDivisionError" in (end[0].error or "")

    with_two_nodes(url, body)


@pytest.mark.parametrize("at_least", [0.0, 30.0])
def test_a_run_cancelled_while_holding_ends_like_a_run_that_raised(url: str, name: str, at_least: float) -> None:
    async def body(node: AsyncLockManager, other: AsyncLockManager) -> None:
        seen: list[Event] = []
        node.add_listener(seen.append)
        inside = asyncio.Event()

        @node.scheduled(name, at_most=60, at_least=at_least)
        async def job() -> None:
            inside.set()
            await asyncio.Event().wait()  # until cancelled

        task = asyncio.create_task(job())
        await asyncio.wait_for(inside.wait(), 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        info = await other.inspect(name)
        if at_least:
            assert info is not None and 0 < info.ttl_remaining <= at_least, "not kept until at_least"
        else:
            assert info is None, "the cancelled run did not release its lock"
        end = [e for e in seen if e.op == "scheduled_end"]
        assert len(end) == 1 and end[0].outcome is None and "CancelledError" in (end[0].error or "")

    with_two_nodes(url, body)


def test_a_keyed_run_cancelled_is_not_marked_done(url: str, name: str) -> None:
    async def body(node: AsyncLockManager, other: AsyncLockManager) -> None:
        inside = asyncio.Event()
        ran: list[str] = []

        @node.scheduled(name, at_most=60, key=lambda day: day)
        async def job(day: str) -> None:
            inside.set()
            await asyncio.Event().wait()

        @other.scheduled(name, at_most=60, key=lambda day: day)
        async def retry(day: str) -> None:
            ran.append(day)

        task = asyncio.create_task(job("2026-12-01"))
        await asyncio.wait_for(inside.wait(), 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await retry("2026-12-01")
        assert ran == ["2026-12-01"], "the cancelled key was marked done, or its lock was kept"

    with_two_nodes(url, body)


def test_release_early_frees_the_lock_before_the_run_ends(url: str, name: str) -> None:
    async def body(node: AsyncLockManager, other: AsyncLockManager) -> None:
        seen: list[Event] = []
        node.add_listener(seen.append)
        async with node.scheduled(name, at_most=60) as run:
            await run.release()
            assert await other.inspect(name) is None
            async with other.scheduled(name, at_most=60):
                pass
        assert [op for op, _ in scheduled_events(seen)] == ["scheduled", "scheduled_end"], "ended twice"

    with_two_nodes(url, body)


# -- once per key ------------------------------------------------------------------------------------
def test_a_key_runs_once_whatever_the_clocks(url: str, name: str) -> None:
    async def body(node: AsyncLockManager, other: AsyncLockManager) -> None:
        calls: list[str] = []

        async def job(day: str) -> str:
            calls.append(day)
            return day

        a = node.scheduled(name, at_most=60, key=lambda day: day, on_skip=lambda s: s.reason)(job)
        b = other.scheduled(name, at_most=60, key=lambda day: day, on_skip=lambda s: s.reason)(job)
        assert await a("2026-12-01") == "2026-12-01"
        assert await b("2026-12-01") == "done"
        assert await b("2026-12-02") == "2026-12-02"
        assert calls == ["2026-12-01", "2026-12-02"]

    with_two_nodes(url, body)


def node_in_thread(url: str, body: Callable[[AsyncLockManager], Awaitable[Any]]) -> tuple[threading.Thread,
                                                                                          list[Any]]:
    """A node on its own thread and event loop (a pause stops that thread, so its loop stops too: no
    renewal runs while it is paused). The thread's result or exception lands in the returned list."""
    outcome: list[Any] = []

    async def main() -> None:
        async with lockapi.aio.connect(url) as mgr:
            outcome.append(await body(mgr))

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            outcome.append(exc)

    return threading.Thread(target=target, daemon=True), outcome


def test_key_done_marker_is_read_after_the_lock_is_held(url: str, name: str) -> None:
    """A is stopped after taking the key's lock and before reading its done marker, past its ttl; B takes
    the key, runs and marks it. A must then skip it."""
    ran: list[str] = []

    async def node_a(mgr: AsyncLockManager) -> Any:
        async def job() -> None:
            ran.append("a")

        return await mgr.scheduled(name, at_most=1, ttl=0.5, key="k", on_skip=lambda s: s.reason)(job)()

    async def node_b(mgr: AsyncLockManager) -> None:
        async def job() -> None:
            ran.append("b")

        await mgr.scheduled(name, at_most=60, key="k", wait=30)(job)()

    async def main() -> None:
        async with lockapi.aio.connect(url) as mgr:
            await node_b(mgr)

    thread, outcome = node_in_thread(url, node_a)
    with pause_at("job_lock:acquired", thread=thread) as pause:
        thread.start()
        pause.wait_reached()
        asyncio.run(main())
    thread.join(60)
    assert not thread.is_alive()
    assert ran == ["b"] and outcome == ["done"]


def test_key_marked_done_before_release_survives_a_pause_past_the_ttl(url: str, name: str) -> None:
    """A is stopped after marking its key done and before releasing, until its lease ran out: B never runs the
    key again, and A learns its lock was lost."""
    ran: list[str] = []

    async def node_a(mgr: AsyncLockManager) -> None:
        async def job() -> None:
            ran.append("a")

        await mgr.scheduled(name, at_most=1, ttl=0.5, key="k")(job)()

    async def main() -> None:
        async with lockapi.aio.connect(url) as mgr:
            guard = mgr.scheduled(name, at_most=60, key="k", on_skip=lambda s: ran.append(f"b {s.reason}"))
            await lock_free(mgr, guard.lock_name("k"), "A's lease never expired")

            async def job() -> None:
                ran.append("b")

            await guard(job)()

    thread, outcome = node_in_thread(url, node_a)
    with pause_at("job_done:marked", thread=thread) as pause:
        thread.start()
        pause.wait_reached()
        asyncio.run(main())
    thread.join(60)
    assert not thread.is_alive()
    assert ran == ["a", "b done"]
    assert len(outcome) == 1 and isinstance(outcome[0], LeaseLost), outcome


# -- bad input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [
    {"at_most": 0}, {"at_most": 10, "at_least": 11}, {"at_most": 10, "ttl": 20}, {"at_most": 10, "wait": -1},
    {"at_most": 10, "at_least": -1}, {"at_most": 10, "key": 5}, {"at_most": 10, "on_skip": "x"},
    {"at_most": 10, "on_lost": 3}, {"at_most": 10, "key": "a\x00b"},
])
def test_bad_arguments_are_rejected_before_io(bad: dict[str, Any]) -> None:
    async def main() -> None:
        mgr = lockapi.aio.connect("redis://127.0.0.1:1/0?timeout=1")  # nothing listens: any I/O would fail
        with pytest.raises(lockapi.InvalidArgument):
            mgr.scheduled("job", **bad)
        await mgr.aclose()

    asyncio.run(main())


def test_only_coroutine_functions_are_decorated() -> None:
    async def main() -> None:
        async with lockapi.aio.connect(f"memory://{uuid.uuid4().hex}") as mgr:
            guard = mgr.scheduled("job", at_most=10)
            with pytest.raises(lockapi.InvalidArgumentType, match="async def"):
                guard(lambda: None)  # type: ignore[arg-type,return-value]

            @mgr.scheduled("job", at_most=10, key=lambda: 5)  # type: ignore[arg-type,return-value]
            async def bad_key() -> None:
                pytest.fail("ran with a key that is not a str")

            with pytest.raises(lockapi.InvalidArgumentType):
                await bad_key()
            assert await mgr.inspect("job") is None

    asyncio.run(main())
