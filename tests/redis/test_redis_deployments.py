"""TLS with a password, an ACL user with only the documented permissions, Sentinel discovery,
wait_replicas with a real replica, and URL parsing; the deployments again through the native asyncio
backend (lockapi_redis.aio_backend), which must serve every one of them as the blocking one does."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from lockapi_redis import RedisBackend
from lockapi_redis.aio_backend import AsyncRedisBackend
from lockapi_redis.settings import parse

import lockapi
import lockapi.aio
from lockapi.spi import BackendConfig, BackendUnavailable, ConfigError, Options
from tests.servers.redis import RedisCluster, RedisServer, SentinelGroup, redis_server, sentinel_group

PASSWORD = "p@ss:w/rd"  # needs percent-encoding in a URL


def backend(url: str, timeout: float = 5.0, **options: Any) -> RedisBackend:
    return RedisBackend(BackendConfig(url=url, scheme=url.split("://")[0], options=Options(options),
                                      timeout=timeout))


def async_backend(url: str, timeout: float = 5.0, **options: Any) -> AsyncRedisBackend:
    return AsyncRedisBackend(BackendConfig(url=url, scheme=url.split("://")[0], options=Options(options),
                                           timeout=timeout))


@pytest.fixture(scope="module")
def tls_server() -> Iterator[RedisServer]:
    with redis_server(password=PASSWORD, tls=True) as server:
        yield server


@pytest.fixture(scope="module")
def sentinels() -> Iterator[SentinelGroup]:
    with sentinel_group() as group:
        yield group


# -- TLS -------------------------------------------------------------------------------------------
def test_tls_with_password(tls_server: RedisServer) -> None:
    assert tls_server.tls is not None and tls_server.url.startswith("rediss://:p%40ss%3Aw%2Frd@")
    with lockapi.connect(tls_server.url, ssl_ca_certs=str(tls_server.tls.ca)) as mgr:
        lease = mgr.acquire("tls-lock", ttl=10)
        assert mgr.try_acquire("tls-lock") is None
        assert lease.release()
    client = tls_server.client()
    assert client.exists("lockapi:{tls-lock}:fence") == 1
    client.close()


def test_tls_rejects_an_unknown_ca(tls_server: RedisServer) -> None:
    be = backend(tls_server.url, timeout=2.0)  # system CAs only: the test CA is unknown
    try:
        with pytest.raises(BackendUnavailable):
            be.try_acquire("x", "h", 5)
    finally:
        be.close()


def test_tls_wakeups_use_tls_too(tls_server: RedisServer) -> None:
    import threading

    assert tls_server.tls is not None
    be = backend(tls_server.url, ssl_ca_certs=str(tls_server.tls.ca))
    try:
        token = be.try_acquire("tls-wake", "h", 30).token
        assert token is not None
        woken = threading.Event()
        with be.watch("tls-wake", woken.set):
            assert be.release("tls-wake", "h", token)
            assert woken.wait(5)
    finally:
        be.close()


def test_async_tls_with_password_and_wakeups(tls_server: RedisServer) -> None:
    assert tls_server.tls is not None
    ca = str(tls_server.tls.ca)

    async def main() -> None:
        async with lockapi.aio.connect(tls_server.url, ssl_ca_certs=ca) as mgr:
            assert isinstance(mgr.backend, AsyncRedisBackend)
            lease = await mgr.acquire("aio-tls-lock", ttl=10)
            assert await mgr.try_acquire("aio-tls-lock") is None
            waiter = asyncio.create_task(_acquire(mgr, "aio-tls-lock", wait=10))
            while mgr.backend.watcher_count() == 0:  # type: ignore[attr-defined]
                await asyncio.sleep(0.01)
            assert await lease.release()
            got = await asyncio.wait_for(waiter, 5)  # woken over the TLS pub/sub connection
            assert got.token > lease.token and await got.release()
        be = async_backend(tls_server.url, timeout=2.0)  # system CAs only: the test CA is unknown
        try:
            with pytest.raises(BackendUnavailable):
                await be.try_acquire("x", "h", 5)
        finally:
            await be.aclose()

    asyncio.run(main())


async def _acquire(mgr: lockapi.aio.AsyncLockManager, name: str, **kwargs: Any) -> lockapi.aio.AsyncLease:
    return await mgr.acquire(name, **kwargs)


# -- least-privilege ACL user ----------------------------------------------------------------------
REDIS_DOC = Path(__file__).resolve().parents[2] / "docs" / "backends" / "redis.md"


def documented_acl() -> list[str]:
    """The ``ACL SETUSER`` rule docs/backends/redis.md gives, split into arguments after the user name."""
    match = re.search(r"^ACL SETUSER lockapi-app (.+)$", REDIS_DOC.read_text(), re.MULTILINE)
    assert match, "docs/backends/redis.md lost its ACL SETUSER line"
    return match.group(1).split()


@contextlib.contextmanager
def acl_user(servers: list[RedisServer]) -> Iterator[str]:
    """Create the documented ``lockapi-app`` user on every server; yield its password; delete it after."""
    password = secrets.token_hex(8)
    rule = [password.join(arg.split("PASSWORD")) for arg in documented_acl()]
    for server in servers:
        admin = server.client()
        admin.execute_command("ACL", "SETUSER", "lockapi-app", "reset", *rule)
        admin.close()
    try:
        yield password
    finally:
        for server in servers:
            admin = server.client()
            admin.execute_command("ACL", "DELUSER", "lockapi-app")
            admin.close()


def exercise_every_operation(url: str) -> None:
    """Every backend operation once, through an ACL user: one NOPERM would raise."""
    name = f"acl:{uuid.uuid4().hex}"
    with lockapi.connect(url, timeout=5, client_name="acl-test") as mgr:
        lease = mgr.acquire(name, ttl=10)
        assert mgr.try_acquire(name) is None and lease.extend(10) and lease.release()
        assert mgr.acquire(name, ttl=10, fair=True).release()
        be = mgr.backend
        permit = be.try_acquire_permit(name, 2, "p", 10).token
        assert permit is not None and be.holds_permit(name, "p", permit)
        assert be.extend_permit(name, "p", permit, 10) and be.release_permit(name, "p", permit)
        be.mark_done(name, 10)
        assert be.done([name]) == {name} and name in {n for n, _ in be.iter_done()}
        granted = be.try_acquire_many([name, name + ":2"], "h", 10, skip_done=False)
        assert set(granted) == {name, name + ":2"}
        woken = threading.Event()
        with be.watch(name, woken.set):
            assert be.release(name, "h", granted[name])
            assert woken.wait(5)
        be.set_fence_floor(name, 10**17)
        assert be.force_release(name + ":2") and be.inspect(name + ":2") is None
        be.cancel_wait(name, "nobody")
        be.ping()


async def exercise_every_operation_async(url: str) -> None:
    """:func:`exercise_every_operation` through the asyncio backend."""
    name = f"acl:{uuid.uuid4().hex}"
    async with lockapi.aio.connect(url, timeout=5, client_name="acl-test") as mgr:
        lease = await mgr.acquire(name, ttl=10)
        assert await mgr.try_acquire(name) is None and await lease.extend(10) and await lease.release()
        assert await (await mgr.acquire(name, ttl=10, fair=True)).release()
        be = mgr.backend
        assert isinstance(be, AsyncRedisBackend)
        permit = (await be.try_acquire_permit(name, 2, "p", 10)).token
        assert permit is not None and await be.holds_permit(name, "p", permit)
        assert await be.extend_permit(name, "p", permit, 10) and await be.release_permit(name, "p", permit)
        await be.mark_done(name, 10)
        assert await be.done([name]) == {name}
        granted = await be.try_acquire_many([name, name + ":2"], "h", 10, skip_done=False)
        assert set(granted) == {name, name + ":2"} and await be.holds(name, "h", granted[name])
        woken = asyncio.Event()
        async with be.watch(name, woken.set):
            assert await be.release(name, "h", granted[name])
            await asyncio.wait_for(woken.wait(), 5)
        await be.set_fence_floor(name, 10**17)
        assert await be.force_release(name + ":2") and await be.inspect(name + ":2") is None
        await be.cancel_wait(name, "nobody")
        await be.ping()


def test_an_acl_user_with_the_documented_permissions_can_do_everything(redis_standalone: RedisServer) -> None:
    with acl_user([redis_standalone]) as password:
        exercise_every_operation(f"redis://lockapi-app:{password}@127.0.0.1:{redis_standalone.port}")
        asyncio.run(exercise_every_operation_async(
            f"redis://lockapi-app:{password}@127.0.0.1:{redis_standalone.port}"))
        app = redis.Redis(host="127.0.0.1", port=redis_standalone.port, username="lockapi-app",
                          password=password)
        try:
            with pytest.raises(redis.exceptions.NoPermissionError):  # the rule really confines the user
                app.get("someone-else:key")
        finally:
            app.close()


@pytest.mark.slow
def test_the_documented_acl_works_on_a_cluster(redis_cluster_nodes: RedisCluster) -> None:
    with acl_user(redis_cluster_nodes.nodes) as password:
        exercise_every_operation(redis_cluster_nodes.url.replace("://", f"://lockapi-app:{password}@", 1))
        asyncio.run(exercise_every_operation_async(
            redis_cluster_nodes.url.replace("://", f"://lockapi-app:{password}@", 1)))


# -- Sentinel and replicas -------------------------------------------------------------------------
def test_sentinel_finds_the_master(sentinels: SentinelGroup) -> None:
    name = f"sentinel:{uuid.uuid4().hex}"
    with lockapi.connect(sentinels.url) as mgr:
        lease = mgr.acquire(name, ttl=10)
        master = sentinels.master.client()
        assert master.exists(f"lockapi:{{{name}}}:lock") == 1
        master.close()
        assert lease.release()


def test_wait_replicas_grants_when_the_replica_acknowledges(sentinels: SentinelGroup) -> None:
    name = f"replicated:{uuid.uuid4().hex}"
    be = backend(sentinels.url, wait_replicas=1, wait_replicas_timeout=5)
    try:
        token = be.try_acquire(name, "h", 30).token
        assert token is not None
        replica = sentinels.replica.client()
        assert replica.get(f"lockapi:{{{name}}}:lock") == f"{token}:h".encode()
        replica.close()
        assert be.try_acquire_permit(name, 1, "p", 30).token is not None
    finally:
        be.close()


def test_wait_replicas_releases_and_fails_when_too_few_acknowledge(sentinels: SentinelGroup) -> None:
    name = f"unreplicated:{uuid.uuid4().hex}"
    be = backend(sentinels.url, wait_replicas=2, wait_replicas_timeout=0.2)  # only one replica exists
    try:
        with pytest.raises(BackendUnavailable, match="only 1 of 2 replicas"):
            be.try_acquire(name, "h", 30)
        assert be.inspect(name) is None  # the grant was undone
    finally:
        be.close()


def test_async_sentinel_finds_the_master_and_waits_for_replicas(sentinels: SentinelGroup) -> None:
    name = f"sentinel-aio:{uuid.uuid4().hex}"

    async def main() -> None:
        async with lockapi.aio.connect(sentinels.url) as mgr:
            assert isinstance(mgr.backend, AsyncRedisBackend)
            lease = await mgr.acquire(name, ttl=10)
            master = sentinels.master.client()
            assert master.exists(f"lockapi:{{{name}}}:lock") == 1
            master.close()
            waiter = asyncio.create_task(_acquire(mgr, name, wait=10))
            while mgr.backend.watcher_count() == 0:
                await asyncio.sleep(0.01)
            assert await lease.release()
            assert await (await asyncio.wait_for(waiter, 5)).release()
        be = async_backend(sentinels.url, wait_replicas=1, wait_replicas_timeout=5)
        try:
            token = (await be.try_acquire(name, "h", 30)).token
            assert token is not None
            replica = sentinels.replica.client()
            assert replica.get(f"lockapi:{{{name}}}:lock") == f"{token}:h".encode()
            replica.close()
            assert (await be.try_acquire_permit(name, 1, "p", 30)).token is not None
            assert set(await be.try_acquire_many([name + ":a", name + ":b"], "h", 30)) == {name + ":a", name + ":b"}
        finally:
            await be.aclose()
        be = async_backend(sentinels.url, wait_replicas=2, wait_replicas_timeout=0.2)  # only one replica exists
        try:
            with pytest.raises(BackendUnavailable, match="only 1 of 2 replicas"):
                await be.try_acquire(name + ":u", "h", 30)
            assert await be.inspect(name + ":u") is None  # the grant was undone
            with pytest.raises(BackendUnavailable, match="only 1 of 2 replicas"):
                await be.try_acquire_many([name + ":m1", name + ":m2"], "h", 30)
            assert await be.inspect(name + ":m1") is None and await be.inspect(name + ":m2") is None
        finally:
            await be.aclose()

    asyncio.run(main())


# -- URL parsing (no I/O) --------------------------------------------------------------------------
def settings(url: str, **options: Any) -> Any:
    return parse(BackendConfig(url=url, scheme=url.split("://")[0], options=Options(options),
                               timeout=3.0))


def test_url_forms() -> None:
    s = settings("redis://alice:p%40ss@10.0.0.1:6380/2", max_connections="7", prefix="app")
    assert (s.kind, s.hosts, s.max_connections, s.prefix) == ("standalone", [("10.0.0.1", 6380)], 7, "app")
    assert (s.connection["username"], s.connection["password"], s.connection["db"]) == ("alice", "p@ss", 2)
    assert s.connection["socket_connect_timeout"] == s.connection["socket_timeout"] == 3.0
    assert settings("redis://onlypassword@h").connection["password"] == "onlypassword"
    s = settings("rediss://:key@cache.example.net:6380", ssl_ca_certs="/ca.pem", ssl_cert_reqs="optional")
    assert s.connection["ssl_ca_certs"] == "/ca.pem" and s.connection["ssl_cert_reqs"] == "optional"
    s = settings("redis+sentinel://:pw@s1,s2:26380,[::1]:26381/mymaster/3", sentinel_password="sp")
    assert s.hosts == [("s1", 26379), ("s2", 26380), ("::1", 26381)]
    assert (s.service_name, s.connection["db"], s.sentinel_connection["password"]) == ("mymaster", 3, "sp")
    s = settings("redis+cluster://n1:7000,n2:7001")
    assert s.kind == "cluster" and s.sharded_pubsub and "db" not in s.connection


@pytest.mark.parametrize(("url", "options"), [
    ("redis://h:notaport", {}),
    ("redis://h1,h2", {}),
    ("redis://h/notadb", {}),
    ("redis+sentinel://h1,h2", {}),
    ("redis://h", {"prefix": "a{b"}),
    ("redis://h", {"max_conections": "3"}),
    ("redis://h", {"ssl_ca_certs": "/ca.pem"}),
    ("rediss://h", {"ssl_cert_reqs": "maybe"}),
    ("redis://h", {"sentinel_password": "x"}),
    ("redis://h", {"wait_replicas": "-1"}),
    ("redis://h", {"idle_timeout": "-1"}),
    ("redis://h", {"max_idle_connections": "-1"}),
    ("redis+cluster://h", {"max_idle_connections": "4"}),
])
def test_bad_urls_and_options_fail_before_io(url: str, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        backend(url, **options)
    with pytest.raises(ConfigError):  # the asyncio backend reads the same settings
        async_backend(url, **options)
