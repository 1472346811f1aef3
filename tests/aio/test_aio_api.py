"""What the asyncio API promises beyond the shared contract (which LockConformance checks over both APIs):
cancellation leaves nothing behind, waiters occupy no thread, renewal runs on the loop."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from lockapi_memory import AsyncMemoryBackend

import lockapi
import lockapi.aio
import lockapi.plugins
from lockapi import InvalidArgument, InvalidName, Job, LockTimeout
from lockapi.aio.spi import SyncBackendAdapter
from lockapi.spi import Attempt
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def name() -> str:
    return f"aio:{uuid.uuid4().hex}"


@pytest.fixture(params=["memory", "sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "memory":
        return f"memory://aio-{uuid.uuid4().hex}"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'locks.db'}"
    server: RedisServer = request.getfixturevalue("redis_standalone")
    return server.url


def run(coro_fn: Callable[[], Any]) -> Any:
    return asyncio.run(coro_fn())


# -- the public shape ------------------------------------------------------------------------------------
def test_the_documented_shape_works(url: str, name: str) -> None:
    async def main() -> None:
        async with lockapi.aio.connect(url) as mgr:
            async with mgr.acquire(name, ttl=30, wait=5) as lease:
                assert lease.token >= 1 and await lease.is_held()
                assert await mgr.try_acquire(name, ttl=10) is None
            again = await mgr.acquire(name, ttl=10)
            assert again.token > lease.token
            assert await again.extend(20) and again.ttl == 20
            assert await again.release() and not await again.release()
            sem = mgr.semaphore(f"{name}:gov-api", permits=3)
            permits = [await sem.acquire(ttl=30, wait=5) for _ in range(3)]
            assert await sem.try_acquire(ttl=30) is None
            for permit in permits:
                assert await permit.release()
            job = Job(f"{name}-job", ttl=30)
            jobs, slots = mgr.jobs(), mgr.job_semaphore()
            assert await jobs.lock_many(job, [1, 2, 3]) == [1, 2, 3]
            assert await slots.try_acquire(job)
            await jobs.successfully_processed(job, 1)
            await slots.release(job)
            assert await jobs.is_processed(job, 1)
            assert await jobs.lock_many(job, [1, 2, 4]) == [4]
        other = lockapi.aio.connect(url)
        assert await other.inspect(name) is None
        await other.aclose()

    run(main)


def test_bad_input_is_refused_at_the_call_before_any_io(name: str) -> None:
    async def main() -> None:
        async with lockapi.aio.connect(f"memory://{name}") as mgr:
            with pytest.raises(InvalidName):
                mgr.acquire("")  # not even awaited: refused at the call
            with pytest.raises(InvalidArgument):
                mgr.acquire(name, ttl=-1)
            with pytest.raises(InvalidArgument):
                mgr.semaphore(name, 0)
            with pytest.raises(InvalidArgument):
                await mgr.try_acquire(name, on_lost=5)  # type: ignore[arg-type]
            assert await mgr.inspect(name) is None

    run(main)


def test_the_same_url_resolution_as_the_sync_api(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv("LOCKAPI_URL", f"memory://{name}?timeout=2")

    async def main() -> None:
        async with lockapi.aio.connect() as mgr:
            assert mgr.url == lockapi.connect().url
            assert mgr.backend.config.timeout == 2.0
            lease = await mgr.acquire(name)
            with lockapi.connect() as sync:  # the same memory store: sync and async managers contend
                assert sync.try_acquire(name) is None
            await lease.release()

    run(main)


# -- cancellation ------------------------------------------------------------------------------------
def test_a_cancelled_waiter_leaves_no_queue_entry_subscription_or_lease(
    redis_standalone: RedisServer, name: str
) -> None:
    async def main() -> None:
        async with lockapi.aio.connect(redis_standalone.url) as mgr, lockapi.aio.connect(redis_standalone.url) as other:
            holder = await other.acquire(name, ttl=30)
            backend: Any = mgr.backend.sync_backend or mgr.backend  # adapted, or native (watcher_count either way)
            for fair in (False, True):
                waiter = asyncio.create_task(_acquire(mgr, name, fair))
                while backend.watcher_count() == 0:  # the waiter has subscribed
                    await asyncio.sleep(0.005)
                waiter.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiter
                await mgr._background.drain()
                assert backend.watcher_count() == 0, "the cancelled waiter's subscription was left behind"
                assert mgr.waiting == 0
                client = redis_standalone.client()
                assert client.llen(f"lockapi:{{{name}}}:queue") == 0, "the cancelled fair waiter is still queued"
            assert await holder.release()
            assert await mgr.inspect(name) is None, "a cancelled waiter was granted the lock"

    run(main)


async def _acquire(mgr: lockapi.aio.AsyncLockManager, name: str, fair: bool) -> lockapi.aio.AsyncLease:
    return await mgr.acquire(name, ttl=30, wait=30, fair=fair)


class SlowGrants(AsyncMemoryBackend):
    """The in-memory backend, with every grant's reply held back until ``release_replies`` is set: the
    window in which a caller is cancelled after the store granted but before it heard."""

    replies: asyncio.Event

    async def try_acquire(self, name: str, holder: str, ttl: float, *, queue_ttl: float | None = None) -> Attempt:
        attempt = await super().try_acquire(name, holder, ttl, queue_ttl=queue_ttl)
        await self.replies.wait()
        return attempt


def test_a_grant_whose_caller_was_cancelled_is_given_back(name: str) -> None:
    async def main() -> None:
        backend = SlowGrants(lockapi.plugins.backend_config(f"memory://{name}", {}))
        backend.replies = asyncio.Event()
        mgr = lockapi.aio.AsyncLockManager(backend)
        for call in (lambda: mgr.try_acquire(name), lambda: _acquire(mgr, name, False)):
            task = asyncio.create_task(call())
            while (await backend.inspect(name)) is None:  # the store granted; the reply is held back
                await asyncio.sleep(0.001)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            backend.replies.set()
            await mgr._background.drain()
            assert await backend.inspect(name) is None, "the grant nobody heard about was not given back"
            backend.replies.clear()
        await mgr.aclose()

    run(main)


class CancelsOnReply(AsyncMemoryBackend):
    """The in-memory backend that, as each grant's reply leaves it, schedules a cancellation of ``victim``
    to run before ``victim`` wakes up to read the reply: a caller cancelled when its answer is in hand."""

    victim: asyncio.Task[Any] | None = None

    async def try_acquire(self, name: str, holder: str, ttl: float, *, queue_ttl: float | None = None) -> Attempt:
        await asyncio.sleep(0)  # the reply comes at a later turn of the loop, as from a server
        attempt = await super().try_acquire(name, holder, ttl, queue_ttl=queue_ttl)
        if self.victim is not None:
            asyncio.get_running_loop().call_soon(self.victim.cancel)
        return attempt


@pytest.mark.parametrize("fair", [False, True])
def test_a_grant_whose_caller_was_cancelled_as_the_reply_came_is_given_back(name: str, fair: bool) -> None:
    """The answer was handed over, but the caller was cancelled in the same turn of the loop, before it
    woke up to take it: the grant is given back all the same."""
    async def main() -> None:
        backend = CancelsOnReply(lockapi.plugins.backend_config(f"memory://{name}", {}))
        mgr = lockapi.aio.AsyncLockManager(backend)
        for call in (lambda: mgr.try_acquire(name, fair=fair), lambda: _acquire(mgr, name, fair)):
            task = asyncio.create_task(call())
            backend.victim = task
            with pytest.raises(asyncio.CancelledError):
                await task
            backend.victim = None
            await mgr._background.drain()
            assert await backend.inspect(name) is None, "the grant nobody took was not given back"
        await mgr.aclose()

    run(main)


class SlowReleases(AsyncMemoryBackend):
    """The in-memory backend whose release and extend wait for ``go`` before (``applied`` False) or after
    (True) acting: a caller cancelled while its release is under way, before or after the store did it.
    ``arrived`` is set as each such request reaches it; ``sent`` counts them."""

    def __init__(self, name: str, applied: bool) -> None:
        super().__init__(lockapi.plugins.backend_config(f"memory://{name}", {}))
        self.go, self.arrived = asyncio.Event(), asyncio.Event()
        self.applied = applied
        self.sent = 0

    async def _slow(self, call: Callable[[], Any]) -> Any:
        self.sent += 1
        self.arrived.set()
        if not self.applied:
            await self.go.wait()
        result = await call()
        if self.applied:
            await self.go.wait()
        return result

    async def release(self, name: str, holder: str, token: int) -> bool:
        return bool(await self._slow(lambda: super(SlowReleases, self).release(name, holder, token)))

    async def extend(self, name: str, holder: str, token: int, ttl: float) -> bool:
        return bool(await self._slow(lambda: super(SlowReleases, self).extend(name, holder, token, ttl)))


def slow_releases(name: str, applied: bool = False) -> tuple[SlowReleases, lockapi.aio.AsyncLockManager]:
    """The set-up of the cancelled-release tests: a :class:`SlowReleases` store and a manager on it (call
    it inside the test's event loop)."""
    backend = SlowReleases(name, applied)
    return backend, lockapi.aio.AsyncLockManager(backend)


@pytest.mark.parametrize("keep", [None, 30.0])
@pytest.mark.parametrize("applied", [False, True], ids=["before-the-store-acted", "after-the-store-acted"])
def test_a_release_cancelled_while_under_way_still_completes(name: str, applied: bool, keep: float | None) -> None:
    """release() runs in the caller's task; cancelled while its request is under way (the store may or may
    not have acted), it is finished by a background task: the lease is released (or kept for ``keep``),
    recorded released once, not lost."""
    async def main() -> None:
        backend, mgr = slow_releases(name, applied)
        events: list[Any] = []
        mgr.add_listener(events.append)
        lost: list[Any] = []
        lease = await mgr.acquire(name, ttl=30, on_lost=lost.append)
        task = asyncio.create_task(lease.release(keep=keep))
        await backend.arrived.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        backend.go.set()
        await mgr._background.drain()
        info = await backend.inspect(name)
        if keep is None:
            assert info is None, "the cancelled release was not completed"
        else:
            assert info is not None and info.ttl_remaining > 20, info
        assert backend.sent == 2
        releases = [e for e in events if e.op == "release"]
        assert [e.result for e in releases] == ["released"], releases
        assert not lease.lost and not lost
        assert not await lease.release()  # already released
        await mgr.aclose()

    run(main)


def test_a_release_cancelled_while_queued_behind_an_extend_still_completes(name: str) -> None:
    async def main() -> None:
        backend, mgr = slow_releases(name)
        lease = await mgr.acquire(name, ttl=30)
        extending = asyncio.create_task(lease.extend(30))
        await backend.arrived.wait()
        task = asyncio.create_task(lease.release())
        await asyncio.sleep(0)  # the release queues behind the extend
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        backend.go.set()
        assert await extending
        await mgr._background.drain()
        assert await backend.inspect(name) is None, "the cancelled release was not completed"
        assert not lease.lost
        await mgr.aclose()

    run(main)


def test_a_task_cancelled_while_holding_releases(url: str, name: str) -> None:
    async def main() -> None:
        async with lockapi.aio.connect(url) as mgr:
            inside = asyncio.Event()

            async def work() -> None:
                async with mgr.acquire(name, ttl=30):
                    inside.set()
                    await asyncio.sleep(3600)

            task = asyncio.create_task(work())
            await inside.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await mgr.inspect(name) is None

    run(main)


def test_a_timed_out_wait_raises_lock_timeout_and_leaves_the_turn(url: str, name: str) -> None:
    async def main() -> None:
        async with lockapi.aio.connect(url) as mgr:
            holder = await mgr.acquire(name, ttl=30)
            results = await asyncio.gather(*(mgr.acquire(name, wait=0.2) for _ in range(5)), return_exceptions=True)
            assert all(isinstance(r, LockTimeout) for r in results), results
            assert mgr.waiting == 0
            await holder.release()
            assert (await mgr.acquire(name, wait=1)).token > holder.token

    run(main)


# -- threads -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_a_thousand_waiting_tasks_run_on_a_fixed_number_of_threads(
    backend: str, request: pytest.FixtureRequest, name: str
) -> None:
    url = f"memory://{name}" if backend == "memory" else request.getfixturevalue("redis_standalone").url

    async def main() -> None:
        async with lockapi.aio.connect(url) as mgr:
            holder = await mgr.acquire(name, ttl=60)
            before = threading.active_count()
            order: list[int] = []

            async def waiter(i: int) -> None:
                async with mgr.acquire(name, ttl=60, wait=120) as lease:
                    order.append(lease.token)

            tasks = [asyncio.create_task(waiter(i)) for i in range(1000)]
            while mgr.waiting < 1000:
                await asyncio.sleep(0.01)
            waiting_threads = threading.active_count()
            await holder.release()
            await asyncio.gather(*tasks)
            bound = before + 8 + 2  # the adapter's pool, plus a pub/sub reader and a sweeper at most
            assert waiting_threads <= bound, f"{waiting_threads - before} threads for 1000 waiting tasks"
            assert threading.active_count() <= bound
            assert len(order) == 1000 and order == sorted(order)

    run(main)


def test_auto_renew_and_on_lost_run_on_the_loop(name: str) -> None:
    async def main() -> None:
        async with lockapi.aio.connect(f"memory://{name}") as mgr:
            threads = threading.active_count()
            reported = asyncio.Event()
            lost_calls: list[Any] = []

            async def on_lost(lease: lockapi.aio.AsyncLease) -> None:
                lost_calls.append(lease)
                reported.set()

            lease = await mgr.acquire(name, ttl=0.3, auto_renew=True, on_lost=on_lost)
            started = time.monotonic()
            while time.monotonic() - started < 1.2:  # four ttls
                assert await lease.is_held() and not lease.lost
                await asyncio.sleep(0.1)
            assert threading.active_count() == threads, "auto-renewal started a thread"
            assert await mgr.backend.release(name, lease.holder, lease.token)  # taken away
            await asyncio.wait_for(reported.wait(), 5)
            assert lost_calls == [lease] and lease.lost
            assert not await lease.release()

    run(main)


def test_listeners_see_the_same_events_as_the_sync_api(name: str) -> None:
    def script_sync() -> list[tuple[str, bool | None]]:
        seen: list[lockapi.Event] = []
        with lockapi.connect(f"memory://{name}-sync") as mgr:
            mgr.add_listener(seen.append)
            lease = mgr.acquire(name, ttl=30)
            mgr.try_acquire(name)
            lease.extend()
            lease.release()
            mgr.semaphore(name, 1).acquire(ttl=5).release()
        return [(e.op, e.outcome) for e in seen]

    async def script_async() -> list[tuple[str, bool | None]]:
        seen: list[lockapi.Event] = []
        async with lockapi.aio.connect(f"memory://{name}-async") as mgr:
            mgr.add_listener(seen.append)
            lease = await mgr.acquire(name, ttl=30)
            await mgr.try_acquire(name)
            await lease.extend()
            await lease.release()
            await (await mgr.semaphore(name, 1).acquire(ttl=5)).release()
        return [(e.op, e.outcome) for e in seen]

    assert run(script_async) == script_sync()


def test_a_sync_backend_is_adapted_with_a_bounded_pool(tmp_path: Any) -> None:
    async def main() -> None:
        mgr = lockapi.aio.connect(f"sqlite:///{tmp_path / 'l.db'}?async_threads=2")
        assert isinstance(mgr.backend, SyncBackendAdapter)
        names = [f"n{i}" for i in range(20)]
        before = threading.active_count()
        leases = await asyncio.gather(*(mgr.acquire(n, ttl=30) for n in names))
        assert threading.active_count() <= before + 2
        await asyncio.gather(*(lease.release() for lease in leases))
        await mgr.aclose()

    run(main)


def test_fair_waiters_of_several_managers_keep_their_arrival_order(name: str) -> None:
    """Every fair waiter joins the backend's queue when it arrives, also behind another waiter of its own
    manager: a waiter held back in a local queue would be overtaken by a later arrival of another manager
    (rule 7). Flaky on the conformance suite before; here the store's queue is read directly."""
    async def main() -> None:
        url = f"memory://{name}"
        async with lockapi.aio.connect(url) as x, lockapi.aio.connect(url) as y:
            store = x.backend.sync_backend._s  # type: ignore[union-attr]
            holder = await x.acquire(name, ttl=30)
            order: list[int] = []

            async def waiter(i: int, mgr: lockapi.aio.AsyncLockManager) -> None:
                async with mgr.acquire(name, ttl=30, wait=30, fair=True):
                    order.append(i)

            tasks = []
            for i in range(4):
                tasks.append(asyncio.create_task(waiter(i, x if i % 2 == 0 else y)))
                deadline = time.monotonic() + 5
                while len(store.queues.get(name, ())) < i + 1:
                    assert time.monotonic() < deadline, f"fair waiter {i} never joined the queue"
                    await asyncio.sleep(0.005)
            assert await holder.release()
            await asyncio.gather(*tasks)
            assert order == [0, 1, 2, 3]

    run(main)
