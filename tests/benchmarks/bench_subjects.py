"""What is measured: lockapi per backend, the raw client doing the minimum, and the peer libraries.

Every subject is built from a picklable ``env`` (server addresses) so that worker processes can build
their own. A :class:`Locker` offers the same four operations whatever the library:
``try_acquire(name) -> handle | None``, ``acquire(name, timeout) -> handle``, ``release(handle)``,
``close()``. Locks are taken with a ttl of :data:`TTL` seconds where the library has one.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TTL = 10.0
"""Lease ttl of every lock taken by the benchmarks, in seconds."""

Env = dict[str, Any]


class Locker:
    """One library's lock operations (subclasses)."""

    def try_acquire(self, name: str) -> Any:
        raise NotImplementedError

    def acquire(self, name: str, timeout: float) -> Any:
        raise NotImplementedError

    def release(self, handle: Any) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


# -- lockapi -------------------------------------------------------------------------------------------
class LockapiLocker(Locker):
    def __init__(self, url: str, *, fair: bool = False, manager: Any = None, **options: Any) -> None:
        import lockapi

        self.mgr = manager if manager is not None else lockapi.connect(url, **options)
        self.fair = fair

    def try_acquire(self, name: str) -> Any:
        return self.mgr.try_acquire(name, ttl=TTL, fair=self.fair)

    def acquire(self, name: str, timeout: float) -> Any:
        return self.mgr.acquire(name, ttl=TTL, wait=timeout, fair=self.fair)

    def release(self, handle: Any) -> None:
        handle.release()

    def close(self) -> None:
        self.mgr.close()


class AsyncLocker(Locker):
    """A Locker over an asyncio library: its own event loop, the four operations as coroutines
    (``a_try_acquire``, ``a_acquire``, ``a_release``, ``a_close``). The blocking operations run one
    coroutine each (for the hand-off and contention workers); :meth:`cycles` runs a whole measuring loop
    inside the loop, so a cycle costs what it costs an asyncio application."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    async def a_try_acquire(self, name: str) -> Any:
        raise NotImplementedError

    async def a_acquire(self, name: str, timeout: float) -> Any:
        raise NotImplementedError

    async def a_release(self, handle: Any) -> None:
        raise NotImplementedError

    async def a_close(self) -> None:
        pass

    def try_acquire(self, name: str) -> Any:
        return self.loop.run_until_complete(self.a_try_acquire(name))

    def acquire(self, name: str, timeout: float) -> Any:
        return self.loop.run_until_complete(self.a_acquire(name, timeout))

    def release(self, handle: Any) -> None:
        self.loop.run_until_complete(self.a_release(handle))

    def close(self) -> None:
        self.loop.run_until_complete(self.a_close())
        self.loop.close()

    def cycles(self, name: str, seconds: float) -> tuple[int, float, float]:
        """(cycles, wall seconds, CPU seconds) of try_acquire+release for about ``seconds``, on the loop."""
        return self.loop.run_until_complete(self._cycles(name, seconds))

    async def _cycles(self, name: str, seconds: float) -> tuple[int, float, float]:
        count = 0
        cpu = time.process_time()
        start = time.perf_counter()
        end = start + seconds
        now = start
        while now < end:
            for _ in range(10):
                handle = await self.a_try_acquire(name)
                if handle is None:
                    raise RuntimeError(f"uncontended try_acquire({name!r}) was refused")
                await self.a_release(handle)
            count += 10
            now = time.perf_counter()
        return count, now - start, time.process_time() - cpu


class LockapiAsyncLocker(AsyncLocker):
    """lockapi.aio (a native async backend where the plugin has one)."""

    def __init__(self, url: str, *, fair: bool = False) -> None:
        import lockapi.aio

        super().__init__()
        self.mgr = lockapi.aio.connect(url)
        self.fair = fair

    async def a_try_acquire(self, name: str) -> Any:
        return await self.mgr.try_acquire(name, ttl=TTL, fair=self.fair)

    async def a_acquire(self, name: str, timeout: float) -> Any:
        return await self.mgr.acquire(name, ttl=TTL, wait=timeout, fair=self.fair)

    async def a_release(self, handle: Any) -> None:
        await handle.release()

    async def a_close(self) -> None:
        await self.mgr.aclose()


# -- raw clients doing the minimum ---------------------------------------------------------------------
COMPARE_AND_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def redis_client(env: Env) -> Any:
    import redis

    return redis.Redis(host="127.0.0.1", port=env["redis_port"], socket_timeout=10)


class RawRedis(Locker):
    """SET key token NX PX ttl, then a Lua compare-and-delete (EVALSHA) — the least a safe lock does."""

    def __init__(self, env: Env) -> None:
        self.r = redis_client(env)
        self.cad = self.r.register_script(COMPARE_AND_DELETE)
        self.px = int(TTL * 1000)

    def try_acquire(self, name: str) -> Any:
        token = secrets.token_hex(8)
        return (name, token) if self.r.set("raw:" + name, token, nx=True, px=self.px) else None

    def release(self, handle: Any) -> None:
        name, token = handle
        self.cad(keys=["raw:" + name], args=[token])

    def close(self) -> None:
        self.r.close()


class RawRedisAsync(AsyncLocker):
    """:class:`RawRedis` on redis.asyncio: ``SET NX PX``, then the Lua compare-and-delete (EVALSHA)."""

    def __init__(self, env: Env) -> None:
        import redis.asyncio

        super().__init__()
        self.r = redis.asyncio.Redis(host="127.0.0.1", port=env["redis_port"], socket_timeout=10)
        self.cad = self.r.register_script(COMPARE_AND_DELETE)
        self.px = int(TTL * 1000)

    async def a_try_acquire(self, name: str) -> Any:
        token = secrets.token_hex(8)
        return (name, token) if await self.r.set("rawaio:" + name, token, nx=True, px=self.px) else None

    async def a_release(self, handle: Any) -> None:
        name, token = handle
        await self.cad(keys=["rawaio:" + name], args=[token])

    async def a_close(self) -> None:
        await self.r.aclose()


class RawPostgres(Locker):
    """One conditional UPDATE taking a pre-created row with the database clock and returning ``fence + 1``
    (issue #14's raw anchor), one giving it back (psycopg 3, autocommit, prepared)."""

    def __init__(self, env: Env) -> None:
        import psycopg

        self.conn = psycopg.connect(host="127.0.0.1", port=env["pg_port"], user="postgres", dbname="postgres",
                                    autocommit=True)
        self.conn.execute("CREATE TABLE IF NOT EXISTS bench_raw (name text PRIMARY KEY, holder text, "
                          "expires timestamptz NOT NULL DEFAULT 'epoch', fence bigint NOT NULL DEFAULT 0)")
        self.known: set[str] = set()

    def try_acquire(self, name: str) -> Any:
        if name not in self.known:
            self.conn.execute("INSERT INTO bench_raw (name) VALUES (%s) ON CONFLICT DO NOTHING", (name,))
            self.known.add(name)
        token = secrets.token_hex(8)
        cur = self.conn.execute(
            "UPDATE bench_raw SET holder = %s, expires = clock_timestamp() + interval '10 seconds', "
            "fence = fence + 1 "
            "WHERE name = %s AND (holder IS NULL OR expires < clock_timestamp()) RETURNING fence", (token, name),
            prepare=True)
        return (name, token) if cur.fetchone() is not None else None

    def release(self, handle: Any) -> None:
        self.conn.execute("UPDATE bench_raw SET holder = NULL WHERE name = %s AND holder = %s", handle,
                          prepare=True)

    def close(self) -> None:
        self.conn.close()


class RawPostgresAsync(AsyncLocker):
    """:class:`RawPostgres` on psycopg's AsyncConnection: the same conditional UPDATE pair (prepared)."""

    def __init__(self, env: Env) -> None:
        import psycopg

        super().__init__()
        self.conn = self.loop.run_until_complete(psycopg.AsyncConnection.connect(
            host="127.0.0.1", port=env["pg_port"], user="postgres", dbname="postgres", autocommit=True))
        self.loop.run_until_complete(self.conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_rawaio (name text PRIMARY KEY, holder text, "
            "expires timestamptz NOT NULL DEFAULT 'epoch', fence bigint NOT NULL DEFAULT 0)"))
        self.known: set[str] = set()

    async def a_try_acquire(self, name: str) -> Any:
        if name not in self.known:
            await self.conn.execute("INSERT INTO bench_rawaio (name) VALUES (%s) ON CONFLICT DO NOTHING", (name,))
            self.known.add(name)
        token = secrets.token_hex(8)
        cur = await self.conn.execute(
            "UPDATE bench_rawaio SET holder = %s, expires = clock_timestamp() + interval '10 seconds', "
            "fence = fence + 1 "
            "WHERE name = %s AND (holder IS NULL OR expires < clock_timestamp()) RETURNING fence", (token, name),
            prepare=True)
        return (name, token) if (await cur.fetchone()) is not None else None

    async def a_release(self, handle: Any) -> None:
        await self.conn.execute("UPDATE bench_rawaio SET holder = NULL WHERE name = %s AND holder = %s", handle,
                                prepare=True)

    async def a_close(self) -> None:
        await self.conn.close()


class RawSQLite(Locker):
    """The stdlib sqlite3 alone, autocommit, WAL: one conditional UPDATE taking a pre-created row with the
    database clock and returning ``fence + 1``, one giving it back; ``synchronous`` as given; SQLite's
    default page size unless ``page_size`` is given (for a new file)."""

    def __init__(self, env: Env, synchronous: str = "FULL", page_size: int | None = None) -> None:
        import sqlite3

        path = env["sqlite_url"].removeprefix("sqlite:///") + f".raw-{synchronous}-{page_size or 'default'}"
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
        if page_size is not None:
            self.conn.execute(f"PRAGMA page_size = {int(page_size)}")
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute(f"PRAGMA synchronous = {synchronous}")
        self.conn.execute("CREATE TABLE IF NOT EXISTS bench_raw (name TEXT PRIMARY KEY, holder TEXT, "
                          "expires INTEGER NOT NULL DEFAULT 0, fence INTEGER NOT NULL DEFAULT 0)")
        self.known: set[str] = set()

    def try_acquire(self, name: str) -> Any:
        if name not in self.known:
            self.conn.execute("INSERT OR IGNORE INTO bench_raw (name) VALUES (?)", (name,))
            self.known.add(name)
        token = secrets.token_hex(8)
        row = self.conn.execute(
            "UPDATE bench_raw SET holder = ?, fence = fence + 1, "
            "expires = CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER) + 10000000 "
            "WHERE name = ? AND expires <= CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER) "
            "RETURNING fence", (token, name)).fetchone()
        return (name, token) if row is not None else None

    def release(self, handle: Any) -> None:
        self.conn.execute("UPDATE bench_raw SET expires = 0 WHERE name = ? AND holder = ?", handle)

    def close(self) -> None:
        self.conn.close()


class RawSQLiteNormal(RawSQLite):
    def __init__(self, env: Env) -> None:
        super().__init__(env, "NORMAL")


class RawSQLiteSmallPages(RawSQLite):
    """The NORMAL anchor on a file with lockapi's page size (1 KiB): shows how much of lockapi's SQLite
    cycle against :class:`RawSQLiteNormal` comes from the smaller pages alone."""

    def __init__(self, env: Env) -> None:
        super().__init__(env, "NORMAL", page_size=1024)


class RawMariaDB(Locker):
    """One conditional UPDATE taking a pre-created row with the database clock and returning ``fence + 1``
    (in the OK packet: ``LAST_INSERT_ID(expr)``, read as ``lastrowid``; issue #14's raw anchor), one giving
    it back (PyMySQL, autocommit)."""

    def __init__(self, env: Env) -> None:
        import pymysql

        self.conn = pymysql.connect(host="127.0.0.1", port=env["maria_port"], user="root", database="lockapi",
                                    autocommit=True)
        with self.conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS bench_raw (name VARCHAR(255) PRIMARY KEY, holder CHAR(16), "
                        "expires DATETIME(6) NOT NULL DEFAULT '1970-01-02', fence BIGINT NOT NULL DEFAULT 0)")
        self.known: set[str] = set()

    def try_acquire(self, name: str) -> Any:
        with self.conn.cursor() as cur:
            if name not in self.known:
                cur.execute("INSERT IGNORE INTO bench_raw (name) VALUES (%s)", (name,))
                self.known.add(name)
            token = secrets.token_hex(8)
            n = cur.execute("UPDATE bench_raw SET holder = %s, expires = NOW(6) + INTERVAL 10 SECOND, "
                            "fence = LAST_INSERT_ID(fence + 1) "
                            "WHERE name = %s AND (holder IS NULL OR expires < NOW(6))", (token, name))
            fence = cur.lastrowid if n == 1 else None
        return (name, token) if fence else None

    def release(self, handle: Any) -> None:
        with self.conn.cursor() as cur:
            cur.execute("UPDATE bench_raw SET holder = NULL WHERE name = %s AND holder = %s", handle)

    def close(self) -> None:
        self.conn.close()


def hazelcast_client(env: Env) -> Any:
    import hazelcast

    return hazelcast.HazelcastClient(cluster_name=env["hz_cluster"], cluster_members=env["hz_members"],
                                     invocation_timeout=30)


class RawHazelcast(Locker):
    """IMap ``try_lock(key, lease_time, timeout=0)`` / ``unlock(key)`` on the blocking proxy."""

    def __init__(self, env: Env) -> None:
        self.client = hazelcast_client(env)
        self.map = self.client.get_map("bench.raw").blocking()

    def try_acquire(self, name: str) -> Any:
        return name if self.map.try_lock(name, lease_time=TTL, timeout=0) else None

    def acquire(self, name: str, timeout: float) -> Any:
        if not self.map.try_lock(name, lease_time=TTL, timeout=timeout):
            raise TimeoutError(name)
        return name

    def release(self, handle: Any) -> None:
        self.map.unlock(handle)

    def close(self) -> None:
        self.client.shutdown()


class RawHazelcastAsync(AsyncLocker):
    """:class:`RawHazelcast` on hazelcast.asyncio: ``try_lock(key, lease_time, timeout=0)`` / ``unlock(key)``.
    Its key lock belongs to the asyncio task that took it, so only the in-loop cycle (one task for both)
    can measure it: no blocking acquire."""

    def __init__(self, env: Env) -> None:
        from hazelcast.asyncio import HazelcastClient

        super().__init__()
        self.client = self.loop.run_until_complete(HazelcastClient.create_and_start(
            cluster_name=env["hz_cluster"], cluster_members=env["hz_members"], invocation_timeout=30))
        self.map = self.loop.run_until_complete(self.client.get_map("bench.rawaio"))

    async def a_try_acquire(self, name: str) -> Any:
        return name if await self.map.try_lock(name, lease_time=TTL, timeout=0) else None

    async def a_release(self, handle: Any) -> None:
        await self.map.unlock(handle)

    async def a_close(self) -> None:
        await self.client.shutdown()


# -- peers on Redis ------------------------------------------------------------------------------------
class RedisPyLock(Locker):
    """redis-py's ``Redis.lock`` (polls every 0.1 s while waiting)."""

    def __init__(self, env: Env) -> None:
        self.r = redis_client(env)

    def try_acquire(self, name: str) -> Any:
        lock = self.r.lock("rp:" + name, timeout=TTL)
        return lock if lock.acquire(blocking=False) else None

    def acquire(self, name: str, timeout: float) -> Any:
        lock = self.r.lock("rp:" + name, timeout=TTL, blocking_timeout=timeout)
        if not lock.acquire():
            raise TimeoutError(name)
        return lock

    def release(self, handle: Any) -> None:
        handle.release()

    def close(self) -> None:
        self.r.close()


class PythonRedisLock(Locker):
    """python-redis-lock (BLPOP on a signal list while waiting)."""

    def __init__(self, env: Env) -> None:
        import redis_lock

        self.mod = redis_lock
        self.r = redis_client(env)

    def try_acquire(self, name: str) -> Any:
        lock = self.mod.Lock(self.r, "prl:" + name, expire=int(TTL))
        return lock if lock.acquire(blocking=False) else None

    def acquire(self, name: str, timeout: float) -> Any:
        lock = self.mod.Lock(self.r, "prl:" + name, expire=int(TTL))
        if not lock.acquire(timeout=min(timeout, int(TTL))):  # it refuses a timeout above expire
            raise TimeoutError(name)
        return lock

    def release(self, handle: Any) -> None:
        handle.release()

    def close(self) -> None:
        self.r.close()


class PotteryRedlock(Locker):
    """pottery's Redlock on one master (sleeps randomly while waiting)."""

    def __init__(self, env: Env) -> None:
        from pottery import Redlock

        warnings.filterwarnings("ignore", module="pottery")
        self.cls = Redlock
        self.r = redis_client(env)

    def try_acquire(self, name: str) -> Any:
        lock = self.cls(key="pot:" + name, masters={self.r}, auto_release_time=TTL)
        return lock if lock.acquire(blocking=False) else None

    def acquire(self, name: str, timeout: float) -> Any:
        lock = self.cls(key="pot:" + name, masters={self.r}, auto_release_time=TTL)
        if not lock.acquire(timeout=timeout):
            raise TimeoutError(name)
        return lock

    def release(self, handle: Any) -> None:
        handle.release()

    def close(self) -> None:
        self.r.close()


class ToozLocker(Locker):
    """tooz: a coordinator per process, one lock object per name (kept, as tooz users keep them)."""

    def __init__(self, url: str) -> None:
        from tooz import coordination

        self.coord = coordination.get_coordinator(url, f"bench-{os.getpid()}-{secrets.token_hex(4)}".encode())
        self.coord.start()
        self.locks: dict[str, Any] = {}

    def _lock(self, name: str) -> Any:
        lock = self.locks.get(name)
        if lock is None:
            lock = self.locks[name] = self.coord.get_lock(("tooz:" + name).encode())
        return lock

    def try_acquire(self, name: str) -> Any:
        lock = self._lock(name)
        return lock if lock.acquire(blocking=False) else None

    def acquire(self, name: str, timeout: float) -> Any:
        lock = self._lock(name)
        if not lock.acquire(blocking=True):
            raise TimeoutError(name)
        return lock

    def release(self, handle: Any) -> None:
        handle.release()

    def close(self) -> None:
        for lock in self.locks.values():
            if getattr(lock, "acquired", False):
                lock.release()
        self.coord.stop()


class SherlockLock(Locker):
    """sherlock's RedisLock (polls every 0.1 s while waiting)."""

    def __init__(self, env: Env) -> None:
        import sherlock

        self.mod = sherlock
        self.r = redis_client(env)

    def try_acquire(self, name: str) -> Any:
        lock = self.mod.RedisLock("sh:" + name, client=self.r, expire=int(TTL))
        return lock if lock.acquire(blocking=False) else None

    def acquire(self, name: str, timeout: float) -> Any:
        lock = self.mod.RedisLock("sh:" + name, client=self.r, expire=int(TTL), timeout=timeout)
        if not lock.acquire():
            raise TimeoutError(name)
        return lock

    def release(self, handle: Any) -> None:
        handle.release()

    def close(self) -> None:
        self.r.close()


# -- the catalogue -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Subject:
    key: str
    label: str
    group: str
    """The server it runs on: memory, sqlite, redis, postgresql, mariadb, hazelcast."""
    kind: str
    """lockapi, raw or peer."""
    make: Callable[[Env], Locker]
    multi_process: bool = True
    blocking: bool = True
    """Has a blocking acquire (hand-off, contention)."""
    poll: float | None = None
    """Poll period of its waiters (None: woken by a push); the hand-off release delay spans it."""
    raw: str | None = None
    """The raw reference it is compared with (default: its group's, :data:`RAW_OF`)."""
    aio: bool = False
    """An asyncio subject (:class:`AsyncLocker`): the batch and memory sections skip it (the same keys
    as its blocking twin); lockapi's also runs the hand-off among 1,000 waiting tasks (bench_tasks)."""


def _lockapi(url_key: str, **kw: Any) -> Callable[[Env], Locker]:
    def make(env: Env) -> Locker:
        return LockapiLocker(env[url_key], **kw)

    return make


def _lockapi_aio(url_key: str, **kw: Any) -> Callable[[Env], Locker]:
    def make(env: Env) -> Locker:
        return LockapiAsyncLocker(env[url_key], **kw)

    return make


def _tooz(url_key: str) -> Callable[[Env], Locker]:
    def make(env: Env) -> Locker:
        return ToozLocker(env[url_key])

    return make


SUBJECTS: list[Subject] = [
    Subject("memory", "lockapi memory://", "memory", "lockapi", _lockapi("memory_url"), multi_process=False),
    Subject("sqlite", "lockapi sqlite", "sqlite", "lockapi", _lockapi("sqlite_url"), poll=0.05),
    Subject("sqlite_fair", "lockapi sqlite fair=True", "sqlite", "lockapi", _lockapi("sqlite_url", fair=True),
            poll=0.05),
    Subject("raw_sqlite", "raw sqlite3 UPDATE pair (synchronous NORMAL)", "sqlite", "raw", RawSQLiteNormal,
            blocking=False),
    Subject("raw_sqlite_1k", "raw sqlite3 UPDATE pair (synchronous NORMAL, 1 KiB pages as lockapi's)", "sqlite",
            "raw", RawSQLiteSmallPages, blocking=False),
    Subject("sqlite_full", "lockapi sqlite synchronous=full", "sqlite", "lockapi",
            _lockapi("sqlite_url", synchronous="full"), poll=0.05, raw="raw_sqlite_full"),
    Subject("raw_sqlite_full", "raw sqlite3 UPDATE pair (synchronous FULL)", "sqlite", "raw", RawSQLite,
            blocking=False, raw="raw_sqlite_full"),
    Subject("redis", "lockapi redis", "redis", "lockapi", _lockapi("redis_url")),
    Subject("redis_fair", "lockapi redis fair=True", "redis", "lockapi", _lockapi("redis_url", fair=True)),
    Subject("raw_redis", "raw redis-py SET NX + Lua CAD", "redis", "raw", RawRedis, blocking=False),
    Subject("redis_aio", "lockapi.aio redis", "redis", "lockapi", _lockapi_aio("redis_url"), raw="raw_redis_aio",
            aio=True),
    Subject("raw_redis_aio", "raw redis.asyncio SET NX + Lua CAD", "redis", "raw", RawRedisAsync, blocking=False,
            raw="raw_redis_aio", aio=True),
    Subject("redis_py", "redis-py Lock", "redis", "peer", RedisPyLock, poll=0.1),
    Subject("python_redis_lock", "python-redis-lock", "redis", "peer", PythonRedisLock),
    Subject("pottery", "pottery Redlock", "redis", "peer", PotteryRedlock, poll=0.2),
    Subject("tooz_redis", "tooz redis", "redis", "peer", _tooz("tooz_redis_url"), poll=0.1),
    Subject("sherlock", "sherlock RedisLock", "redis", "peer", SherlockLock, poll=0.1),
    Subject("postgresql", "lockapi postgresql", "postgresql", "lockapi", _lockapi("pg_url")),
    Subject("postgresql_fair", "lockapi postgresql fair=True", "postgresql", "lockapi",
            _lockapi("pg_url", fair=True)),
    Subject("raw_postgresql", "raw psycopg UPDATE pair", "postgresql", "raw", RawPostgres, blocking=False),
    Subject("postgresql_aio", "lockapi.aio postgresql", "postgresql", "lockapi", _lockapi_aio("pg_url"),
            raw="raw_postgresql_aio", aio=True),
    Subject("raw_postgresql_aio", "raw psycopg AsyncConnection UPDATE pair", "postgresql", "raw", RawPostgresAsync,
            blocking=False, raw="raw_postgresql_aio", aio=True),
    Subject("tooz_postgresql", "tooz postgresql", "postgresql", "peer", _tooz("tooz_pg_url")),
    Subject("mariadb", "lockapi mariadb", "mariadb", "lockapi", _lockapi("maria_url")),  # push: server-side wait
    Subject("mariadb_fair", "lockapi mariadb fair=True", "mariadb", "lockapi", _lockapi("maria_url", fair=True)),
    Subject("raw_mariadb", "raw PyMySQL UPDATE pair", "mariadb", "raw", RawMariaDB, blocking=False),
    Subject("tooz_mysql", "tooz mysql", "mariadb", "peer", _tooz("tooz_maria_url"), poll=1.0),
    Subject("hazelcast", "lockapi hazelcast (map)", "hazelcast", "lockapi", _lockapi("hz_url")),
    Subject("raw_hazelcast", "raw IMap try_lock/unlock", "hazelcast", "raw", RawHazelcast),
    Subject("hazelcast_aio", "lockapi.aio hazelcast (map)", "hazelcast", "lockapi", _lockapi_aio("hz_url"),
            raw="raw_hazelcast_aio", aio=True),
    Subject("raw_hazelcast_aio", "raw hazelcast.asyncio IMap try_lock/unlock", "hazelcast", "raw", RawHazelcastAsync,
            blocking=False, raw="raw_hazelcast_aio", aio=True),
]
BY_KEY = {s.key: s for s in SUBJECTS}

URL_KEY = {"memory": "memory_url", "sqlite": "sqlite_url", "redis": "redis_url", "postgresql": "pg_url",
           "mariadb": "maria_url", "hazelcast": "hz_url"}
"""The env key of each group's lockapi URL."""

RAW_OF = {"sqlite": "raw_sqlite", "redis": "raw_redis", "postgresql": "raw_postgresql", "mariadb": "raw_mariadb",
          "hazelcast": "raw_hazelcast"}
"""The raw-client reference of each server group."""


def raw_of(key: str) -> str | None:
    """The raw reference of subject ``key``: its own, else its group's."""
    s = BY_KEY[key]
    return s.raw or RAW_OF.get(s.group)


def available(env: Env) -> list[Subject]:
    """The subjects whose server is running in ``env``."""
    return [s for s in SUBJECTS if s.group in env.get("groups", ())]
