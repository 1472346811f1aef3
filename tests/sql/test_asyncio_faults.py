"""The native asyncio SQL backends (lockapi_sql.aio_backend) under the faults a production sees, on real
PostgreSQL and MariaDB servers (issues 13 and 15):

1. a reply lost after the server did the work (a :class:`CutProxy` drops exactly the reply of the statement
   that grants, releases or commits): the retry on a fresh connection reports what really happened;
2. a caller cancelled while each statement of a multi-statement call is in flight: no lease, permit, queue
   entry or open transaction (row lock) is left to block another manager, and the pool stays usable;
   PostgreSQL's plain attempt, which settles instead (``settles_cancelled_attempts``), cancelled at each
   of its awaits: connecting, its statements in flight (once, twice), the retry after a lost reply, a
   server that never answers;
3. a PostgreSQL restart while waiters wait (the LISTEN connection is lost): each still gets the lock within
   its ``wait``;
4. a server that accepts TCP and never answers: every call, and ``aclose()``, ends within the timeout.

The statement in flight is chosen by wrapping :meth:`AsyncSession.run` (the real driver still runs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from lockapi_sql.aio_backend import AsyncSQLBackend
from lockapi_sql.aio_connections import AsyncSession
from lockapi_sql.plans import Step
from lockapi_sql.schema import name_hash

import lockapi
import lockapi.aio
from lockapi.spi import BackendUnavailable
from tests.reliability.targets import signal_tree, start_process, stop_process
from tests.servers import postgres as postgres_launcher
from tests.servers.mariadb import MariaDBServer, mariadb_server
from tests.servers.postgres import PostgresServer
from tests.servers.proxy import CutProxy

pytestmark = pytest.mark.timeout(300)
SERVERS = ["postgresql", "mariadb"]


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(main())


@pytest.fixture
def name() -> str:
    return f"aiofault:{uuid.uuid4().hex}"


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> PostgresServer | MariaDBServer:
    server: PostgresServer | MariaDBServer = request.getfixturevalue("pg" if request.param == "postgresql"
                                                                    else "maria")
    return server


def connect(url: str, **options: Any) -> lockapi.aio.AsyncLockManager:
    return lockapi.aio.connect(url, **options)


def native(mgr: lockapi.aio.AsyncLockManager) -> AsyncSQLBackend:
    backend = mgr.backend
    assert isinstance(backend, AsyncSQLBackend)
    return backend


class Steps:
    """Calls ``action(index, step)`` before each statement that any asyncio SQL session runs while armed
    (index counts from arming); records the statements seen."""

    def __init__(self) -> None:
        self.armed = False
        self.seen: list[str] = []
        self.action: Callable[[int, Step], None] = lambda index, step: None

    def arm(self, action: Callable[[int, Step], None]) -> None:
        self.seen = []
        self.action = action
        self.armed = True

    def disarm(self) -> None:
        self.armed = False


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> Steps:
    hook = Steps()
    original = AsyncSession.run

    async def run_step(session: AsyncSession, step: Step) -> Any:
        if hook.armed:
            index = len(hook.seen)
            hook.seen.append(step[1])
            hook.action(index, step)
        return await original(session, step)

    monkeypatch.setattr(AsyncSession, "run", run_step)
    return hook


def count_rows(backend: AsyncSQLBackend, table: str, name: str) -> int:
    """Rows of ``name`` in one of the backend's tables, read with a separate blocking connection."""
    sync = backend._sync
    with sync.engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {table} WHERE name_hash = :h"),
                                {"h": name_hash(name)}).scalar_one())


def queue_entries(backend: AsyncSQLBackend, name: str) -> int:
    return count_rows(backend, backend._sync.tables.waiters.name, name)


def pool_is_consistent(backend: AsyncSQLBackend) -> None:
    pool = backend.connections
    assert pool._open == len(pool._idle), f"{pool._open} connections counted open, {len(pool._idle)} idle"
    assert not pool._waiters


# -- 1. a lost reply ---------------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def proxied(server: PostgresServer | MariaDBServer) -> AsyncIterator[tuple[AsyncSQLBackend, CutProxy]]:
    """A backend whose only connection goes through a proxy that can lose a reply (no LISTEN connection,
    whose notifications would otherwise take the cut)."""
    with CutProxy(server.port) as proxy:
        url = server.url.replace(f":{server.port}/", f":{proxy.port}/")
        options = {"listen": "false"} if isinstance(server, PostgresServer) else {}
        async with connect(url, timeout=10.0, pool_size=1, max_overflow=0, **options) as mgr:
            backend = native(mgr)
            await backend.inspect("warm-up")  # the pooled connection exists
            yield backend, proxy


def cut_before(steps: Steps, proxy: CutProxy, statement: str) -> None:
    """Lose the reply of the first ``statement`` run from now on (every earlier reply was read)."""
    def action(index: int, step: Step) -> None:
        if step[1] == statement and not proxy._armed.is_set() and not proxy.cut.is_set():
            proxy.cut_next_reply()

    proxy.cut.clear()
    steps.arm(action)


def assert_cut(steps: Steps, proxy: CutProxy) -> None:
    steps.disarm()
    assert proxy.cut.is_set(), "the proxy dropped no reply: the test did not test anything"


async def existing_row(backend: AsyncSQLBackend, name: str) -> None:
    """Give ``name`` its lease row (MariaDB creates it on first use), so that the claim is the one statement
    that grants."""
    token = (await backend.try_acquire(name, "warm", 60)).token
    assert token is not None and await backend.release(name, "warm", token)


def test_a_release_whose_reply_was_lost_reports_success(server: Any, steps: Steps, name: str) -> None:
    async def main() -> None:
        async with proxied(server) as (backend, proxy):
            token = (await backend.try_acquire(name, "h", 60)).token
            assert token is not None
            cut_before(steps, proxy, backend.plans.sql.release_lock)
            assert await backend.release(name, "h", token) is True, "a release that happened reported a loss"
            assert_cut(steps, proxy)
            assert await backend.inspect(name) is None
            pool_is_consistent(backend)

    run(main)


def test_an_acquire_whose_reply_was_lost_is_held_by_the_caller(server: Any, steps: Steps, name: str) -> None:
    async def main() -> None:
        async with proxied(server) as (backend, proxy):
            await existing_row(backend, name)
            cut_before(steps, proxy, backend.plans.sql.claim)
            token = (await backend.try_acquire(name, "h", 60)).token
            assert_cut(steps, proxy)
            assert token is not None, "the retry found the caller's own grant and refused it (orphaned)"
            info = await backend.inspect(name)
            assert info is not None and (info.holder, info.token) == ("h", token)
            assert await backend.release(name, "h", token) is True
            assert (await backend.try_acquire(name, "other", 60)).token is not None

    run(main)


def test_an_acquire_whose_reply_was_lost_on_a_fresh_connection_is_held_by_the_caller(server: Any, steps: Steps,
                                                                                      name: str) -> None:
    """The connection that loses the reply was opened by this very call (an empty pool: the first call, a
    burst beyond the idle connections, after a restart): the call is retried too, instead of raising
    BackendUnavailable while the server keeps a grant nobody knows of until its ttl ends."""
    async def main() -> None:
        async with proxied(server) as (backend, proxy):
            await existing_row(backend, name)
            backend.connections._drain()  # no idle connection: the next call opens a fresh one
            cut_before(steps, proxy, backend.plans.sql.claim)
            token = (await backend.try_acquire(name, "h", 60)).token
            assert_cut(steps, proxy)
            assert token is not None, "the retry found the caller's own grant and refused it (orphaned)"
            info = await backend.inspect(name)
            assert info is not None and (info.holder, info.token) == ("h", token)
            assert await backend.release(name, "h", token) is True
            pool_is_consistent(backend)

    run(main)


def test_a_permit_whose_commit_reply_was_lost_is_found_not_taken_twice(server: Any, steps: Steps,
                                                                       name: str) -> None:
    async def main() -> None:
        async with proxied(server) as (backend, proxy):
            cut_before(steps, proxy, "COMMIT")
            token = (await backend.try_acquire_permit(name, 2, "p", 60)).token
            assert_cut(steps, proxy)
            assert token is not None and await backend.holds_permit(name, "p", token)
            other = (await backend.try_acquire_permit(name, 2, "q", 60)).token
            assert other is not None, "the retry took a second permit"
            assert (await backend.try_acquire_permit(name, 2, "r", 60)).token is None, "three permits of two"
            assert await backend.release_permit(name, "p", token)
            assert await backend.release_permit(name, "q", other)

    run(main)


@pytest.mark.parametrize("lost", ["claim_fair", "claim", "COMMIT"])
def test_a_fair_acquire_whose_reply_was_lost_is_held_by_the_caller(server: Any, steps: Steps, name: str,
                                                                   lost: str) -> None:
    async def main() -> None:
        async with proxied(server) as (backend, proxy):
            first = (await backend.try_acquire(name, "first", 60)).token
            assert first is not None
            if lost != "claim_fair":  # queued first: the next attempt is the queue transaction
                assert (await backend.try_acquire(name, "w", 60, queue_ttl=60)).token is None
            assert await backend.release(name, "first", first)
            statement = {"claim": backend.plans.sql.claim, "claim_fair": backend.plans.sql.claim_fair}
            cut_before(steps, proxy, statement.get(lost, "COMMIT"))
            token = (await backend.try_acquire(name, "w", 60, queue_ttl=60)).token
            assert_cut(steps, proxy)
            assert token is not None and await backend.holds(name, "w", token)
            assert queue_entries(backend, name) == 0, "the granted waiter is still queued"
            assert await backend.release(name, "w", token)
            assert (await backend.try_acquire(name, "next", 60, queue_ttl=60)).token is not None

    run(main)


def test_a_batch_acquire_and_an_extend_whose_replies_were_lost_keep_the_callers_grants(server: Any, steps: Steps,
                                                                                       name: str) -> None:
    async def main() -> None:
        async with proxied(server) as (backend, proxy):
            names = [f"{name}:{i}" for i in range(3)]
            cut_before(steps, proxy, "COMMIT")
            got = await backend.try_acquire_many(names, "h", 60)
            assert_cut(steps, proxy)
            assert sorted(got) == names, f"the retried batch lost grants of its own: {got}"
            for n, token in got.items():
                assert await backend.holds(n, "h", token)
            cut_before(steps, proxy, backend.plans.sql.extend)
            assert await backend.extend(names[0], "h", got[names[0]], 120) is True, "a lost extend reported a loss"
            assert_cut(steps, proxy)
            info = await backend.inspect(names[0])
            assert info is not None and info.ttl_remaining is not None and info.ttl_remaining > 60

    run(main)


# -- 2. cancellation at every statement -----------------------------------------------------------------------
async def no_row_lock(other: AsyncSQLBackend, name: str, permits: int) -> None:
    """Another backend's fair acquire and permit acquire on ``name`` finish at once (no row lock is left)."""
    async with asyncio.timeout(5):
        attempt = await other.try_acquire(name, "probe", 5, queue_ttl=5)
        await other.cancel_wait(name, "probe")
        if attempt.token is not None:
            assert await other.release(name, "probe", attempt.token)
        permit = await other.try_acquire_permit(name, permits, "probe", 5)
        if permit.token is not None:
            assert await other.release_permit(name, "probe", permit.token)


def cancel_at(steps: Steps, task: Callable[[], asyncio.Task[Any] | None], at: int) -> None:
    """Cancel ``task()`` when the statement number ``at`` from now is in flight."""
    def action(index: int, step: Step) -> None:
        if index == at:
            target = task()
            assert target is not None
            target.cancel()

    steps.arm(action)


def test_a_backend_call_cancelled_at_each_statement_leaves_no_transaction(server: Any, steps: Steps,
                                                                          name: str) -> None:
    """The backend's own calls (no manager shielding them): a fair attempt's queue transaction and a permit
    acquire, cancelled while each of their statements is in flight."""
    async def main() -> None:
        async with connect(server.url, timeout=10.0) as mgr, connect(server.url, timeout=10.0) as peer:
            backend, other = native(mgr), native(peer)
            async def queued(n: str, release: bool) -> None:
                held = (await other.try_acquire(n, "x", 60)).token
                assert held is not None
                assert (await backend.try_acquire(n, "w", 30, queue_ttl=30)).token is None  # queued
                if release:
                    assert await other.release(n, "x", held)

            calls: dict[str, tuple[Callable[[str], Awaitable[Any]], Callable[[str], Awaitable[Any]]]] = {
                "fair denied": (lambda n: queued(n, False), lambda n: backend.try_acquire(n, "w", 30, queue_ttl=30)),
                "fair granted": (lambda n: queued(n, True), lambda n: backend.try_acquire(n, "w", 30, queue_ttl=30)),
                "permit": (lambda n: asyncio.sleep(0), lambda n: backend.try_acquire_permit(n, 2, "p", 30)),
            }
            for what, (setup, call) in calls.items():
                sample = f"{name}:{what}:sample"
                await setup(sample)
                steps.arm(lambda index, step: None)
                await call(sample)
                count = len(steps.seen)
                steps.disarm()
                assert count >= 4, f"{what}: {steps.seen}"
                for at in range(count):
                    target = f"{name}:{what}:{at}"
                    await setup(target)
                    task: asyncio.Task[Any] = asyncio.create_task(call(target))
                    cancel_at(steps, lambda task=task: task, at)  # type: ignore[misc]
                    with contextlib.suppress(asyncio.CancelledError):
                        async with asyncio.timeout(15):
                            await task
                    steps.disarm()
                    assert task.cancelled() or task.exception() is None, f"{what} at {at}: {task!r}"
                    pool_is_consistent(backend)
                    await no_row_lock(other, target, 2)
                    async with asyncio.timeout(5):
                        await backend.ping()  # the pool is usable

    run(main)


def test_a_manager_acquire_cancelled_at_each_statement_leaves_nothing_behind(server: Any, steps: Steps,
                                                                              name: str) -> None:
    """A user's fair acquire and semaphore acquire, cancelled while each statement of their first attempt is
    in flight (the lock and the semaphore are free: the attempt grants): nothing is left that blocks another
    manager, and no queue entry."""
    async def main() -> None:
        async with connect(server.url, timeout=10.0) as mgr, connect(server.url, timeout=10.0) as peer:
            backend, other = native(mgr), native(peer)

            async def fair(n: str) -> Any:
                return await mgr.acquire(n, ttl=30, wait=30, fair=True)

            async def permit(n: str) -> Any:
                return await mgr.semaphore(n, 1).acquire(ttl=30, wait=30)

            async def hold(n: str) -> int | None:
                return (await other.try_acquire(n, "x", 60)).token

            async def free(n: str) -> None:
                return None

            variants: dict[str, tuple[Callable[[str], Awaitable[Any]], Callable[[str], Awaitable[Any]]]] = {
                "fair": (free, fair), "fair held": (hold, fair), "permit": (free, permit)}
            for what, (setup, call) in variants.items():
                for at in range(12):
                    target = f"{name}:{what}:{at}"
                    held = await setup(target)
                    task: asyncio.Task[Any] = asyncio.create_task(call(target))
                    cancel_at(steps, lambda task=task: task, at)  # type: ignore[misc]
                    with contextlib.suppress(asyncio.CancelledError):
                        async with asyncio.timeout(15):
                            lease = await task
                            await lease.release()
                    reached = len(steps.seen) > at
                    steps.disarm()
                    await mgr._background.drain()
                    pool_is_consistent(backend)
                    assert queue_entries(backend, target) == 0, f"{what} at {at}: a queue entry is left"
                    if held is not None:
                        assert await other.release(target, "x", held)
                    async with asyncio.timeout(5):
                        if what == "fair":
                            attempt = await other.try_acquire(target, "y", 5, queue_ttl=5)
                        else:
                            attempt = await other.try_acquire_permit(target, 1, "y", 5)
                    assert attempt.token is not None, f"{what} cancelled at statement {at}: still held"
                    if not reached:
                        break

    run(main)


def test_a_release_cancelled_while_its_statement_is_in_flight_still_completes(server: Any, steps: Steps,
                                                                              name: str) -> None:
    """A release (and ``release(keep=)``, a permit's release) runs in the caller's task; cancelled while its
    statement is in flight (its connection is dropped: the server may or may not have run it), it is sent
    again by a background task: the lease is free (or kept), recorded released, and the pool is usable."""
    async def main() -> None:
        async with connect(server.url, timeout=10.0) as mgr, connect(server.url, timeout=10.0) as peer:
            backend, other = native(mgr), native(peer)
            for what in ("release", "keep", "permit"):
                target = f"{name}:{what}"
                if what == "permit":
                    lease: Any = await mgr.semaphore(target, 1).acquire(ttl=30)
                else:
                    lease = await mgr.acquire(target, ttl=30)
                task = asyncio.create_task(lease.release(keep=30.0 if what == "keep" else None))
                cancel_at(steps, lambda task=task: task, 0)  # type: ignore[misc]
                with pytest.raises(asyncio.CancelledError):
                    async with asyncio.timeout(15):
                        await task
                assert len(steps.seen) == 1, steps.seen
                steps.disarm()
                await mgr._background.drain()
                pool_is_consistent(backend)
                assert not lease.lost, f"{what}: reported lost"
                async with asyncio.timeout(5):
                    if what == "permit":
                        attempt = await other.try_acquire_permit(target, 1, "y", 5)
                    else:
                        attempt = await other.try_acquire(target, "y", 5)
                if what == "keep":
                    assert attempt.token is None, "release(keep=) cancelled: the lease was not kept"
                else:
                    assert attempt.token is not None, f"{what} cancelled in flight: still held"

    run(main)


# -- 2b. PostgreSQL's plain attempt settles (AsyncBackend.settles_cancelled_attempts): each of its awaits -------
async def plain_try(mgr: lockapi.aio.AsyncLockManager, n: str) -> Any:
    return await mgr.try_acquire(n, ttl=30)


async def plain_wait(mgr: lockapi.aio.AsyncLockManager, n: str) -> Any:
    return await mgr.acquire(n, ttl=30, wait=30)


PLAIN = {"try_acquire": plain_try, "acquire(wait=)": plain_wait}


@pytest.mark.parametrize("cancels", [1, 2])
@pytest.mark.parametrize("held", [False, True])
@pytest.mark.parametrize("call", list(PLAIN))
def test_a_plain_acquire_cancelled_while_its_statement_is_in_flight_settles(pg: PostgresServer, steps: Steps,
                                                                             name: str, call: str, held: bool,
                                                                             cancels: int) -> None:
    """Cancelled (once, or again while settling) while the claim (or, on a held lock, the read after the
    denial) is in flight: the statement is finished on its connection, which stays pooled (not dropped);
    a grant is given back before the cancellation reaches the caller; nothing is left held."""
    async def main() -> None:
        async with connect(pg.url, timeout=10.0) as mgr, connect(pg.url, timeout=10.0) as peer:
            backend, other = native(mgr), native(peer)
            assert backend.settles_cancelled_attempts
            for at in range(2 if held else 1):
                target = f"{name}:{at}"
                holding = (await other.try_acquire(target, "x", 60)).token if held else None
                await backend.ping()  # one pooled connection
                sessions = list(backend.connections._idle)
                task: asyncio.Task[Any] = asyncio.create_task(PLAIN[call](mgr, target))

                def action(index: int, step: Step, task: asyncio.Task[Any] = task, at: int = at) -> None:
                    if index == at:
                        task.cancel()
                        for _ in range(cancels - 1):  # lands while the first one is being settled
                            asyncio.get_running_loop().call_soon(task.cancel)

                steps.arm(action)
                with pytest.raises(asyncio.CancelledError):
                    async with asyncio.timeout(15):
                        lease = await task
                        await lease.release()
                assert task.cancelled()
                assert len(steps.seen) > at, steps.seen
                steps.disarm()
                assert not mgr._background._tasks, "the grant was given back in the background, not before"
                pool_is_consistent(backend)
                assert backend.connections._idle == sessions, "the cancelled statement's connection was dropped"
                if holding is not None:
                    info = await other.inspect(target)
                    assert info is not None and info.holder == "x"
                    assert await other.release(target, "x", holding)
                async with asyncio.timeout(5):
                    attempt = await other.try_acquire(target, "y", 5)
                assert attempt.token is not None, f"{call} cancelled at statement {at}: still held"

    run(main)


def test_a_plain_acquire_cancelled_while_its_claim_is_prepared_again_settles(pg: PostgresServer, steps: Steps,
                                                                            name: str) -> None:
    """Cancelled while the claim is in flight on a connection that lost it (``DEALLOCATE``): the settling
    wait carries the whole libpq recovery (the failed run, the new prepare, the run again), the
    connection stays pooled with the claim prepared, the grant is given back, nothing is held."""
    async def prepared(session: AsyncSession) -> set[str]:
        cursor = await session.conn.execute("SELECT name FROM pg_prepared_statements")
        return {row[0] for row in await cursor.fetchall()}

    async def main() -> None:
        async with connect(pg.url, timeout=10.0) as mgr:
            backend = native(mgr)
            await existing_row(backend, name)  # the claim is the statement that grants
            await existing_row(backend, name)  # ... and it has run (prepared on the connection)
            sessions = list(backend.connections._idle)
            assert len(sessions) == 1 and "lockapi_claim" in await prepared(sessions[0])
            await sessions[0].conn.execute("DEALLOCATE lockapi_claim")
            task: asyncio.Task[Any] = asyncio.create_task(plain_try(mgr, name))
            steps.arm(lambda index, step: task.cancel() if index == 0 else None)
            with pytest.raises(asyncio.CancelledError):
                async with asyncio.timeout(15):
                    await task
            assert task.cancelled() and steps.seen, steps.seen
            steps.disarm()
            pool_is_consistent(backend)
            assert backend.connections._idle == sessions, "the cancelled statement's connection was dropped"
            assert "lockapi_claim" in await prepared(sessions[0]), "the settled claim was not prepared again"
            assert await backend.inspect(name) is None, "the settled grant is still held"

    run(main)


@pytest.mark.parametrize("call", list(PLAIN))
def test_a_plain_acquire_cancelled_while_connecting_leaves_nothing(pg: PostgresServer, name: str, call: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelled while its connection is being opened (an empty pool): nothing was sent, the cancellation
    goes on at once."""
    from lockapi_sql.aio_connections import AsyncConnections

    original = AsyncConnections._checkout
    checkouts: list[int] = []

    async def checkout(pool: AsyncConnections, deadline: float) -> Any:
        checkouts.append(1)
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # delivered at the connect's first wait
        return await original(pool, deadline)

    async def main() -> None:
        async with connect(pg.url, timeout=10.0) as mgr, connect(pg.url, timeout=10.0) as peer:
            backend, other = native(mgr), native(peer)
            await backend.ping()
            backend.connections._drain()
            monkeypatch.setattr(AsyncConnections, "_checkout", checkout)
            with pytest.raises(asyncio.CancelledError):
                await PLAIN[call](mgr, name)
            monkeypatch.setattr(AsyncConnections, "_checkout", original)
            assert checkouts == [1]
            pool_is_consistent(backend)
            assert (await other.try_acquire(name, "y", 5)).token is not None, "granted although never sent"

    run(main)


def test_a_plain_acquire_cancelled_during_the_retry_of_a_lost_reply_gives_the_grant_back(
        pg: PostgresServer, steps: Steps, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The claim's reply is lost (the server granted), and the caller is cancelled while the retry opens
    its fresh connection: the retry settles too, finds the caller's grant, and core gives it back."""
    from lockapi_sql.aio_connections import AsyncConnections

    original = AsyncConnections._checkout
    checkouts: list[int] = []
    caller: list[asyncio.Task[Any]] = []

    async def checkout(pool: AsyncConnections, deadline: float) -> Any:
        checkouts.append(1)
        caller[0].cancel()  # the caller's task (the retry's connect may run in a task of its own)
        await asyncio.sleep(0)  # delivered to the caller while the connect is under way
        return await original(pool, deadline)

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        caller.append(task)
        async with proxied(pg) as (backend, proxy):
            await existing_row(backend, name)
            mgr = lockapi.aio.AsyncLockManager(backend)
            cut_before(steps, proxy, backend.plans.sql.claim)
            monkeypatch.setattr(AsyncConnections, "_checkout", checkout)
            with pytest.raises(asyncio.CancelledError):
                await mgr.try_acquire(name, ttl=60)
            monkeypatch.setattr(AsyncConnections, "_checkout", original)
            assert_cut(steps, proxy)
            assert checkouts, "the retry opened no connection: the test did not test anything"
            await mgr._background.drain()
            assert await backend.inspect(name) is None, "the grant found by the settled retry is still held"
            pool_is_consistent(backend)

    run(main)


def test_a_plain_acquire_cancelled_while_pausing_before_a_retry_after_a_lost_reply_gives_the_grant_back(
        pg: PostgresServer, steps: Steps, name: str) -> None:
    """The claim's reply is lost (the server granted), its retry meets a deadlock (made up here), and the
    caller is cancelled during the pause before the next retry: that pause settles too, the next retry
    finds the caller's grant, and core gives it back."""
    import psycopg

    async def main() -> None:
        caller = asyncio.current_task()
        assert caller is not None
        async with proxied(pg) as (backend, proxy):
            await existing_row(backend, name)
            mgr = lockapi.aio.AsyncLockManager(backend)
            claims: list[int] = []

            def action(index: int, step: Step) -> None:
                if step[1] != backend.plans.sql.claim:
                    return
                claims.append(index)
                if len(claims) == 1:
                    proxy.cut_next_reply()
                elif len(claims) == 2:
                    caller.cancel()  # delivered in the pause before the next retry
                    raise psycopg.errors.DeadlockDetected("a deadlock (test)")

            proxy.cut.clear()
            steps.arm(action)
            with pytest.raises(asyncio.CancelledError):
                await mgr.try_acquire(name, ttl=60)
            assert_cut(steps, proxy)
            assert len(claims) == 3, claims
            await mgr._background.drain()
            assert await backend.inspect(name) is None, "the grant found after the pause is still held"
            pool_is_consistent(backend)

    run(main)


def test_a_plain_acquire_cancelled_while_the_server_never_answers_ends_within_the_timeout(name: str) -> None:
    """Settling does not outlive the call's deadline: the socket is cut, and the caller's cancellation
    (a task cancelled, an ``asyncio.timeout``) is raised within the timeout; the pool stays usable."""
    timeout = 3.0
    with postgres_launcher.postgres_server() as server:
        async def main() -> None:
            async with connect(server.url, timeout=timeout, listen="false") as mgr:
                backend = native(mgr)
                await backend.ping()
                signal_tree(server.process, signal.SIGSTOP)
                try:
                    for how in ("cancel", "asyncio.timeout", "double cancel"):
                        started = time.monotonic()
                        if how == "asyncio.timeout":
                            with pytest.raises(TimeoutError):
                                async with asyncio.timeout(0.2):
                                    await mgr.try_acquire(name, ttl=30)
                        else:
                            task = asyncio.create_task(mgr.try_acquire(name, ttl=30))
                            while len(steps_in_flight(backend)) == 0:
                                await asyncio.sleep(0.01)
                            await asyncio.sleep(0.2)  # the statement is on the wire (the server is frozen)
                            task.cancel()
                            if how == "double cancel":
                                await asyncio.sleep(0.2)
                                task.cancel()
                            with contextlib.suppress(asyncio.CancelledError):
                                await asyncio.wait_for(asyncio.shield(task), timeout + 10)
                            assert task.cancelled(), f"{how}: {task!r}"
                        elapsed = time.monotonic() - started
                        assert elapsed < timeout + 2.0, f"{how} took {elapsed:.2f}s (timeout {timeout:g} s)"
                        pool_is_consistent(backend)
                        assert not mgr._background._tasks
                finally:
                    signal_tree(server.process, signal.SIGCONT)
                async with asyncio.timeout(10):
                    await backend.ping()

        run(main)


# -- 3. a restart while waiters wait ---------------------------------------------------------------------------
def test_waiters_get_the_lock_within_wait_across_a_postgres_restart(name: str) -> None:
    """Waiters that were waiting when the server went down end within their ``wait``: granted, or
    BackendUnavailable if an attempt of theirs met the server down (the documented contract,
    tests/reliability/test_rel_server_faults.py); waiters that start once the server is back, while the
    LISTEN connection is still reconnecting, are each granted after the release, within ``wait``."""
    wait = 60.0
    count = 4
    with postgres_launcher.postgres_server() as server:
        def restart() -> None:
            stop_process(server.process, signal.SIGINT)  # fast shutdown: the LISTEN connection is lost
            server.process = start_process(server.process, user=postgres_launcher.SYSTEM_USER)
            server.process.wait_ready(lambda: postgres_launcher._ready(server.port), 120, "postgres restart")

        async def main() -> None:
            async with connect(server.url, timeout=3.0) as holder_mgr, connect(server.url, timeout=3.0) as mgr:
                backend = native(mgr)
                listener = backend._listener
                assert listener is not None
                lease = await holder_mgr.acquire(name, ttl=120)
                granted: list[int] = []
                started = time.monotonic()

                async def waiter() -> float:
                    async with mgr.acquire(name, ttl=30, wait=wait) as got:
                        granted.append(got.token)
                    return time.monotonic()

                before = [asyncio.create_task(waiter()) for _ in range(count)]
                deadline = time.monotonic() + 30
                while not (mgr.waiting == count and listener.listening):
                    assert time.monotonic() < deadline, "the waiters did not start listening"
                    await asyncio.sleep(0.01)
                await asyncio.to_thread(restart)  # off the loop: the backend's connections keep being served
                after = [asyncio.create_task(waiter()) for _ in range(count)]
                deadline = time.monotonic() + 30
                while mgr.waiting < count:
                    assert time.monotonic() < deadline, "the waiters after the restart did not wait"
                    await asyncio.sleep(0.01)
                released = time.monotonic()
                assert await lease.release()
                await asyncio.wait(before + after, timeout=wait + 10)
                for task in before:
                    assert task.done(), "a waiter waited past its wait across the restart"
                    if task.exception() is not None:
                        assert isinstance(task.exception(), BackendUnavailable), task.exception()
                    else:
                        assert task.result() - started < wait + 5
                for task in after:
                    assert task.done() and task.exception() is None, task
                    assert task.result() - released < wait + 5, "a waiter waited past its wait"
                assert granted == sorted(granted), "fencing tokens went down"
                deadline = time.monotonic() + 30
                while not listener.listening:
                    assert time.monotonic() < deadline, "LISTEN did not come back after the restart"
                    await asyncio.sleep(0.05)

        original = server.process
        try:
            run(main)
        finally:
            if server.process is not original:
                server.process.stop()


# -- 4. a server that never answers ----------------------------------------------------------------------------
@contextlib.contextmanager
def black_hole() -> Iterator[int]:
    """A loopback port that accepts TCP connections (the kernel's backlog) and never sends a byte."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as sock:
        yield sock.getsockname()[1]


@pytest.mark.parametrize("scheme", ["postgresql", "mariadb"])
@pytest.mark.parametrize("create_schema", ["true", "false"])
def test_a_server_that_never_answers_is_unavailable_within_timeout(scheme: str, create_schema: str,
                                                                    name: str) -> None:
    timeout = 1.0
    margin = timeout * 2 + 1.5

    async def timed(what: str, call: Callable[[], Awaitable[Any]], fails: bool = True) -> None:
        started = time.monotonic()
        if fails:
            with pytest.raises(BackendUnavailable):
                await call()
        else:
            await call()
        elapsed = time.monotonic() - started
        assert elapsed < margin, f"{what} took {elapsed:.2f}s with a {timeout}s timeout"

    async def watching(mgr: Any) -> None:
        async with native(mgr).watch(name, lambda: None):  # the LISTEN task connects to the black hole too
            await asyncio.sleep(0)
            await native(mgr).inspect(name)

    calls: dict[str, Callable[[Any], Awaitable[Any]]] = {
        "try_acquire": lambda mgr: native(mgr).try_acquire(name, "h", 30),
        "fair try_acquire": lambda mgr: native(mgr).try_acquire(name, "h", 30, queue_ttl=5),
        "permit": lambda mgr: native(mgr).try_acquire_permit(name, 2, "h", 30),
        "release": lambda mgr: native(mgr).release(name, "h", 1),
        "ping": lambda mgr: native(mgr).ping(),
        "manager acquire": lambda mgr: mgr.acquire(name, ttl=5, wait=0.5),
        "inspect while watching": watching,
    }

    with black_hole() as port:
        async def each(what: str, call: Callable[[Any], Awaitable[Any]]) -> None:
            mgr = connect(f"{scheme}://u@127.0.0.1:{port}/db", timeout=timeout, create_schema=create_schema)
            try:
                await timed(what, lambda: call(mgr))
                # a manager that has given up on a call gives up on the next one just as fast
                await timed(f"try_acquire after {what}", lambda: native(mgr).try_acquire(name, "h", 30))
            finally:
                await timed(f"aclose after {what}", mgr.aclose, fails=False)

        async def main() -> None:
            # each call on its own manager, all at once: each must end within the timeout on its own
            await asyncio.gather(*(each(what, call) for what, call in calls.items()))

        run(main)


@pytest.mark.parametrize("scheme", ["postgresql", "mariadb"])
def test_a_call_cancelled_while_the_server_never_answers_ends_at_once(scheme: str, name: str) -> None:
    """A caller that gives up (a task cancelled, an ``asyncio.timeout`` of its own) is not held for the
    driver's cancel protocol (psycopg asks the server to cancel the query and waits for it)."""
    timeout = 30.0
    starter = postgres_launcher.postgres_server if scheme == "postgresql" else mariadb_server
    with starter() as server:
        async def main() -> None:
            options = {"listen": "false"} if scheme == "postgresql" else {}
            async with connect(server.url, timeout=timeout, **options) as mgr:
                backend = native(mgr)
                assert (await backend.try_acquire(name, "h", 30)).token is not None  # connected, tables exist
                signal_tree(server.process, signal.SIGSTOP)
                try:
                    calls: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
                        ("fair try_acquire", lambda: backend.try_acquire(name, "h3", 30, queue_ttl=5)),
                        ("permit", lambda: backend.try_acquire_permit(name, 2, "h", 30)),
                    ]
                    if not backend.settles_cancelled_attempts:  # PostgreSQL's settles within the timeout
                        calls.append(("try_acquire", lambda: backend.try_acquire(name, "h2", 30)))
                    for what, call in calls:
                        task = asyncio.create_task(call())
                        while len(steps_in_flight(backend)) == 0:
                            await asyncio.sleep(0.01)
                        await asyncio.sleep(0.2)  # the statement is on the wire (the server is frozen)
                        cancelled = time.monotonic()
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await asyncio.wait_for(asyncio.shield(task), timeout)
                        elapsed = time.monotonic() - cancelled
                        assert task.cancelled(), f"{what}: {task!r}"
                        assert elapsed < 2.0, f"{what} took {elapsed:.2f}s to end after its cancellation"
                        pool_is_consistent(backend)
                finally:
                    signal_tree(server.process, signal.SIGCONT)
                async with asyncio.timeout(10):
                    await backend.ping()

        run(main)


def steps_in_flight(backend: AsyncSQLBackend) -> list[Any]:
    """The pool's connections that are checked out (in use by a call)."""
    pool = backend.connections
    return [None] * (pool._open - len(pool._idle))


def test_aclose_during_a_call_leaves_no_pooled_connection(server: Any, name: str) -> None:
    """A call that is in flight when the backend closes still completes, and its connection is closed
    after it instead of going back to a pool nobody will close."""
    async def main() -> None:
        mgr = connect(server.url, timeout=10.0)
        backend = native(mgr)
        await backend.ping()  # the tables exist; one idle connection
        task = asyncio.create_task(backend.try_acquire_permit(name, 2, "p", 30))
        while not steps_in_flight(backend):
            await asyncio.sleep(0)
        await mgr.aclose()
        assert (await task).token is not None
        pool = backend.connections
        assert pool._idle == [] and pool._open == 0, f"{len(pool._idle)} idle, {pool._open} open after aclose"

    run(main)


@pytest.mark.parametrize("scheme", ["postgresql", "mariadb"])
@pytest.mark.parametrize("create_schema", ["true", "false"])
def test_calls_queued_for_a_connection_to_a_server_that_never_answers_end_within_timeout(
        scheme: str, create_schema: str, name: str) -> None:
    """More calls than connections: those waiting for a pooled connection keep the same one deadline;
    so do those queued behind the first use's schema step (creating the tables, or with create_schema
    off on PostgreSQL checking their columns): they share its failure rather than each waiting again."""
    timeout = 1.0
    with black_hole() as port:
        async def main() -> None:
            mgr = connect(f"{scheme}://u@127.0.0.1:{port}/db", timeout=timeout, create_schema=create_schema,
                          pool_size=1, max_overflow=1)
            backend = native(mgr)
            started = time.monotonic()
            results = await asyncio.gather(*(backend.try_acquire(f"{name}:{i}", "h", 30) for i in range(10)),
                                           return_exceptions=True)
            elapsed = time.monotonic() - started
            assert all(isinstance(r, BackendUnavailable) for r in results), results
            assert elapsed < timeout * 2 + 1.5, f"10 calls on 2 connections took {elapsed:.2f}s"
            pool_is_consistent(backend)
            await mgr.aclose()

        run(main)


def test_the_first_call_ends_within_timeout_while_the_default_executor_is_busy(server: Any, name: str) -> None:
    """The first call's schema step runs on the loop's default executor. While the application keeps
    every thread of it busy, the call still ends within its timeout (BackendUnavailable); once a thread
    is free, the next call succeeds. (With 7 fresh managers on a server that never answered, the 7th
    waited 2 s for a thread, then 2 s for its own step: 4 s with a 1 s timeout.)"""
    import concurrent.futures
    import threading

    timeout = 1.0

    async def main() -> None:
        loop = asyncio.get_running_loop()
        executor = concurrent.futures.ThreadPoolExecutor(1)
        loop.set_default_executor(executor)
        busy, running = threading.Event(), threading.Event()

        def occupy() -> None:
            running.set()
            busy.wait(60)

        occupied = loop.run_in_executor(None, occupy)
        assert running.wait(30)
        mgr = connect(server.url, timeout=timeout)
        try:
            started = time.monotonic()
            with pytest.raises(BackendUnavailable, match="within the timeout"):
                await mgr.try_acquire(name, ttl=30)
            elapsed = time.monotonic() - started
            assert elapsed < timeout + 1.5, f"the first call took {elapsed:.2f}s with a {timeout}s timeout"
            busy.set()
            await occupied
            lease = await mgr.try_acquire(name, ttl=30)
            assert lease is not None and await lease.release()
        finally:
            busy.set()
            await mgr.aclose()
            executor.shutdown(wait=True)

    run(main)


@pytest.mark.parametrize("scheme", ["postgresql", "mariadb"])
def test_threads_queued_behind_the_schema_step_of_a_server_that_never_answers_end_within_timeout(
        scheme: str, name: str) -> None:
    """The blocking API: 8 threads' first calls queue behind one schema step (creating the tables) that
    the server never answers; all fail within the one timeout, not one timeout after another."""
    import threading

    timeout = 1.0
    with black_hole() as port, lockapi.connect(f"{scheme}://u@127.0.0.1:{port}/db", timeout=timeout) as mgr:
        errors: list[BaseException] = []
        start = threading.Barrier(8)

        def call(i: int) -> None:
            start.wait(30)
            try:
                mgr.try_acquire(f"{name}:{i}")
            except BaseException as exc:  # checked below
                errors.append(exc)

        threads = [threading.Thread(target=call, args=(i,), daemon=True) for i in range(8)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        elapsed = time.monotonic() - started
        assert len(errors) == 8 and all(isinstance(e, BackendUnavailable) for e in errors), errors
        assert elapsed < timeout * 2 + 1.5, f"8 threads' first calls took {elapsed:.2f}s"


def test_aclose_on_a_frozen_postgres_with_a_listening_waiter_ends_within_timeout(name: str) -> None:
    timeout = 2.0
    with postgres_launcher.postgres_server() as server:
        async def main() -> None:
            mgr = connect(server.url, timeout=timeout)
            backend = native(mgr)
            listener = backend._listener
            assert listener is not None
            holder = await mgr.acquire(name, ttl=60)
            async with backend.watch(name, lambda: None):
                deadline = time.monotonic() + 30
                while not listener.listening:
                    assert time.monotonic() < deadline, "LISTEN never took effect"
                    await asyncio.sleep(0.01)
                await asyncio.to_thread(signal_tree, server.process, signal.SIGSTOP)
                try:
                    started = time.monotonic()
                    with pytest.raises(BackendUnavailable):
                        await holder.release()
                    await mgr.aclose()
                    elapsed = time.monotonic() - started
                    assert elapsed < timeout * 2 + 1.5, f"release and aclose took {elapsed:.2f}s"
                finally:
                    signal_tree(server.process, signal.SIGCONT)

        run(main)
