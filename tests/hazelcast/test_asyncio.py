"""Map mode on lockapi.aio (AsyncMapBackend, hazelcast.asyncio) beyond the conformance suite, which runs
over the asyncio API too: the plugin choice, sync/async interoperation, errors identical to the sync
API, wake-ups on the loop, cancellation that leaves nothing behind, no thread per waiter, and a frozen
member answered by BackendUnavailable within the timeout."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import hazelcast
import pytest
from lockapi_hazelcast import AsyncMapBackend, CPBackend, MapBackend

import lockapi
import lockapi.aio
from lockapi.aio.plugins import open_async_backend
from lockapi.aio.spi import SyncBackendAdapter
from lockapi.errors import BackendUnavailable, ConfigError
from lockapi.testing.pauses import record_points
from tests.reliability.targets import freeze, thaw
from tests.servers.common import free_port
from tests.servers.hazelcast import MAP_VERSION, HazelcastCluster, hazelcast_cluster

pytestmark = pytest.mark.timeout(300)


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(main())  # type: ignore[arg-type]


@pytest.fixture
def name() -> str:
    return f"aio:{uuid.uuid4().hex}"


def raw_client(cluster: HazelcastCluster) -> hazelcast.HazelcastClient:
    return hazelcast.HazelcastClient(cluster_name=cluster.cluster_name, cluster_members=cluster.addresses.split(","),
                                     cluster_connect_timeout=30, statistics_enabled=False)


# -- the plugin ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "native"), [
    ("hazelcast://127.0.0.1:1", True),
    ("hazelcast://127.0.0.1:1?mode=map", True),
    ("hazelcast+cp://127.0.0.1:1", False),
    ("hazelcast://127.0.0.1:1?mode=cp", False),
])
def test_map_mode_is_native_and_cp_mode_adapted(url: str, native: bool) -> None:
    async def main() -> None:
        async with lockapi.aio.connect(url) as mgr:  # no I/O until first use
            if native:
                assert type(mgr.backend) is AsyncMapBackend
            else:
                assert isinstance(mgr.backend, SyncBackendAdapter)
                assert type(mgr.backend.sync_backend) is CPBackend

    run(main)


def test_the_async_backend_declares_what_the_sync_one_does() -> None:
    for attr in ("capabilities", "description", "pause_points", "max_permits", "mode"):
        assert getattr(AsyncMapBackend, attr) == getattr(MapBackend, attr), attr


@pytest.mark.parametrize("options", [
    {"mode": "ap"}, {"colour": "red"}, {"prefix": "a/b"}, {"prefix": " a"}, {"members": "host:notaport"},
    {"timeout": -1},
])
def test_bad_options_fail_before_io_with_the_sync_message(options: dict[str, object]) -> None:
    url = "hazelcast://127.0.0.1:1"
    with pytest.raises(ConfigError) as sync_error:
        lockapi.connect(url, **options)
    started = time.monotonic()
    with pytest.raises(ConfigError) as async_error:
        lockapi.aio.connect(url, **options)
    assert time.monotonic() - started < 1.0
    assert str(async_error.value) == str(sync_error.value)


def test_unreachable_cluster_is_unavailable_within_timeout_and_redacted() -> None:
    url = f"hazelcast://app:hunter2@127.0.0.1:{free_port()}"  # nothing listens there

    async def main() -> str:
        async with lockapi.aio.connect(url, timeout=2) as mgr:
            started = time.monotonic()
            with pytest.raises(BackendUnavailable) as caught:
                await mgr.try_acquire("unreachable")
            elapsed = time.monotonic() - started
            assert elapsed < 2 + 2.5, f"BackendUnavailable after {elapsed:.1f}s with timeout=2"
            return str(caught.value)

    message = run(main)
    assert "hunter2" not in message and "\n" not in message, message
    assert message.startswith(f"hazelcast hazelcast://app:***@127.0.0.1:{url.rsplit(':', 1)[1]} (mode=map): "), message


def test_a_backend_serves_one_event_loop_at_a_time(hazelcast_member: HazelcastCluster, name: str) -> None:
    """The asyncio client belongs to its loop: after that loop closed, the next call connects anew on the
    caller's loop; used from a second loop while the first still runs, the backend refuses clearly."""
    backend = open_async_backend(hazelcast_member.url("map"))

    async def take_and_give_back() -> None:
        attempt = await backend.try_acquire(name, "h", 30)
        assert attempt.token is not None and await backend.release(name, "h", attempt.token)

    asyncio.run(take_and_give_back())
    asyncio.run(take_and_give_back())  # the first loop is closed: a new client on this one
    first_loop_runs, done = threading.Event(), threading.Event()

    async def hold_the_loop() -> None:
        await take_and_give_back()
        first_loop_runs.set()
        while not done.is_set():
            await asyncio.sleep(0.01)
        await backend.aclose()

    thread = threading.Thread(target=asyncio.run, args=(hold_the_loop(),))
    thread.start()
    try:
        assert first_loop_runs.wait(60)
        with pytest.raises(RuntimeError, match="another event loop"):
            asyncio.run(take_and_give_back())
    finally:
        done.set()
        thread.join(60)


# -- one cluster, both APIs ------------------------------------------------------------------------------
def test_sync_and_async_clients_share_locks_permits_queues_and_markers(hazelcast_member: HazelcastCluster,
                                                                      name: str) -> None:
    url = hazelcast_member.url("map")

    async def main() -> None:
        with lockapi.connect(url) as sync:
            async with lockapi.aio.connect(url) as mgr:
                held = sync.acquire(name, ttl=30)
                assert await mgr.try_acquire(name, ttl=30) is None
                info = await mgr.inspect(name)
                assert info is not None and (info.holder, info.token) == (held.holder, held.token)
                assert held.release()
                mine = await mgr.acquire(name, ttl=30)
                assert mine.token > held.token
                assert sync.try_acquire(name) is None
                assert await mine.extend(30) and sync.inspect(name) is not None
                assert await mine.release()

                permit = await mgr.semaphore(name, 1).acquire(ttl=30)
                assert sync.semaphore(name, 1).try_acquire() is None
                assert await permit.release()
                assert sync.semaphore(name, 1).try_acquire(ttl=30).release()

                await mgr.backend.mark_done(f"{name}:a", 30)
                sync.backend.mark_done(f"{name}:b", 30)
                both = {f"{name}:a", f"{name}:b"}
                assert await mgr.backend.done([*both, f"{name}:c"]) == both == sync.backend.done(list(both))

                holder = sync.acquire(name, ttl=30)
                fair = asyncio.create_task(_acquire(mgr, name, ttl=30, wait=30, fair=True))
                queues = sync.backend._holder.session().maps["queues"]  # type: ignore[attr-defined]
                while not queues.blocking().get(name):  # the asyncio waiter is queued
                    await asyncio.sleep(0.01)
                assert sync.try_acquire(name, fair=True) is None  # behind it, though the lock is free next
                assert holder.release()
                granted = await fair
                assert granted.token > holder.token and await granted.release()

    run(main)


def test_errors_read_as_the_sync_api_s(hazelcast_member: HazelcastCluster, name: str) -> None:
    """A foreign lock on lockapi's own lease entry: extend fails the same way, word for word."""
    url = hazelcast_member.url("map")
    foreign = raw_client(hazelcast_member)
    try:
        with lockapi.connect(url, timeout=2) as sync:
            lease = sync.acquire(name, ttl=30)
            locks = foreign.get_map("lockapi.locks").blocking()
            locks.lock(name, lease_time=60)
            with pytest.raises(BackendUnavailable) as sync_error:
                lease.extend(30)

            async def main() -> str:
                async with lockapi.aio.connect(url, timeout=2) as mgr:
                    with pytest.raises(BackendUnavailable) as async_error:
                        await mgr.backend.extend(name, lease.holder, lease.token, 30)
                    return str(async_error.value)

            assert run(main) == str(sync_error.value)
            locks.unlock(name)
            assert lease.release()
    finally:
        foreign.shutdown()


def test_an_extension_gives_its_key_lock_back(hazelcast_member: HazelcastCluster, name: str) -> None:
    """The asyncio client's key lock belongs to the task that took it: extend unlocks from that task, so
    another client's write to the entry right after is not parked until the key lock's lease (5 s here)
    runs out."""
    url = hazelcast_member.url("map")

    async def main() -> None:
        with lockapi.connect(url, timeout=10) as sync:
            async with lockapi.aio.connect(url, timeout=10) as mgr:
                for _ in range(3):
                    lease = await mgr.acquire(name, ttl=30)
                    assert await lease.extend(30)
                    started = time.monotonic()
                    assert sync.backend.release(name, lease.holder, lease.token)  # a write: waits for key locks
                    elapsed = time.monotonic() - started
                    assert elapsed < 2.5, f"the release was parked {elapsed:.1f}s behind the extension's key lock"

    run(main)


# -- wake-ups ----------------------------------------------------------------------------------------------
def test_a_watch_is_in_effect_once_entered(hazelcast_member: HazelcastCluster, name: str) -> None:
    """``__aenter__`` returns once the cluster confirmed the entry listener: a release sent right after
    it wakes the watch (each round on a new backend, whose listener is not registered yet)."""
    url = hazelcast_member.url("map")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with lockapi.connect(url) as sync:
            for round_ in range(3):
                key = f"{name}:{round_}"
                lease = sync.acquire(key, ttl=30)
                woken = asyncio.Event()
                async with lockapi.aio.connect(url) as mgr, \
                        mgr.backend.watch(key, functools.partial(loop.call_soon_threadsafe, woken.set)):
                    assert lease.release()
                    await asyncio.wait_for(woken.wait(), 10)

    run(main)


def test_expiry_wakes_a_watch_on_the_loop(hazelcast_member: HazelcastCluster, name: str) -> None:
    url = hazelcast_member.url("map")

    async def main() -> None:
        async with lockapi.aio.connect(url) as holder, lockapi.aio.connect(url) as mgr:
            await holder.acquire(name, ttl=1)
            woken = asyncio.Event()
            loop_thread = threading.current_thread()
            threads: list[threading.Thread] = []

            def wake() -> None:
                threads.append(threading.current_thread())
                woken.set()

            async with mgr.backend.watch(name, wake):
                await asyncio.wait_for(woken.wait(), 15)  # ttl 1 s (+1 s slack); members sweep every second
            assert threads and all(t is loop_thread for t in threads), "the event was not delivered on the loop"
            assert await mgr.try_acquire(name) is not None

    run(main)


# -- cancellation ----------------------------------------------------------------------------------------
def _registrations(mgr: lockapi.aio.AsyncLockManager) -> int:
    """Listener registrations the asyncio client keeps (it re-registers each on every member)."""
    session = mgr.backend._holder._session  # type: ignore[attr-defined]
    return len(session.client._listener_service._active_registrations)


def _queue(cluster_client: hazelcast.HazelcastClient, name: str) -> str | None:
    value: str | None = cluster_client.get_map("lockapi.queues").blocking().get(name)
    return value


def test_a_cancelled_fair_waiter_leaves_no_queue_entry_and_no_listener(hazelcast_member: HazelcastCluster,
                                                                      name: str) -> None:
    url = hazelcast_member.url("map")
    observer = raw_client(hazelcast_member)

    async def main() -> None:
        async with lockapi.aio.connect(url) as mgr, lockapi.aio.connect(url) as other:
            holder = await other.acquire(name, ttl=30)
            watches = mgr.backend._watches["locks"]  # type: ignore[attr-defined]
            await mgr.inspect(name)  # connected
            listeners = _registrations(mgr)
            for fair in (True, False, True):
                waiter = asyncio.create_task(_acquire(mgr, name, ttl=30, wait=60, fair=fair))
                while watches.open == 0 or (fair and _queue(observer, name) is None):  # subscribed (and queued)
                    await asyncio.sleep(0.005)
                assert _registrations(mgr) <= listeners + 1
                waiter.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiter
                await mgr._background.drain()
                assert watches.open == 0, "the cancelled waiter's watch was left open"
                assert mgr.waiting == 0
                assert _queue(observer, name) is None, "the cancelled fair waiter is still queued"
            assert _registrations(mgr) == listeners + 1, "one listener per watched map, not one per waiter"
            assert await holder.release()
            assert await mgr.inspect(name) is None, "a cancelled waiter was granted the lock"

    try:
        run(main)
    finally:
        observer.shutdown()


def test_a_waiter_cancelled_while_its_listener_registers_leaves_one_listener_that_wakes(
        hazelcast_member: HazelcastCluster, name: str) -> None:
    """The first waiter of a fresh manager registers the map's entry listener; cancelled while that
    registration is on its way, it must neither leave the registration half-done (on the cluster but not
    recorded, so that the next waiter registers a second listener) nor stop it: the one listener ends up
    registered, and it wakes the next watch."""
    url = hazelcast_member.url("map")

    async def main() -> None:
        async with lockapi.aio.connect(url) as mgr, lockapi.aio.connect(url) as other:
            holder = await other.acquire(name, ttl=30)
            await mgr.inspect(name)  # connected, no listener yet
            session = mgr.backend._holder._session  # type: ignore[attr-defined]
            watches = mgr.backend._watches["locks"]  # type: ignore[attr-defined]
            listeners = _registrations(mgr)
            waiter = asyncio.create_task(_acquire(mgr, name, ttl=30, wait=60))
            while watches.open == 0:  # denied, and now registering the listener
                await asyncio.sleep(0)
            assert "locks" not in session.listening, "the registration was not under way when cancelled"
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            give_up = time.monotonic() + 15
            while "locks" not in session.listening:
                assert time.monotonic() < give_up, "the cancelled waiter's listener registration stopped"
                await asyncio.sleep(0.005)
            assert _registrations(mgr) == listeners + 1
            woken = asyncio.Event()
            async with mgr.backend.watch(name, woken.set):
                assert _registrations(mgr) == listeners + 1, "the next waiter registered a second listener"
                assert await holder.release()
                await asyncio.wait_for(woken.wait(), 15)

    run(main)


def test_a_fair_waiter_cancelled_mid_attempt_leaves_no_queue_entry(hazelcast_member: HazelcastCluster,
                                                                  name: str) -> None:
    """The waiter's attempt is under way when its task is cancelled: its queue write is parked behind a
    key lock on the queue entry. The attempt runs on after the cancellation; leaving the queue must come
    after it, or the attempt's late write puts the gone waiter back in the queue."""
    url = hazelcast_member.url("map")
    observer = raw_client(hazelcast_member)
    queues = observer.get_map("lockapi.queues").blocking()

    async def main() -> None:
        async with lockapi.aio.connect(url) as mgr, lockapi.aio.connect(url) as other:
            holder = await other.acquire(name, ttl=30)
            queues.lock(name, lease_time=30)
            with record_points() as seen:
                waiter = asyncio.create_task(_acquire(mgr, name, ttl=30, wait=60, fair=True))
                while "acquire_fair:queue-read" not in seen:  # read the queue; its write is on its way
                    await asyncio.sleep(0.005)
                waiter.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiter
                # Leaving the queue now (reading it, finding nobody to remove) would be the bug: give it
                # the time to show, then let the parked write through.
                window = time.monotonic() + 2
                while "cancel_wait:queue-read" not in seen and time.monotonic() < window:
                    await asyncio.sleep(0.005)
                queues.unlock(name)
                await mgr._background.drain()
            assert _queue(observer, name) is None, "the cancelled fair waiter was queued after it left"
            assert await holder.release()

    try:
        run(main)
    finally:
        observer.shutdown()


# -- threads ------------------------------------------------------------------------------------------------
def test_a_thousand_waiting_tasks_run_on_a_fixed_number_of_threads(hazelcast_member: HazelcastCluster,
                                                                   name: str) -> None:
    url = hazelcast_member.url("map")

    async def main() -> None:
        async with lockapi.aio.connect(url) as mgr:
            holder = await mgr.acquire(name, ttl=60)
            before = threading.active_count()
            order: list[int] = []

            async def waiter() -> None:
                async with mgr.acquire(name, ttl=60, wait=240) as lease:
                    order.append(lease.token)

            tasks = [asyncio.create_task(waiter()) for _ in range(1000)]
            while mgr.waiting < 1000:
                await asyncio.sleep(0.01)
            waiting_threads = threading.active_count()
            await holder.release()
            await asyncio.gather(*tasks)
            assert waiting_threads == before, f"{waiting_threads - before} threads for 1000 waiting tasks"
            assert threading.active_count() == before
            assert len(order) == 1000 and order == sorted(order) and order[0] > holder.token

    run(main)


def test_auto_renew_and_on_lost_run_on_the_loop(hazelcast_member: HazelcastCluster, name: str) -> None:
    url = hazelcast_member.url("map")

    async def main() -> None:
        async with lockapi.aio.connect(url) as mgr:
            await mgr.inspect(name)  # connected
            threads = threading.active_count()
            reported = asyncio.Event()
            lost: list[Any] = []

            async def on_lost(lease: lockapi.aio.AsyncLease) -> None:
                lost.append(lease)
                reported.set()

            lease = await mgr.acquire(name, ttl=1.0, auto_renew=True, on_lost=on_lost)
            started = time.monotonic()
            while time.monotonic() - started < 4:  # four ttls: renewed (each renewal is an extend)
                assert await lease.is_held() and not lease.lost
                await asyncio.sleep(0.2)
            assert threading.active_count() == threads, "auto-renewal started a thread"
            assert await mgr.backend.force_release(name)  # taken away
            await asyncio.wait_for(reported.wait(), 10)
            assert lost == [lease] and lease.lost
            assert not await lease.release()

    run(main)


# -- a frozen member -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def own_member() -> Iterator[HazelcastCluster]:
    with hazelcast_cluster(MAP_VERSION, 1) as cluster:
        yield cluster


@pytest.mark.slow
def test_a_frozen_member_makes_every_call_unavailable_within_timeout(own_member: HazelcastCluster,
                                                                     name: str) -> None:
    """SIGSTOP the only member (every JVM thread stopped): each call raises BackendUnavailable within
    ``timeout`` (2 s) plus a margin, the connection already open or not, the entry listener already
    registered or not; after SIGCONT the backend works again."""
    url = own_member.url("map")
    timeout, margin = 2.0, 2.5

    async def bounded(what: str, call: Callable[[], Awaitable[Any]]) -> None:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            await call()
        elapsed = time.monotonic() - started
        assert elapsed < timeout + margin, f"{what}: BackendUnavailable after {elapsed:.1f}s with timeout={timeout}"

    async def main() -> None:
        async with lockapi.aio.connect(url, timeout=timeout) as mgr, \
                lockapi.aio.connect(url, timeout=timeout) as unwatched:
            backend = mgr.backend
            lease = await mgr.acquire(name, ttl=120)
            permit = await mgr.semaphore(name, 2).acquire(ttl=120)
            await unwatched.inspect(name)  # connected, no entry listener registered yet
            freeze(own_member.members[0])
            try:
                calls: dict[str, Callable[[], Awaitable[Any]]] = {
                    "try_acquire": lambda: mgr.try_acquire(f"{name}:other"),
                    "try_acquire fair": lambda: mgr.try_acquire(f"{name}:fair", fair=True),
                    "acquire": lambda: mgr.acquire(f"{name}:waited", wait=30),
                    "release": lambda: backend.release(name, lease.holder, lease.token),
                    "extend": lambda: backend.extend(name, lease.holder, lease.token, 120),
                    "inspect": lambda: mgr.inspect(name),
                    "holds": lambda: backend.holds(name, lease.holder, lease.token),
                    "cancel_wait": lambda: backend.cancel_wait(name, "someone"),
                    "acquire permit": lambda: mgr.semaphore(name, 2).try_acquire(),
                    "release permit": lambda: backend.release_permit(name, permit.holder, permit.token),
                    "extend permit": lambda: backend.extend_permit(name, permit.holder, permit.token, 120),
                    "holds permit": lambda: backend.holds_permit(name, permit.holder, permit.token),
                    "mark_done": lambda: backend.mark_done(name, 60),
                    "done": lambda: backend.done([name]),
                    "set_fence_floor": lambda: backend.set_fence_floor(f"{name}:floor", 10**6),
                    "force_release": lambda: backend.force_release(f"{name}:other"),
                    "ping": mgr.ping,
                    "watch (listener not registered yet)": lambda: _enter(unwatched.backend.watch(name, lambda: None)),
                }
                # All at once: each is timed on its own, and the member stays frozen for seconds, not a minute.
                await asyncio.gather(*(bounded(what, call) for what, call in calls.items()))
                async with lockapi.aio.connect(url, timeout=timeout) as fresh:
                    await bounded("connect", lambda: fresh.try_acquire(name))
            finally:
                thaw(own_member.members[0])
            # Back to work (the release and extensions sent into the freeze may land meanwhile: they were sent).
            again = await mgr.acquire(f"{name}:after", ttl=30, wait=30)
            assert await again.extend(30) and await again.release()

    run(main)


async def _acquire(mgr: lockapi.aio.AsyncLockManager, name: str, **kwargs: Any) -> lockapi.aio.AsyncLease:
    return await mgr.acquire(name, **kwargs)


async def _enter(watch: Any) -> None:
    async with watch:
        pass
