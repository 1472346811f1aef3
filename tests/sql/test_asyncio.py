"""The native asyncio SQL backends (lockapi_sql.aio_backend) on real servers, beyond the shared contract
(the conformance suite runs over the async API too): the native class per scheme, a thousand waiting tasks
on a fixed number of threads, a cancelled fair waiter leaves no queue entry, a frozen server is
BackendUnavailable within the timeout, sync and async clients share locks."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa
from lockapi_sql import MariaDBBackend, PostgresBackend
from lockapi_sql.aio_backend import AsyncMariaDBBackend, AsyncPostgresBackend, AsyncSQLBackend
from lockapi_sql.plans import one
from lockapi_sql.schema import name_hash
from lockapi_sql.waitloop import THREADS as WAIT_LOOP_THREADS

import lockapi
import lockapi.aio
from lockapi.aio.spi import SyncBackendAdapter
from lockapi.spi import BackendUnavailable, Capability
from tests.reliability.targets import signal_tree
from tests.servers.mariadb import MariaDBServer, mariadb_server
from tests.servers.postgres import PostgresServer, postgres_server

pytestmark = pytest.mark.timeout(300)
SERVERS = ["postgresql", "mariadb"]


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(main())


@pytest.fixture
def name() -> str:
    return f"aio:{uuid.uuid4().hex}"


@pytest.fixture(params=SERVERS)
def server_url(request: pytest.FixtureRequest) -> str:
    server: PostgresServer | MariaDBServer = request.getfixturevalue("pg" if request.param == "postgresql"
                                                                    else "maria")
    return str(server.url)


async def eventually(check: Callable[[], Any], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def acquire(mgr: lockapi.aio.AsyncLockManager, name: str, **kwargs: Any) -> lockapi.aio.AsyncLease:
    return await mgr.acquire(name, **kwargs)


def queue_entries(backend: AsyncSQLBackend, name: str) -> int:
    """Rows of ``name`` in the fair-queue table, read with a separate blocking connection."""
    sync = backend._sync
    with sync.engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {sync.tables.waiters.name} WHERE name_hash = :h"),
                                {"h": name_hash(name)}).scalar_one())


# -- the native classes --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "native", "sync"), [
    ("postgresql://u@h/db", AsyncPostgresBackend, PostgresBackend),
    ("postgres://u@h/db", AsyncPostgresBackend, PostgresBackend),
    ("postgresql+psycopg://u@h/db", AsyncPostgresBackend, PostgresBackend),
    ("mysql://u@h/db", AsyncMariaDBBackend, MariaDBBackend),
    ("mariadb://u@h/db", AsyncMariaDBBackend, MariaDBBackend),
])
def test_every_server_scheme_gets_the_native_backend(url: str, native: type, sync: type) -> None:
    async def main() -> None:
        mgr = lockapi.aio.connect(url, async_threads=4)  # the adapters' option is accepted, not needed
        assert type(mgr.backend) is native and mgr.backend.sync_backend is None
        assert mgr.capabilities == sync.capabilities - {Capability.ITER_DONE} | (
            {Capability.PUSH_WAKEUP} if url.startswith(("postgres", "mariadb")) else set())  # mysql: no push
        await mgr.aclose()

    run(main)


def test_sqlite_stays_on_the_bounded_thread_adapter(tmp_path: Any) -> None:
    async def main() -> None:
        async with lockapi.aio.connect(f"sqlite:///{tmp_path / 'a.db'}", async_threads=2) as mgr:
            assert isinstance(mgr.backend, SyncBackendAdapter)
            async with mgr.acquire("x", ttl=5) as lease:
                assert lease.token is not None

    run(main)


def test_bad_options_are_refused_before_any_io() -> None:
    with pytest.raises(lockapi.ConfigError, match="pool_size"):
        lockapi.aio.connect("postgresql://u@h:1/db?pool_size=0")
    with pytest.raises(lockapi.ConfigError, match="only the psycopg driver"):
        lockapi.aio.connect("postgresql+asyncpg://u@h:1/db")


# -- waiting on the loop ---------------------------------------------------------------------------------------
def test_a_thousand_waiting_tasks_on_one_name_run_on_a_fixed_number_of_threads(server_url: str, name: str) -> None:
    count = 1000

    async def main() -> None:
        async with lockapi.aio.connect(server_url) as holder_mgr, lockapi.aio.connect(server_url) as mgr:
            holder = await holder_mgr.acquire(name, ttl=120)
            await mgr.inspect(name)  # the tables exist: no DDL thread from here on
            threads = threading.active_count()
            granted: list[int] = []

            async def waiter() -> None:
                async with mgr.acquire(name, ttl=60, wait=240) as lease:
                    granted.append(lease.token)

            # MariaDB's wake-ups come from a server-side wait run by two threads per backend (lockapi_sql.waitloop)
            fixed = WAIT_LOOP_THREADS if server_url.startswith("mariadb") else 0
            tasks = [asyncio.create_task(waiter()) for _ in range(count)]
            await eventually(lambda: mgr.waiting == count, f"{count} waiters", timeout=120)
            assert threading.active_count() <= threads + fixed, "waiting tasks occupy threads"
            assert granted == []
            await holder.release()
            await asyncio.wait_for(asyncio.gather(*tasks), 240)
            assert len(granted) == count and len(set(granted)) == count, "every waiter was granted once"
            assert granted == sorted(granted), "fencing tokens went down"
            assert threading.active_count() <= threads + fixed, "the native backend started threads"

    run(main)


def test_a_cancelled_fair_waiter_leaves_no_queue_entry(server_url: str, name: str) -> None:
    async def main() -> None:
        async with lockapi.aio.connect(server_url) as mgr, lockapi.aio.connect(server_url) as other:
            backend = mgr.backend
            assert isinstance(backend, AsyncSQLBackend)
            holder = await other.acquire(name, ttl=60)
            for _ in range(2):
                waiter = asyncio.create_task(acquire(mgr, name, ttl=30, wait=60, fair=True))
                await eventually(lambda: queue_entries(backend, name) == 1, "the waiter to queue")
                waiter.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiter
                await mgr._background.drain()
                assert queue_entries(backend, name) == 0, "the cancelled fair waiter is still queued"
                assert mgr.waiting == 0
            assert await holder.release()
            assert await mgr.inspect(name) is None, "a cancelled waiter was granted the lock"

    run(main)


def test_sync_and_async_managers_share_locks(server_url: str, name: str) -> None:
    async def main() -> None:
        with lockapi.connect(server_url) as sync_mgr:
            async with lockapi.aio.connect(server_url) as mgr:
                first = sync_mgr.acquire(name, ttl=30)
                assert await mgr.try_acquire(name, ttl=30) is None, "the async client took a lock the sync one holds"
                info = await mgr.inspect(name)
                assert info is not None and info.token == first.token
                waiter = asyncio.create_task(acquire(mgr, name, ttl=30, wait=30))
                await eventually(lambda: mgr.waiting == 1, "the async waiter")
                assert first.release()
                second = await waiter
                assert second.token > first.token
                assert sync_mgr.try_acquire(name, ttl=30) is None, "the sync client took a lock the async one holds"
                assert await second.release()
                third = sync_mgr.acquire(name, ttl=30)
                assert third.token > second.token
                assert third.release()

    run(main)


def test_a_slow_statement_costs_the_client_no_cpu_while_it_waits(pg: PostgresServer) -> None:
    """The asyncio pool's PostgreSQL connections (psycopg's AsyncConnection with lockapi's own wait, which
    drops the connection on a cancellation) wait for a reply on the loop at psycopg's pace, not in a busy
    loop (a wait interval of 0 made every wait spin until the reply came)."""
    async def main() -> None:
        async with lockapi.aio.connect(pg.url, listen="false") as mgr:
            backend = mgr.backend
            assert isinstance(backend, AsyncSQLBackend)
            await backend.ping()  # connected: the call below only waits
            cpu = time.process_time()
            await backend.connections.call(one, "SELECT pg_sleep(0.6)", {})
            used = time.process_time() - cpu
            assert used < 0.2, f"the client used {used:.2f} s of CPU while the server slept 0.6 s"

    run(main)


# -- a frozen server -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", SERVERS)
def test_a_frozen_server_is_backend_unavailable_within_timeout(kind: str, name: str) -> None:
    starter = postgres_server if kind == "postgresql" else mariadb_server
    timeout = 1.0
    with starter() as server:
        async def main() -> None:
            async with lockapi.aio.connect(server.url, timeout=timeout) as mgr:
                backend = mgr.backend
                assert isinstance(backend, AsyncSQLBackend)
                assert (await backend.try_acquire(name, "h", 30)).token is not None  # connected before the freeze
                signal_tree(server.process, signal.SIGSTOP)
                try:
                    calls: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
                        ("try_acquire", lambda: backend.try_acquire(name, "h2", 30)),
                        ("fair try_acquire", lambda: backend.try_acquire(name, "h3", 30, queue_ttl=5)),
                        ("release", lambda: backend.release(name, "h", 1)),
                        ("permit", lambda: backend.try_acquire_permit(name, 2, "h", 30)),
                        ("inspect", lambda: backend.inspect(name)),
                    ]
                    for what, call in calls:
                        started = time.monotonic()
                        with pytest.raises(BackendUnavailable):
                            await call()
                        elapsed = time.monotonic() - started
                        assert elapsed < timeout * 2 + 1.0, f"{what} took {elapsed:.2f}s with a {timeout}s timeout"
                finally:
                    signal_tree(server.process, signal.SIGCONT)
                deadline = time.monotonic() + 30
                while True:  # new connections once the server answers again
                    try:
                        await backend.ping()
                        break
                    except BackendUnavailable:
                        assert time.monotonic() < deadline, "the backend did not recover after the thaw"
                        await asyncio.sleep(0.1)

        run(main)


# -- MariaDB's prepared statements on the asyncio driver ------------------------------------------------------
def test_mariadb_asyncio_prepares_on_first_use_and_runs_plain_statements_at_the_server_limit(
        maria: MariaDBServer, name: str) -> None:
    """aiomysql connections run the hot statements as MariaDB's do on PyMySQL: ``EXECUTE``, prepared on a
    connection's first use of it; when the server can prepare no more (``max_prepared_stmt_count``, all
    sessions together) a fresh connection runs the plain statement instead, and prepares again once
    the server has room."""
    admin = sa.create_engine(maria.url, poolclass=sa.pool.NullPool)

    async def cycle(holder: str) -> int:
        async with lockapi.aio.connect(maria.url) as mgr:  # a new manager: new, unprepared connections
            lease = await mgr.try_acquire(name, ttl=30)
            assert lease is not None and await mgr.try_acquire(name, ttl=30) is None, holder
            token = lease.token
            await lease.release()
            return token

    with admin.connect() as conn:
        (limit,) = conn.execute(sa.text("SELECT @@GLOBAL.max_prepared_stmt_count")).one()
        first = run(lambda: cycle("prepared"))
        conn.execute(sa.text("SET GLOBAL max_prepared_stmt_count = 0"))
        try:
            second = run(lambda: cycle("plain"))
        finally:
            conn.execute(sa.text(f"SET GLOBAL max_prepared_stmt_count = {int(limit)}"))
        third = run(lambda: cycle("prepared again"))
    admin.dispose()
    assert first < second < third


# -- PostgreSQL's hot statements on libpq ----------------------------------------------------------------------
def test_postgres_asyncio_prepares_its_hot_statements_per_connection(pg: PostgresServer, name: str) -> None:
    """The asyncio pool's PostgreSQL connections run a claim and a lock's release as the sync ones do:
    statements prepared on each connection's first use of them (named, not psycopg's own), also again
    when the connection lost them (``DEALLOCATE``); holders are data (quotes, backslashes, non-ASCII),
    and a parameter beyond ``bigint`` takes psycopg's path."""
    async def prepared(backend: AsyncSQLBackend) -> list[set[str]]:
        out = []
        for session in backend.connections._idle:
            cursor = await session.conn.execute("SELECT name FROM pg_prepared_statements")
            out.append({row[0] for row in await cursor.fetchall()})
        return out

    async def main() -> None:
        async with lockapi.aio.connect(pg.url, listen="false") as mgr:
            backend = mgr.backend
            assert isinstance(backend, AsyncSQLBackend)
            first = await backend.try_acquire(name, "h1", 30)
            assert first.token == 1 and await backend.release(name, "h1", first.token)
            first = await backend.try_acquire(name, "h1", 30)  # the prepared claim (the row is known now)
            assert first.token == 2 and await backend.release(name, "h1", first.token)
            names = await prepared(backend)
            assert names, "the call's connection went back to the pool"
            for made in names:
                assert {"lockapi_claim", "lockapi_release"} <= made
            for session in backend.connections._idle:
                await session.conn.execute("DEALLOCATE lockapi_claim")
                await session.conn.execute("DEALLOCATE lockapi_release")
            assert not any(made & {"lockapi_claim", "lockapi_release"} for made in await prepared(backend))
            awkward = "h'2\\ \u00fc\u6f22 --"
            second = await backend.try_acquire(name, awkward, 30)
            assert second.token == 3 and not (await backend.try_acquire(name, "h3", 30)).granted
            assert (await backend.try_acquire(name, awkward, 30)).token == 4  # the holder's retry: granted again
            assert (await backend.inspect(name)).holder == awkward  # type: ignore[union-attr]
            assert not await backend.release(name, awkward, 3) and await backend.release(name, awkward, 4)
            assert await backend.release(name, awkward, 4)  # a retried release finds the lease it ended
            for made in await prepared(backend):
                assert {"lockapi_claim", "lockapi_release"} <= made, "prepared again after DEALLOCATE"
            assert not await backend.release(name, "h1", 2**63)  # beyond bigint: psycopg's path, no error

    run(main)
