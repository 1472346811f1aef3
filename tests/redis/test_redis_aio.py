"""The native asyncio Redis backend (lockapi_redis.aio_backend) on real servers, beyond the shared
contract (LockConformance runs over the async API too): it is the native one, one shared pub/sub
connection for many waiting tasks, cancellation leaves nothing behind, reconnect after a restart, a frozen
or unreachable server, the bounded pool, idle connections, and sync and async clients on the same data."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from lockapi_redis import RedisBackend
from lockapi_redis.aio_backend import AsyncRedisBackend
from lockapi_redis.aio_pool import AsyncBoundedPool

import lockapi
import lockapi.aio
from lockapi.spi import BackendConfig, BackendUnavailable, Capability, Options
from lockapi.testing.suite import WaitingCount
from tests.servers.common import free_port
from tests.servers.redis import RedisCluster, RedisServer, redis_server

pytestmark = pytest.mark.timeout(180)


def backend(url: str, timeout: float = 5.0, **options: Any) -> AsyncRedisBackend:
    return AsyncRedisBackend(BackendConfig(url=url, scheme=url.split("://", 1)[0], options=Options(options),
                                           timeout=timeout))


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(main())


@pytest.fixture
def name() -> str:
    return f"aio:{uuid.uuid4().hex}"


async def eventually(check: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def acquire(mgr: lockapi.aio.AsyncLockManager, name: str, **kwargs: Any) -> lockapi.aio.AsyncLease:
    return await mgr.acquire(name, **kwargs)


def pubsub_clients(server: RedisServer) -> int:
    """Connections in pub/sub mode on ``server`` (CLIENT LIST flag P)."""
    client = server.client()
    try:
        return sum(1 for c in client.client_list() if "P" in c["flags"])
    finally:
        client.close()


# -- it is the native backend ------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["redis", "rediss", "redis+sentinel", "redis+cluster"])
def test_every_redis_scheme_gets_the_native_backend(scheme: str) -> None:
    url = {"redis+sentinel": "redis+sentinel://h:26379/svc", "redis+cluster": "redis+cluster://h1,h2"}.get(
        scheme, f"{scheme}://h")

    async def main() -> None:
        mgr = lockapi.aio.connect(url, async_threads=4)  # the adapters' option is accepted, not needed
        assert type(mgr.backend) is AsyncRedisBackend and mgr.backend.sync_backend is None
        assert mgr.capabilities == RedisBackend.capabilities - {Capability.ITER_DONE}
        await mgr.aclose()

    run(main)


def test_no_thread_is_started_while_waiting_renewing_and_losing(redis_standalone: RedisServer, name: str) -> None:
    async def main() -> None:
        before = {t.ident for t in threading.enumerate()}
        async with lockapi.aio.connect(redis_standalone.url, idle_timeout=60) as mgr:
            lost = asyncio.Event()
            holder = await mgr.acquire(name, ttl=0.5, auto_renew=True, on_lost=lambda lease: lost.set())
            waiter = asyncio.create_task(acquire(mgr, name, ttl=30, wait=30))
            await eventually(lambda: mgr.backend.watcher_count() == 1, "the waiter to subscribe")
            await asyncio.sleep(1.5)  # three ttls: only renewals on the loop keep the lease
            assert await holder.is_held() and not holder.lost
            assert {t.ident for t in threading.enumerate()} == before, "the native backend started a thread"
            assert await mgr.backend.force_release(name)  # taken away: the next renewal is refused
            await asyncio.wait_for(lost.wait(), 5)
            await (await waiter).release()
            assert {t.ident for t in threading.enumerate()} == before

    run(main)


# -- pub/sub -----------------------------------------------------------------------------------------------
def test_one_pubsub_connection_for_a_thousand_waiting_tasks(redis_standalone: RedisServer, name: str) -> None:
    names = [f"{name}:{i}" for i in range(100)]

    async def main() -> None:
        before = pubsub_clients(redis_standalone)
        async with lockapi.aio.connect(redis_standalone.url) as holder_mgr, \
                lockapi.aio.connect(redis_standalone.url) as mgr:
            holders = [await holder_mgr.acquire(n, ttl=60) for n in names]
            granted: list[str] = []

            async def waiter(n: str) -> None:
                async with mgr.acquire(n, ttl=60, wait=120):
                    granted.append(n)

            tasks = [asyncio.create_task(waiter(names[i % 100])) for i in range(1000)]
            backend: AsyncRedisBackend = mgr.backend  # type: ignore[assignment]
            client = redis_standalone.client()
            channels = {backend.keys.channel(n).encode() for n in names}
            await eventually(lambda: mgr.waiting == 1000 and backend.watcher_count() == 100
                             and set(client.pubsub_channels(f"lockapi:{{{name}:*")) == channels,
                             "1000 waiters, their 100 names subscribed")
            assert backend.pubsub_connections() == 1
            assert pubsub_clients(redis_standalone) == before + 1, "more than one pub/sub connection"
            # a release by another client wakes that name's waiters through pub/sub
            assert await holders[7].release()
            await eventually(lambda: granted.count(names[7]) == 10, "the ten waiters of one name")
            assert set(granted) == {names[7]}
            for lease in holders:
                await lease.release()
            await asyncio.gather(*tasks)
            assert len(granted) == 1000
            assert backend.watcher_count() == 0
            await eventually(lambda: not client.pubsub_channels(f"lockapi:{{{name}:*"), "every channel unsubscribed")
            client.close()

    run(main)


def test_a_cancelled_waiter_leaves_no_subscription_queue_entry_or_lease(
        redis_standalone: RedisServer, name: str) -> None:
    async def main() -> None:
        client = redis_standalone.client()
        async with lockapi.aio.connect(redis_standalone.url) as mgr, \
                lockapi.aio.connect(redis_standalone.url) as other:
            backend: AsyncRedisBackend = mgr.backend  # type: ignore[assignment]
            channel = backend.keys.channel(name)
            holder = await other.acquire(name, ttl=30)
            for fair in (False, True, True):
                waiter = asyncio.create_task(acquire(mgr, name, ttl=30, wait=30, fair=fair))
                await eventually(lambda: client.pubsub_numsub(channel)[0][1] == 1, "the server to see the SUBSCRIBE")
                if fair:
                    await eventually(lambda: client.llen(backend.keys.key(name, "queue")) == 1, "the waiter to queue")
                waiter.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiter
                await mgr._background.drain()
                assert backend.watcher_count() == 0, "the cancelled waiter's watch was left behind"
                await eventually(lambda: client.pubsub_numsub(channel)[0][1] == 0, "the channel to be unsubscribed")
                assert client.llen(backend.keys.key(name, "queue")) == 0, "the cancelled fair waiter is still queued"
                assert client.zcard(backend.keys.key(name, "qtime")) == 0
                assert mgr.waiting == 0
            assert await holder.release()
            assert await mgr.inspect(name) is None, "a cancelled waiter was granted the lock"
        client.close()

    run(main)


def test_a_watch_cancelled_before_its_subscribe_is_confirmed_leaves_nothing(name: str) -> None:
    with redis_server() as server:
        async def main() -> None:
            be = backend(server.url, timeout=30)
            try:
                assert (await be.try_acquire("warm-up", "h", 5)).token is not None  # connected before the freeze
                assert server.process is not None
                server.process.signal(signal.SIGSTOP)
                try:
                    entered = asyncio.Event()

                    async def watching() -> None:
                        async with be.watch(name, lambda: None):
                            entered.set()

                    task = asyncio.create_task(watching())
                    await eventually(lambda: be.watcher_count() == 1, "the watch to register")
                    task.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await task
                    assert not entered.is_set()
                    assert be.watcher_count() == 0 and not be._hub.subs.channels
                finally:
                    server.process.signal(signal.SIGCONT)
            finally:
                await be.aclose()

        run(main)


def test_watchers_are_woken_and_resubscribed_after_a_restart(name: str) -> None:
    with redis_server() as server:
        async def main() -> None:
            be = backend(server.url)
            try:
                woken = asyncio.Event()
                async with be.watch(name, woken.set):
                    server.restart()
                    await asyncio.wait_for(woken.wait(), 10)  # a broken pub/sub connection wakes its watchers
                    client = server.client()
                    channel = be.keys.channel(name)
                    await eventually(lambda: client.pubsub_numsub(channel)[0][1] == 1, "re-subscription")
                    woken.clear()
                    token = (await be.try_acquire(name, "h", 30)).token  # the pool reconnects as well
                    assert token is not None and await be.release(name, "h", token)
                    await asyncio.wait_for(woken.wait(), 5)
                    client.close()
            finally:
                await be.aclose()

        run(main)


def test_a_fair_release_wakes_only_the_head(redis_standalone: RedisServer, name: str) -> None:
    async def main() -> None:
        be = backend(redis_standalone.url)
        try:
            token = (await be.try_acquire(name, "holder", 30)).token
            assert token is not None
            for w in ("w1", "w2"):
                assert (await be.try_acquire(name, w, 30, queue_ttl=60)).token is None
            woken = {w: asyncio.Event() for w in ("w1", "w2", "plain")}
            control = asyncio.Event()
            async with be.watch(name, woken["w1"].set, holder="w1"), be.watch(name, woken["w2"].set, holder="w2"), \
                    be.watch(name, woken["plain"].set), be.watch(f"{name}:control", control.set):
                assert await be.release(name, "holder", token)
                await asyncio.wait_for(woken["w1"].wait(), 5)
                ctl = (await be.try_acquire(f"{name}:control", "c", 30)).token  # delivered after the first message
                assert ctl is not None and await be.release(f"{name}:control", "c", ctl)
                await asyncio.wait_for(control.wait(), 5)
                assert woken["plain"].is_set() and not woken["w2"].is_set(), "a waiter behind the head was woken"
        finally:
            await be.aclose()

    run(main)


# -- failures ----------------------------------------------------------------------------------------------
def _every_call(be: AsyncRedisBackend) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
    return [
        ("try_acquire", lambda: be.try_acquire("y", "h", 5)),
        ("fair try_acquire", lambda: be.try_acquire("y", "h", 5, queue_ttl=1)),
        ("release", lambda: be.release("x", "h", 1)),
        ("extend", lambda: be.extend("x", "h", 1, 5)),
        ("inspect", lambda: be.inspect("x")),
        ("holds", lambda: be.holds("x", "h", 1)),
        ("cancel_wait", lambda: be.cancel_wait("x", "h")),
        ("try_acquire_many", lambda: be.try_acquire_many(["a", "b"], "h", 5)),
        ("try_acquire_permit", lambda: be.try_acquire_permit("s", 2, "h", 5)),
        ("release_permit", lambda: be.release_permit("s", "h", 1)),
        ("extend_permit", lambda: be.extend_permit("s", "h", 1, 5)),
        ("holds_permit", lambda: be.holds_permit("s", "h", 1)),
        ("mark_done", lambda: be.mark_done("d", 5)),
        ("done", lambda: be.done(["d", "e"])),
        ("set_fence_floor", lambda: be.set_fence_floor("x", 10)),
        ("force_release", lambda: be.force_release("x")),
        ("ping", lambda: be.ping()),
    ]


def test_a_frozen_server_is_backend_unavailable_within_timeout_on_every_call() -> None:
    with redis_server() as server:
        async def main() -> None:
            be = backend(server.url, timeout=0.5)
            try:
                assert (await be.try_acquire("x", "h", 5)).token is not None
                assert server.process is not None
                server.process.signal(signal.SIGSTOP)
                try:
                    for what, call in [*_every_call(be), ("watch", lambda: _enter(be.watch("w", lambda: None)))]:
                        started = time.monotonic()
                        with pytest.raises(BackendUnavailable):
                            await call()
                        elapsed = time.monotonic() - started
                        assert elapsed < 0.5 + 1.0, f"{what} took {elapsed:.2f}s with a 0.5s timeout"
                finally:
                    server.process.signal(signal.SIGCONT)
                deadline = time.monotonic() + 10
                while True:  # the pool reconnects once the server answers again (and runs what it was sent)
                    try:
                        await be.ping()
                        break
                    except BackendUnavailable:
                        assert time.monotonic() < deadline
                        await asyncio.sleep(0.1)
            finally:
                await be.aclose()

        run(main)


def test_a_grant_answered_after_its_caller_was_cancelled_is_given_back(
        redis_standalone: RedisServer, name: str) -> None:
    """The attempt runs inside the caller's task (no task of its own): a cancellation between send and
    reply returns the caller at once, the reply is still read (the connection stays usable) and the grant
    in it given back."""
    async def main() -> None:
        client = redis_standalone.client()
        async with lockapi.aio.connect(redis_standalone.url) as mgr:
            await mgr.ping()
            client.client_pause(30_000, all=False)  # write commands (the acquire script) wait, unanswered
            try:
                caller = asyncio.create_task(mgr.try_acquire(name, ttl=30))
                await eventually(lambda: client.info("clients")["blocked_clients"] == 1, "the attempt to be sent")
                caller.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await caller  # at once: the server has not answered yet
                assert client.info("clients")["blocked_clients"] == 1, "the caller waited for the reply"
            finally:
                client.client_unpause()
            await mgr._background.drain()
            assert await mgr.inspect(name) is None, "the grant nobody heard about was not given back"
            lease = await mgr.try_acquire(name, ttl=30)
            assert lease is not None and await lease.release()
        client.close()

    run(main)


def test_a_frozen_server_is_backend_unavailable_through_the_manager_and_the_callers_deadline_holds(
        name: str) -> None:
    """The client's own read timeout interrupts an attempt run inside the caller's task (it is the
    attempt's, not the caller's), and the caller's own asyncio.timeout ends its wait on time."""
    with redis_server() as server:
        async def main() -> None:
            async with lockapi.aio.connect(server.url, timeout=2.0) as mgr:
                held = await mgr.try_acquire(f"{name}:held", ttl=30)
                assert held is not None
                assert server.process is not None
                server.process.signal(signal.SIGSTOP)
                try:
                    for what, call in [("try_acquire", lambda: mgr.try_acquire(name, ttl=30)),
                                       ("release", held.release)]:
                        started = time.monotonic()
                        with pytest.raises(BackendUnavailable):
                            await call()
                        elapsed = time.monotonic() - started
                        assert elapsed < 2.0 + 1.5, f"{what} took {elapsed:.2f}s with a 2s timeout"
                        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
                    started = time.monotonic()
                    with pytest.raises(TimeoutError):
                        async with asyncio.timeout(0.05):
                            await mgr.try_acquire(name, ttl=30)
                    elapsed = time.monotonic() - started
                    assert elapsed < 1.0, f"the caller's 0.05s deadline ended its wait after {elapsed:.2f}s (client 2s)"
                finally:
                    server.process.signal(signal.SIGCONT)
                await mgr._background.drain()  # the attempt left behind ends (timeout or reply, given back)

        run(main)


async def _enter(watch: Any) -> None:
    async with watch:
        pass


def test_an_unreachable_server_is_backend_unavailable_within_timeout() -> None:
    async def main() -> None:
        be = backend(f"redis://127.0.0.1:{free_port()}", timeout=1.0)
        try:
            for what, call in _every_call(be)[:3]:
                started = time.monotonic()
                with pytest.raises(BackendUnavailable, match=r"redis at redis://127\.0\.0\.1"):
                    await call()
                assert time.monotonic() - started < 1.5, what
        finally:
            await be.aclose()

    run(main)


def test_errors_never_show_the_password() -> None:
    with redis_server(password="s3cret-pw") as server:
        async def main() -> None:
            be = backend(f"redis://:wrong-pw@127.0.0.1:{server.port}")
            try:
                with pytest.raises(BackendUnavailable) as info:
                    await be.try_acquire("x", "h", 5)
                assert "wrong-pw" not in str(info.value) and ":***@" in str(info.value)
            finally:
                await be.aclose()

        run(main)


def test_a_closed_backend_refuses_calls(redis_standalone: RedisServer) -> None:
    async def main() -> None:
        be = backend(redis_standalone.url)
        assert await be.inspect("x") is None
        await be.aclose()
        await be.aclose()  # idempotent
        with pytest.raises(BackendUnavailable, match="closed"):
            await be.inspect("x")
        with pytest.raises(BackendUnavailable, match="closed"):
            await _enter(be.watch("x", lambda: None))

    run(main)


# -- the pool ----------------------------------------------------------------------------------------------
def test_a_caller_gets_backend_unavailable_when_every_connection_stays_busy(
        redis_standalone: RedisServer, name: str) -> None:
    async def main() -> None:
        be = backend(redis_standalone.url, timeout=1.0, max_connections=1)
        try:
            pool = be._pool
            assert isinstance(pool, AsyncBoundedPool)
            held = await pool.take()
            started = time.monotonic()
            with pytest.raises(BackendUnavailable, match="max_connections=1"):
                await be.try_acquire(name, "h", 5)
            assert 0.9 <= time.monotonic() - started < 3.0
            waiting = asyncio.create_task(be.try_acquire(name, "h", 5))
            await eventually(lambda: len(pool._waiters) == 1, "the caller to wait for the connection")
            pool.give(held)  # handed straight to the waiting caller
            assert (await asyncio.wait_for(waiting, 5)).token is not None
            assert pool.open_connections == 1
        finally:
            await be.aclose()

    run(main)


def test_a_connection_the_server_closed_while_idle_is_replaced(redis_standalone: RedisServer, name: str) -> None:
    async def main() -> None:
        be = backend(redis_standalone.url, client_name=f"aio-{name}")
        admin = redis_standalone.client()
        try:
            assert (await be.try_acquire(name, "h", 5)).token is not None
            assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
            await asyncio.sleep(0.05)  # the loop sees the EOF
            assert await be.inspect(name) is not None  # no BackendUnavailable: the dead connection was noticed
        finally:
            admin.close()
            await be.aclose()

    run(main)


def test_idle_connections_are_closed_after_idle_timeout(redis_standalone: RedisServer, name: str) -> None:
    tag = f"aio-idle-{uuid.uuid4().hex[:8]}"

    def ours() -> int:
        client = redis_standalone.client()
        try:
            return sum(1 for c in client.client_list() if c.get("name") == tag)
        finally:
            client.close()

    async def main() -> None:
        be = backend(redis_standalone.url, idle_timeout=0.4, max_idle_connections=1, client_name=tag)
        try:
            await asyncio.gather(*(be.inspect(f"{name}:{i}") for i in range(5)))  # a burst: up to 5 connections
            pool = be._pool
            assert isinstance(pool, AsyncBoundedPool)
            assert pool.open_connections <= 1, "max_idle_connections=1 keeps one idle connection at most"
            async with be.watch(name, lambda: None):
                pass
            await eventually(lambda: ours() == 0, "every idle connection, pub/sub included, to close", 10)
            assert pool.open_connections == 0 and be.pubsub_connections() == 0
            assert await be.inspect(name) is None  # and the next call opens a new one
        finally:
            await be.aclose()

    run(main)


# -- one fleet, two APIs -----------------------------------------------------------------------------------
def test_sync_and_async_clients_share_the_locks(redis_standalone: RedisServer, name: str) -> None:
    async def main() -> None:
        with lockapi.connect(redis_standalone.url) as sync:
            async with lockapi.aio.connect(redis_standalone.url) as mgr:
                lease = await mgr.acquire(name, ttl=30)
                assert sync.try_acquire(name) is None
                woken_at: list[float] = []

                def sync_waiter() -> None:
                    got = sync.acquire(name, ttl=30, wait=30)
                    woken_at.append(time.monotonic())
                    assert got.token > lease.token
                    got.release()

                waiting = WaitingCount(name)
                sync.add_observer(waiting)
                thread = threading.Thread(target=sync_waiter)
                thread.start()
                await asyncio.to_thread(waiting.wait_for, 1, 60, "the sync waiter did not block")
                released = time.monotonic()
                assert await lease.release()
                await asyncio.to_thread(thread.join, 30)
                assert woken_at and woken_at[0] - released < 1.0, "the sync waiter was not woken by the release"
                again = await mgr.acquire(name, ttl=30)
                assert sync.inspect(name) is not None and (await mgr.inspect(name)).token == again.token  # type: ignore[union-attr]
                await again.release()

    run(main)


@pytest.mark.slow
def test_one_pubsub_connection_per_master_on_a_cluster(redis_cluster_nodes: RedisCluster, name: str) -> None:
    async def main() -> None:
        be = backend(redis_cluster_nodes.url)
        try:
            names = [f"{name}:{i}" for i in range(60)]  # spread over the three masters
            woken = {n: asyncio.Event() for n in names}
            watches = [be.watch(n, woken[n].set) for n in names]
            for w in watches:
                await w.__aenter__()
            try:
                assert be.pubsub_connections() == 3
                token = (await be.try_acquire(names[5], "h", 30)).token
                assert token is not None and await be.release(names[5], "h", token)
                await asyncio.wait_for(woken[names[5]].wait(), 5)  # sharded: SPUBLISH on the slot's master
                assert await be.done(names) == set()
                await be.mark_done(names[1], 30)
                assert await be.done(names) == {names[1]}
            finally:
                for w in watches:
                    await w.__aexit__(None, None, None)
            assert be.watcher_count() == 0
        finally:
            await be.aclose()

    run(main)


def test_waiting_acquire_on_unreachable_server_fails_at_its_first_attempt() -> None:
    """As the sync API: the lock is tried before subscribing, so a refused connection is reported at
    once, not at the subscription's timeout."""
    async def main() -> None:
        async with lockapi.aio.connect(f"redis://127.0.0.1:{free_port()}?timeout=3") as mgr:
            started = time.monotonic()
            with pytest.raises(BackendUnavailable, match="connecting to"):
                await mgr.acquire("x", ttl=5, wait=10)
            assert time.monotonic() - started < 1.5

    run(main)
