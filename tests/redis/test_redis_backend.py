"""Redis-specific behaviour on real servers: fencing across a restart, pub/sub wake-ups (shared
connection, cross-process hand-off), fair-queue dead waiters, key layout and cleanup, unreachable servers."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from lockapi_redis import RedisBackend
from lockapi_redis.keys import escape, unescape

import lockapi
from lockapi.spi import BackendConfig, BackendUnavailable, Options
from tests.servers.common import free_port, wait_until
from tests.servers.redis import RedisCluster, RedisServer, redis_server

AWKWARD = ["a}b", "{x}", "}{", "ü{}ü", "\\]", "}", "x\\", "{", "}}}", "\\", "名前 with spaces", "e" * 1024]


def backend(url: str, timeout: float = 5.0, **options: Any) -> RedisBackend:
    scheme = url.split("://", 1)[0]
    return RedisBackend(BackendConfig(url=url, scheme=scheme, options=Options(options), timeout=timeout))


@pytest.fixture
def b(redis_standalone: RedisServer) -> Iterator[RedisBackend]:
    be = backend(redis_standalone.url)
    yield be
    be.close()


@pytest.fixture
def name() -> str:
    return f"t:{uuid.uuid4().hex}"


def keys_of(server: RedisServer, name: str) -> set[str]:
    client = server.client()
    try:
        base = "lockapi:{" + escape(name).replace("\\", "\\\\").replace("*", "\\*") + "}"
        return {k.decode() for k in client.scan_iter(match=base + ":*", count=1000)}
    finally:
        client.close()


# -- fencing ---------------------------------------------------------------------------------------
def test_tokens_stay_monotonic_across_a_restart_without_persistence() -> None:
    with redis_server() as server:
        be = backend(server.url)
        try:
            tokens = []
            for _ in range(5):
                token = be.try_acquire("restart-me", "h", 30).token
                assert token is not None
                tokens.append(token)
                assert be.release("restart-me", "h", token)
            server.restart()
            client = server.client()
            assert client.dbsize() == 0  # really lost every key
            client.close()
            after = wait_until_value(lambda: be.try_acquire("restart-me", "h2", 30).token)
            assert after > max(tokens)
            assert tokens == sorted(set(tokens))
            # the same holds for semaphores
            permit = be.try_acquire_permit("restart-me", 2, "p", 30).token
            assert permit is not None and permit > after
        finally:
            be.close()


def wait_until_value(fn: Any, timeout: float = 10.0) -> Any:
    """Retry ``fn`` while the backend is unavailable (the pool reconnects after a restart)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except BackendUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_an_idle_fencing_counter_expires_and_tokens_still_increase(
        redis_standalone: RedisServer, name: str) -> None:
    be = backend(redis_standalone.url, fence_ttl=0.5)
    client = redis_standalone.client()
    try:
        fence = be.keys.base(name) + ":fence"
        first = be.try_acquire(name, "h", 30).token
        assert first is not None and be.release(name, "h", first)
        assert 0 < client.pttl(fence) <= 500
        wait_until(lambda: client.exists(fence) == 0, 10, "the idle counter to expire")
        second = be.try_acquire(name, "h2", 30).token
        assert second is not None and second > first  # floored by the server's TIME
        assert be.release(name, "h2", second)
    finally:
        client.close()
        be.close()


def test_a_counter_moved_ahead_of_the_clock_never_expires(redis_standalone: RedisServer, name: str) -> None:
    be = backend(redis_standalone.url, fence_ttl=0.5)
    client = redis_standalone.client()
    try:
        fence = be.keys.base(name) + ":fence"
        ahead = 10**18  # far beyond the server's TIME in microseconds: expiry would lose it
        be.set_fence_floor(name, ahead)
        token = be.try_acquire(name, "h", 30).token
        assert token == ahead + 1 and be.release(name, "h", token)
        assert client.pttl(fence) == -1
    finally:
        client.close()
        be.close()


def test_a_counter_ahead_of_the_clock_with_a_ttl_counts_on_and_loses_the_ttl(
        redis_standalone: RedisServer, name: str) -> None:
    """The grant stores the clock floor and reads the old counter in one SET ... GET; a counter that was
    ahead (here with a ttl, as after a clock step back) is put back, counted on, and kept without expiry."""
    be = backend(redis_standalone.url, fence_ttl=0.5)
    client = redis_standalone.client()
    try:
        fence = be.keys.base(name) + ":fence"
        seconds, micros = client.time()
        ahead = (seconds + 3600) * 1_000_000 + micros  # an hour ahead of the server's clock
        client.set(fence, str(ahead), px=60_000)
        token = be.try_acquire(name, "h", 30).token
        assert token == ahead + 1 and be.release(name, "h", token)
        assert client.get(fence) == str(ahead + 1).encode() and client.pttl(fence) == -1
    finally:
        client.close()
        be.close()


def test_fence_ttl_zero_keeps_counters_forever(redis_standalone: RedisServer, name: str) -> None:
    be = backend(redis_standalone.url, fence_ttl=0)
    client = redis_standalone.client()
    try:
        token = be.try_acquire(name, "h", 30).token
        assert token is not None and be.release(name, "h", token)
        assert client.pttl(be.keys.base(name) + ":fence") == -1
    finally:
        client.close()
        be.close()


def test_fence_floor_beyond_double_precision_is_exact(b: RedisBackend, name: str) -> None:
    floor = 2**60 + 1  # not representable as a double: Lua numbers would round it
    b.set_fence_floor(name, floor)
    b.set_fence_floor(name, 5)  # never lowers
    assert b.try_acquire(name, "h", 5).token == floor + 1
    b.set_fence_floor(name, 7, semaphore=True)
    token = b.try_acquire_permit(name, 1, "h", 5).token
    assert token is not None and token > 7


# -- wake-ups --------------------------------------------------------------------------------------
def test_one_shared_pubsub_connection_for_many_waiting_threads(
        redis_standalone: RedisServer, b: RedisBackend) -> None:
    names = [f"shared:{uuid.uuid4().hex}" for _ in range(10)]
    client = redis_standalone.client()
    client_name = f"lockapi-test-{uuid.uuid4().hex}"

    def pubsub_connections() -> int:
        return sum(1 for c in client.client_list() if "P" in c["flags"])

    before = pubsub_connections()
    release = threading.Event()
    woken = [threading.Event() for _ in range(30)]
    inside = threading.Semaphore(0)

    def waiter(i: int) -> None:
        with b.watch(names[i % 10], woken[i].set):
            inside.release()
            release.wait(30)

    threads = [threading.Thread(target=waiter, args=(i,), name=client_name) for i in range(30)]
    for t in threads:
        t.start()
    for _ in range(30):
        assert inside.acquire(timeout=30)
    try:
        assert b.watcher_count() == 30
        assert pubsub_connections() == before + 1
        channels = {c.decode() for c in client.pubsub_channels("lockapi:*")}
        assert channels >= {b.keys.channel(n) for n in names}
        # a release wakes exactly the watchers of that name
        token = b.try_acquire(names[3], "h", 30).token
        assert token is not None and b.release(names[3], "h", token)
        for i in (3, 13, 23):
            assert woken[i].wait(5)
        assert not any(woken[i].is_set() for i in range(30) if i % 10 != 3)
    finally:
        release.set()
        for t in threads:
            t.join(30)
    wait_until(lambda: not set(client.pubsub_channels("lockapi:*")) & {
        b.keys.channel(n).encode() for n in names}, 10, "unsubscribe after the last watcher left")
    assert b.watcher_count() == 0
    client.close()


CHILD_WAITER = textwrap.dedent("""
    import sys, time, lockapi
    from lockapi.observers import Observer
    url, name, fair = sys.argv[1], sys.argv[2], sys.argv[3] == "fair"

    class Waiting(Observer):  # called once the first attempt was denied: subscribed, and about to wait
        def waiting(self, op, state):
            print("waiting", flush=True)

    with lockapi.connect(url) as mgr:
        mgr.add_observer(Waiting())
        print("ready", flush=True)
        lease = mgr.acquire(name, ttl=30, wait=120, fair=fair)
        print("granted", time.monotonic(), flush=True)
        lease.release()
""")


def start_child(url: str, name: str, fair: bool = False) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD_WAITER, url, name, "fair" if fair else "plain"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_waiter_in_another_process_is_woken_by_pubsub(redis_standalone: RedisServer, name: str) -> None:
    with lockapi.connect(redis_standalone.url) as mgr:
        lease = mgr.acquire(name, ttl=60)  # long ttl: only a wake-up can explain a prompt grant
        proc = start_child(redis_standalone.url, name)
        try:
            client = redis_standalone.client()
            channel = f"lockapi:{{{escape(name)}}}:ch"
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "waiting", "the child's first attempt was not denied"
            wait_until(lambda: client.pubsub_numsub(channel)[0][1] == 1, 30, "the child to subscribe")
            released = time.monotonic()
            assert lease.release()
            word, granted = proc.stdout.readline().split()
            assert word == "granted"
            assert float(granted) - released < 0.5, "hand-off took longer than a poll would"
            assert proc.wait(30) == 0
            client.close()
        finally:
            proc.kill()
            proc.wait(10)


def test_fair_queue_drops_a_killed_waiter_quickly(redis_standalone: RedisServer, name: str) -> None:
    client = redis_standalone.client()
    queue = f"lockapi:{{{escape(name)}}}:queue"
    with lockapi.connect(redis_standalone.url) as mgr:
        lease = mgr.acquire(name, ttl=60)
        dead = start_child(redis_standalone.url, name, fair=True)
        alive = None
        try:
            wait_until(lambda: client.llen(queue) == 1, 30, "the first waiter to queue")
            alive = start_child(redis_standalone.url, name, fair=True)
            wait_until(lambda: client.llen(queue) == 2, 30, "the second waiter to queue")
            dead.send_signal(signal.SIGKILL)
            dead.wait(10)
            released = time.monotonic()
            assert lease.release()
            assert alive.stdout is not None
            assert alive.stdout.readline().strip() == "waiting"
            word, granted = alive.stdout.readline().split()
            assert word == "granted"
            # queue entries live 1 s (lockapi's QUEUE_TTL) unless refreshed: the dead one is dropped
            assert float(granted) - released < 2.5
            assert alive.wait(30) == 0
        finally:
            for proc in (dead, alive):
                if proc is not None:
                    proc.kill()
                    proc.wait(10)
            client.close()


def settle(b: RedisBackend, name: str, woken: dict[str, threading.Event]) -> None:
    """Return once every wake-up already published for ``name`` has been delivered.

    A release of another name, watched on the same pub/sub connection, is delivered after them (one
    connection, one reader thread, messages in order)."""
    control = name + ":control"
    event = threading.Event()
    with b.watch(control, event.set):
        token = b.try_acquire(control, "c", 30).token
        assert token is not None and b.release(control, "c", token)
        assert event.wait(5)


def test_a_fair_release_wakes_only_the_head_of_the_queue(b: RedisBackend, name: str) -> None:
    token = b.try_acquire(name, "holder", 30).token
    assert token is not None
    waiters = ["w1", "w2", "w3"]
    for w in waiters:
        assert b.try_acquire(name, w, 30, queue_ttl=60).token is None
    woken = {w: threading.Event() for w in [*waiters, "plain"]}
    with contextlib.ExitStack() as stack:
        for w in waiters:
            stack.enter_context(b.watch(name, woken[w].set, holder=w))
        stack.enter_context(b.watch(name, woken["plain"].set))
        owner = "holder"
        for current, rest in (("w1", ["w2", "w3"]), ("w2", ["w3"])):
            assert b.release(name, owner, token)
            assert woken[current].wait(5), f"{current}, the head, was not woken"
            settle(b, name, woken)
            assert woken["plain"].is_set(), "a watcher without a holder hears every release"
            assert not any(woken[w].is_set() for w in rest), "a waiter behind the head was woken"
            woken["plain"].clear()
            granted = b.try_acquire(name, current, 30, queue_ttl=60).token
            assert granted is not None and granted > token
            token, owner = granted, current


def test_a_release_skips_queue_entries_that_expired(
        redis_standalone: RedisServer, b: RedisBackend, name: str) -> None:
    token = b.try_acquire(name, "holder", 30).token
    assert token is not None
    assert b.try_acquire(name, "dead", 30, queue_ttl=0.05).token is None  # never refreshed again
    assert b.try_acquire(name, "alive", 30, queue_ttl=60).token is None
    client = redis_standalone.client()
    qtime = b.keys.base(name) + ":qtime"

    def dead_expired() -> bool:
        seconds, micros = client.time()
        score = client.zscore(qtime, "dead")
        return score is not None and score <= seconds * 1000 + micros // 1000

    wait_until(dead_expired, 10, "the dead waiter's queue entry to expire")
    client.close()
    alive = threading.Event()
    with b.watch(name, alive.set, holder="alive"):
        assert b.release(name, "holder", token)
        assert alive.wait(5), "the release was addressed to a waiter whose entry had expired"
    assert b.try_acquire(name, "alive", 30, queue_ttl=60).token is not None


# -- key layout and cleanup ------------------------------------------------------------------------
@pytest.mark.parametrize("awkward", AWKWARD)
def test_escaping_is_reversible_and_brace_free(awkward: str) -> None:
    tag = escape(awkward)
    assert "}" not in tag
    assert unescape(tag) == awkward


def test_escaping_is_injective() -> None:
    names = [*AWKWARD, "a\\]b", "a]b", "\\\\]", "\\}"]
    assert len({escape(n) for n in names}) == len(set(names))


@pytest.mark.slow
def test_every_key_of_an_awkward_name_shares_one_cluster_slot(redis_cluster_nodes: RedisCluster) -> None:
    import redis

    be = backend(redis_cluster_nodes.url)
    suffix = uuid.uuid4().hex
    names = [n + suffix for n in AWKWARD[:-1]] + [suffix + n for n in AWKWARD]
    try:
        for n in names:
            token = be.try_acquire(n, "h", 30).token
            assert token is not None
            assert be.try_acquire(n, "waiter", 30, queue_ttl=30).token is None  # queue + qtime keys
            assert be.try_acquire_permit(n, 2, "p", 30).token is not None
            be.mark_done(n, 30)
        cluster = redis.RedisCluster(host="127.0.0.1", port=redis_cluster_nodes.nodes[0].port)
        try:
            for n in names:
                base = be.keys.base(n)
                keys = [base + s for s in (":lock", ":fence", ":queue", ":qtime", ":sem", ":sfence", ":done")]
                assert all(cluster.exists(k) for k in keys), n
                slots = {cluster.keyslot(k) for k in keys} | {cluster.keyslot(be.keys.channel(n))}
                assert slots == {cluster.keyslot(escape(n))}, n
            assert {n for n, _ in be.iter_done()} >= set(names)
            # the hash tags spread names over the masters
            nodes = {cluster.get_node_from_key(be.keys.base(n)).name for n in names}
            assert len(nodes) == len(redis_cluster_nodes.nodes)
        finally:
            cluster.close()
    finally:
        be.close()


def test_keys_of_a_released_lock_are_deleted(redis_standalone: RedisServer, b: RedisBackend,
                                             name: str) -> None:
    token = b.try_acquire(name, "h", 30).token
    assert token is not None
    assert keys_of(redis_standalone, name) == {b.keys.base(name) + ":lock", b.keys.base(name) + ":fence"}
    assert b.release(name, "h", token)
    assert keys_of(redis_standalone, name) == {b.keys.base(name) + ":fence"}

    # fair: a waiter queues, then takes the lock and leaves the queue; nothing but counters remain
    token = b.try_acquire(name, "h", 30).token
    assert token is not None
    assert b.try_acquire(name, "w", 30, queue_ttl=30).token is None
    assert b.release(name, "h", token)
    fair_token = b.try_acquire(name, "w", 30, queue_ttl=30).token
    assert fair_token is not None and b.release(name, "w", fair_token)
    # semaphores
    permit = b.try_acquire_permit(name, 3, "p", 30).token
    assert permit is not None and b.release_permit(name, "p", permit)
    assert keys_of(redis_standalone, name) == {b.keys.base(name) + ":fence", b.keys.base(name) + ":sfence"}


def test_queue_keys_expire_when_every_waiter_is_gone(redis_standalone: RedisServer, b: RedisBackend,
                                                     name: str) -> None:
    token = b.try_acquire(name, "h", 30).token
    assert token is not None
    assert b.try_acquire(name, "w", 30, queue_ttl=0.3).token is None
    assert b.keys.base(name) + ":queue" in keys_of(redis_standalone, name)
    wait_until(lambda: b.keys.base(name) + ":queue" not in keys_of(redis_standalone, name), 5,
               "the abandoned queue to expire")
    assert b.keys.base(name) + ":qtime" not in keys_of(redis_standalone, name)


def test_memory_per_held_lock(redis_standalone: RedisServer, b: RedisBackend, name: str) -> None:
    holder = uuid.uuid4().hex  # lockapi holder ids are about this long
    token = b.try_acquire(name, holder, 30).token
    assert token is not None
    client = redis_standalone.client()
    lock = client.memory_usage(b.keys.base(name) + ":lock", samples=0)
    fence = client.memory_usage(b.keys.base(name) + ":fence", samples=0)
    client.close()
    print(f"\nMEMORY USAGE for a {len(name)}-byte name: lock key {lock} B, fence key {fence} B")
    assert lock < 200 and fence < 120


# -- failures --------------------------------------------------------------------------------------
def test_unreachable_server_is_backend_unavailable_within_timeout() -> None:
    be = backend(f"redis://127.0.0.1:{free_port()}", timeout=1.0)
    try:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            be.try_acquire("x", "h", 5)
        assert time.monotonic() - started < 1.5
    finally:
        be.close()


def test_waiting_acquire_on_unreachable_server_fails_at_its_first_attempt() -> None:
    """acquire(wait=...) tries the lock before subscribing to wake-ups: a refused connection is reported
    at once, not after the subscription's timeout (it was: "did not confirm the subscription within 3s")."""
    with lockapi.connect(f"redis://127.0.0.1:{free_port()}?timeout=3") as mgr:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="connecting to"):
            mgr.acquire("x", ttl=5, wait=10)
        assert time.monotonic() - started < 1.5


def test_waiting_acquire_of_a_free_lock_does_not_subscribe(redis_standalone: RedisServer) -> None:
    """A free lock is granted by the first attempt: no SUBSCRIBE/UNSUBSCRIBE round trips."""
    with lockapi.connect(redis_standalone.url) as mgr:
        client = redis_standalone.client()
        try:
            before = client.info("commandstats").get("cmdstat_subscribe", {}).get("calls", 0)
            with mgr.acquire(f"free-{uuid.uuid4().hex}", ttl=5, wait=10):
                pass
            after = client.info("commandstats").get("cmdstat_subscribe", {}).get("calls", 0)
        finally:
            client.close()
        assert after == before


def test_frozen_server_is_backend_unavailable_within_timeout() -> None:
    with redis_server() as server:
        be = backend(server.url, timeout=1.0)
        try:
            assert be.try_acquire("x", "h", 5).token is not None
            assert server.process is not None
            server.process.signal(signal.SIGSTOP)
            try:
                for op in (lambda: be.try_acquire("y", "h", 5), lambda: be.inspect("x")):
                    started = time.monotonic()
                    with pytest.raises(BackendUnavailable):
                        op()
                    assert time.monotonic() - started < 2.0
                started = time.monotonic()
                with pytest.raises(BackendUnavailable), be.watch("x", lambda: None):  # no SUBSCRIBE reply
                    pass
                assert time.monotonic() - started < 2.5
            finally:
                server.process.signal(signal.SIGCONT)
            assert wait_until_value(lambda: be.inspect("x")) is not None
        finally:
            be.close()


def test_errors_never_show_the_password() -> None:
    with redis_server(password="s3cret-pw") as server:
        be = backend(f"redis://:wrong-pw@127.0.0.1:{server.port}")
        try:
            with pytest.raises(BackendUnavailable) as info:
                be.try_acquire("x", "h", 5)
            assert "wrong-pw" not in str(info.value)
        finally:
            be.close()


def test_watchers_are_woken_and_resubscribed_after_a_restart() -> None:
    with redis_server() as server:
        be = backend(server.url)
        try:
            woken = threading.Event()
            with be.watch("resub", woken.set):
                server.restart()
                assert woken.wait(10), "a broken pub/sub connection must wake its watchers"
                client = server.client()
                channel = be.keys.channel("resub")
                wait_until(lambda: client.pubsub_numsub(channel)[0][1] == 1, 10, "re-subscription")
                woken.clear()
                token = wait_until_value(lambda: be.try_acquire("resub", "h", 30).token)
                assert be.release("resub", "h", token)
                assert woken.wait(5)
                client.close()
        finally:
            be.close()
