"""The command connection pool (lockapi_redis.pool) on a real server: bounded wait, stale connections,
fork safety, and never handing a half-read connection to the next caller."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from lockapi_redis import RedisBackend
from lockapi_redis.pool import BoundedPool

from lockapi.spi import BackendConfig, BackendUnavailable, Options
from tests.servers.common import wait_until
from tests.servers.redis import RedisServer


def backend(url: str, timeout: float = 5.0, **options: Any) -> RedisBackend:
    return RedisBackend(BackendConfig(url=url, scheme="redis", options=Options(options), timeout=timeout))


def pool_of(be: RedisBackend) -> BoundedPool:
    pool = be._client.connection_pool
    assert isinstance(pool, BoundedPool)
    return pool


@pytest.fixture
def name() -> str:
    return f"t:{uuid.uuid4().hex}"


@pytest.fixture
def one_connection(redis_standalone: RedisServer) -> Iterator[RedisBackend]:
    be = backend(redis_standalone.url, timeout=1.0, max_connections=1)
    yield be
    be.close()


def test_a_caller_gets_backend_unavailable_when_every_connection_stays_busy(
    one_connection: RedisBackend, name: str
) -> None:
    pool = pool_of(one_connection)
    held = pool.get_connection()
    try:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="max_connections=1"):
            one_connection.try_acquire(name, "h", 5)
        elapsed = time.monotonic() - started
        assert 0.9 <= elapsed < 3.0, f"waited {elapsed:.2f}s for a free connection; timeout is 1s"
    finally:
        pool.release(held)
    assert one_connection.try_acquire(name, "h", 5).token is not None


def test_a_waiting_caller_takes_the_connection_as_soon_as_it_comes_back(
    redis_standalone: RedisServer, name: str
) -> None:
    be = backend(redis_standalone.url, timeout=30.0, max_connections=1)
    try:
        pool = pool_of(be)
        held = pool.get_connection()
        result: list[Any] = []
        waiter = threading.Thread(target=lambda: result.append(be.try_acquire(name, "h", 5)))
        waiter.start()
        wait_until(lambda: len(pool._freed._waiters) == 1, 10, "the caller to wait for a connection")  # type: ignore[attr-defined]
        started = time.monotonic()
        pool.release(held)
        waiter.join(20)
        assert not waiter.is_alive(), "a released connection must wake the waiting caller"
        assert time.monotonic() - started < 5.0
        assert result and result[0].token is not None
    finally:
        be.close()


def test_a_connection_the_server_closed_while_idle_is_replaced(
    redis_standalone: RedisServer, name: str
) -> None:
    be = backend(redis_standalone.url)
    admin = redis_standalone.client()
    try:
        assert be.try_acquire(name, "h", 5).token is not None
        killed = admin.client_kill_filter(_type="normal", skipme=True)
        assert killed >= 1, "the backend's pooled connection should have been open"
        assert be.inspect(name) is not None  # no BackendUnavailable: the dead socket was noticed first
    finally:
        admin.close()
        be.close()


def test_an_unread_reply_never_reaches_the_next_caller(redis_standalone: RedisServer, name: str) -> None:
    be = backend(redis_standalone.url, max_connections=1)
    try:
        pool = pool_of(be)
        conn = pool.get_connection()
        conn.send_command("ECHO", "stale reply")  # a caller that died before reading its reply
        pool.release(conn)
        wait_until(lambda: conn._sock is not None and conn.can_read(), 5, "the reply to arrive")  # type: ignore[attr-defined]
        assert be.inspect(name) is None
        token = be.try_acquire(name, "h", 5).token
        assert token is not None
        info = be.inspect(name)
        assert info is not None and info.holder == "h" and info.token == token
    finally:
        be.close()


def test_a_forked_child_opens_its_own_connections(redis_standalone: RedisServer, name: str) -> None:
    be = backend(redis_standalone.url)
    try:
        token = be.try_acquire(name, "parent", 30).token
        assert token is not None
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: must not touch the parent's socket
            try:
                info = be.inspect(name)
                child = be.try_acquire(name + ":child", "child", 30).token
                ok = info is not None and info.holder == "parent" and child is not None
                os.write(write, b"ok" if ok else b"bad")
            finally:
                os._exit(0)
        os.close(write)
        _, status = os.waitpid(pid, 0)
        assert os.read(read, 16) == b"ok" and status == 0
        os.close(read)
        assert be.release(name, "parent", token)  # the parent's connection still reads its own replies
        assert be.inspect(name + ":child") is not None
    finally:
        be.close()


# -- idle connections (max_idle_connections, idle_timeout) ------------------------------------------
def named_connections(server: RedisServer, client_name: str) -> int:
    """Connections the server has open for ``client_name`` (the backend's ``client_name`` option)."""
    admin = server.client()
    try:
        return sum(1 for c in admin.client_list() if c.get("name") == client_name)
    finally:
        admin.close()


def test_at_most_max_idle_connections_stay_open(redis_standalone: RedisServer, name: str) -> None:
    client_name = f"lockapi-idle-{uuid.uuid4().hex[:8]}"
    be = backend(redis_standalone.url, max_connections=8, max_idle_connections=2, client_name=client_name)
    try:
        pool = pool_of(be)
        burst = [pool.get_connection() for _ in range(6)]  # a burst of six concurrent callers
        assert named_connections(redis_standalone, client_name) == 6
        for conn in burst:
            pool.release(conn)
        assert named_connections(redis_standalone, client_name) == 2
        assert len(pool._available_connections) == 2 and pool._created_connections == 2
        token = be.try_acquire(name, "h", 5).token  # the pool goes on working with what it kept
        assert token is not None and be.release(name, "h", token)
        assert named_connections(redis_standalone, client_name) == 2
    finally:
        be.close()


def test_close_idle_closes_only_connections_unused_for_that_long(redis_standalone: RedisServer) -> None:
    be = backend(redis_standalone.url)
    try:
        pool = pool_of(be)
        first, second = pool.get_connection(), pool.get_connection()
        pool.release(first)
        time.sleep(0.3)  # not synchronisation: the age that close_idle measures
        pool.release(second)
        assert pool.close_idle(60) == 0
        assert pool.close_idle(0.2) == 1, "only the connection unused for 0.3 s is that old"
        assert pool._available_connections == [second] and pool._created_connections == 1
        assert first._sock is None and second._sock is not None  # type: ignore[attr-defined]
    finally:
        be.close()


def test_idle_timeout_closes_unused_command_and_pubsub_connections(
    redis_standalone: RedisServer, name: str
) -> None:
    client_name = f"lockapi-idle-{uuid.uuid4().hex[:8]}"
    be = backend(redis_standalone.url, idle_timeout=0.4, client_name=client_name)
    try:
        pool = pool_of(be)
        burst = [pool.get_connection() for _ in range(3)]
        busy = burst.pop()  # stays in use throughout: never closed under its user
        for conn in burst:
            pool.release(conn)
        with be.watch(name, lambda: None):
            pass  # the pub/sub connection now has no subscription left
        assert named_connections(redis_standalone, client_name) == 4
        wait_until(lambda: named_connections(redis_standalone, client_name) == 1, 15,
                   "the idle command and pub/sub connections to close")
        busy.send_command("PING")
        assert busy.read_response() == b"PONG"
        pool.release(busy)

        # a later call reconnects, and wake-ups work again on a new pub/sub connection
        token = be.try_acquire(name, "h", 30).token
        assert token is not None
        woken = threading.Event()
        with be.watch(name, woken.set):
            assert be.release(name, "h", token)
            assert woken.wait(5)
    finally:
        be.close()


@pytest.mark.slow
def test_idle_timeout_on_a_cluster_closes_connections_once_the_backend_is_idle(
    redis_cluster_nodes: Any
) -> None:
    client_name = f"lockapi-idle-{uuid.uuid4().hex[:8]}"
    be = RedisBackend(BackendConfig(url=redis_cluster_nodes.url, scheme="redis+cluster",
                                    options=Options({"idle_timeout": 0.4, "client_name": client_name}),
                                    timeout=5.0))

    def open_connections() -> int:
        return sum(named_connections(node, client_name) for node in redis_cluster_nodes.nodes)

    try:
        names = [f"idle:{i}:{uuid.uuid4().hex}" for i in range(12)]  # spread over the masters
        for n in names:
            token = be.try_acquire(n, "h", 30).token
            assert token is not None and be.release(n, "h", token)
        with be.watch(names[0], lambda: None):
            pass
        assert open_connections() >= 2
        wait_until(lambda: open_connections() == 0, 15, "every idle cluster connection to close")
        token = be.try_acquire(names[0], "h", 30).token
        assert token is not None and be.release(names[0], "h", token)
    finally:
        be.close()


def test_a_forked_child_gets_its_own_wakeups(redis_standalone: RedisServer, name: str) -> None:
    be = backend(redis_standalone.url, timeout=5.0, idle_timeout=60)
    try:
        with be.watch(name + ":warm", lambda: None):
            pass  # the parent has a pub/sub connection and reader thread the child must not share
        token = be.try_acquire(name, "parent", 30).token
        assert token is not None
        subscribed_r, subscribed_w = os.pipe()
        result_r, result_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            outcome = b"bad"
            try:
                threads = {t.name for t in threading.enumerate()}
                woken = threading.Event()
                with be.watch(name, woken.set):
                    os.write(subscribed_w, b"s")
                    if woken.wait(10) and "lockapi-redis-idle" in threads:
                        outcome = b"ok"
            except BaseException as exc:
                outcome = repr(exc).encode()[:200]
            finally:
                os.write(result_w, outcome)
                os._exit(0)
        os.close(subscribed_w)
        os.close(result_w)
        assert os.read(subscribed_r, 1) == b"s", "the child could not subscribe"
        assert be.release(name, "parent", token)
        assert os.read(result_r, 256) == b"ok"
        assert os.waitpid(pid, 0)[1] == 0
        woken = threading.Event()
        with be.watch(name, woken.set):  # the parent's own wake-ups are untouched
            token = be.try_acquire(name, "parent", 30).token
            assert token is not None and be.release(name, "parent", token)
            assert woken.wait(5)
    finally:
        be.close()
