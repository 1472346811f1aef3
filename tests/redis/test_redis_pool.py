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
