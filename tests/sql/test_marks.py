"""PostgreSQL releases announce themselves only while a waiter has marked the lock's row (``waited_us``):
the mark against a concurrent release in both orders (EvalPlanQual, real row locks), a release between a
waiter's mark and its re-check, a mark that lapses while its waiter still waits, fair waiters, the
``notify=always`` option, and tables of the previous version upgraded in place (every dialect)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from lockapi_sql import SQLBackend
from lockapi_sql.aio_backend import AsyncSQLBackend
from lockapi_sql.schema import key_of
from lockapi_sql.statements import payload

import lockapi
import lockapi.aio
from lockapi.errors import ConfigError
from lockapi.testing.pauses import pause_at
from lockapi.waiting import PUSH_MAX
from tests.servers.common import wait_until
from tests.sql.conftest import Factory

MARGIN = 5.0
"""Generous: the machine is shared."""


@contextlib.contextmanager
def heard(backend: SQLBackend) -> Iterator[Callable[[], list[str]]]:
    """A LISTEN connection of the test's own on ``backend``'s channel; the callable returns the payloads
    heard so far: it sends a control notification from another session and reads until it arrives
    (notifications arrive in commit order, so everything committed before is in)."""
    channel = backend.tables.notify_channel
    with psycopg.connect(**backend.dialect.connect_params(10.0), autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel)))

        def drain() -> list[str]:
            token = f"control:{uuid.uuid4().hex}"
            with backend.engine.connect() as other:
                other.execute(sa.select(sa.func.pg_notify(channel, token)))
                other.commit()
            got: list[str] = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                for note in conn.notifies(timeout=1.0):
                    if note.payload == token:
                        return got
                    got.append(note.payload)
            raise AssertionError("the control notification never arrived")

        yield drain


def lock_payload(name: str) -> str:
    return payload(0, key_of(name))


def raw(backend: SQLBackend) -> psycopg.Connection[Any]:
    """A plain psycopg connection (not autocommit: each test transaction is explicit)."""
    return psycopg.connect(**backend.dialect.connect_params(10.0))


def blocked_on_lock(backend: SQLBackend, fragment: str) -> bool:
    """Some session waits for a row lock while running a statement containing ``fragment``."""
    with backend.engine.connect() as conn:
        return bool(conn.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE :q"),
            {"q": f"%{fragment}%"}).scalar_one())


def mark_of(backend: SQLBackend, name: str) -> int:
    """Microseconds the row's mark has left (<= 0: lapsed or never marked)."""
    with backend.engine.connect() as conn:
        return int(conn.execute(sa.text(
            f"SELECT waited_us - {backend.dialect.now} FROM {backend.tables.leases.name} "
            f"WHERE name_hash = :h AND kind = 0 AND slot = 0"), {"h": key_of(name)}).scalar_one())


@pytest.mark.parametrize("notify", ["waited", "always"])
def test_a_release_nobody_waits_for_notifies_only_with_always(pg_url: str, make_backend: Factory, prefix: str,
                                                              name: str, notify: str) -> None:
    backend = make_backend(pg_url, table_prefix=prefix, notify=notify)
    token = backend.try_acquire(name, "h", 60).token
    permit = backend.try_acquire_permit(name, 1, "h", 60).token
    assert token is not None and permit is not None
    with heard(backend) as drain:
        drain()
        assert backend.release(name, "h", token)
        assert backend.release_permit(name, "h", permit)
        got = drain()
    assert (lock_payload(name) in got) == (notify == "always"), got
    assert payload(1, key_of(name)) in got, "a permit release always notifies"


def test_notify_option_is_checked(pg_url: str, make_backend: Factory) -> None:
    with pytest.raises(lockapi.ConfigError, match="notify"):
        make_backend(pg_url, notify="sometimes")


def test_a_watch_marks_the_row_and_the_release_then_notifies(pg_url: str, make_backend: Factory, prefix: str,
                                                            name: str) -> None:
    backend, other = make_backend(pg_url, table_prefix=prefix), make_backend(pg_url, table_prefix=prefix)
    token = other.try_acquire(name, "h", 60).token
    assert token is not None
    woken = threading.Event()
    with heard(backend) as drain, backend.watch(name, woken.set):
        assert mark_of(backend, name) > 0
        assert backend._call(backend.plans.mark, name) is False, "the lock is held, yet the mark says free"
        drain()
        assert other.release(name, "h", token)
        assert lock_payload(name) in drain()
        assert woken.wait(30)


def test_a_watch_on_a_name_never_claimed_creates_its_row_marked(pg_url: str, make_backend: Factory,
                                                               prefix: str, name: str) -> None:
    backend, other = make_backend(pg_url, table_prefix=prefix), make_backend(pg_url, table_prefix=prefix)
    backend.ensure_schema()
    woken = threading.Event()
    with heard(backend) as drain, backend.watch(name, woken.set):
        assert woken.is_set(), "a name without a row is free: the watch wakes at once"
        token = other.try_acquire(name, "h", 60).token
        assert token is not None and other.release(name, "h", token)
        assert lock_payload(name) in drain(), "the first lease of a watched name was released unannounced"


def test_a_release_committed_while_the_mark_waits_for_the_row_wakes_the_watcher(
        pg_url: str, make_backend: Factory, prefix: str, name: str) -> None:
    """The release holds the row when the mark arrives (and nobody had marked it, so it announces
    nothing): the mark waits, then writes the released version and reports the lock free."""
    backend, other = make_backend(pg_url, table_prefix=prefix), make_backend(pg_url, table_prefix=prefix)
    token = other.try_acquire(name, "h", 60).token
    assert token is not None
    woken, entered = threading.Event(), threading.Event()
    leave = threading.Event()

    def watcher() -> None:
        with backend.watch(name, woken.set):
            entered.set()
            leave.wait(60)

    with heard(backend) as drain, raw(backend) as release:
        drain()
        assert release.execute(other.sql.release_lock, {"h": key_of(name), "holder": "h", "token": token}
                               ).rowcount == 1  # not committed: it holds the row
        thread = threading.Thread(target=watcher, daemon=True)
        thread.start()
        try:
            wait_until(lambda: blocked_on_lock(backend, "waited_us"), 30, "the mark to wait for the row lock")
            assert not entered.is_set()
            release.commit()
            assert entered.wait(30) and woken.is_set(), "the mark did not report the released lock free"
            assert lock_payload(name) not in drain(), "an unmarked release notified"
        finally:
            leave.set()
            thread.join(30)


def test_a_release_that_waits_for_a_mark_sees_it_and_notifies(pg_url: str, make_backend: Factory,
                                                              prefix: str, name: str) -> None:
    """The mark holds the row when the release arrives, its snapshot taken before the mark commits: the
    release re-reads the marked version and notifies."""
    backend, other = make_backend(pg_url, table_prefix=prefix), make_backend(pg_url, table_prefix=prefix)
    token = other.try_acquire(name, "h", 60).token
    assert token is not None
    with heard(backend) as drain, raw(backend) as mark:
        drain()
        left = mark.execute(backend.sql.mark, {"h": key_of(name), "name": name, "horizon": 60_000_000}
                            ).fetchone()
        assert left is not None and left[0] > 0
        done: list[bool] = []
        thread = threading.Thread(target=lambda: done.append(other.release(name, "h", token)), daemon=True)
        thread.start()
        wait_until(lambda: blocked_on_lock(backend, "pg_notify"), 30, "the release to wait for the row lock")
        mark.commit()
        thread.join(30)
        assert done == [True]
        assert lock_payload(name) in drain(), "a release that waited for a mark did not notify"


def test_a_release_between_the_waiters_mark_and_its_recheck_wakes_it(pg_url: str, prefix: str,
                                                                     name: str) -> None:
    """Stopped at ``acquire:watching`` (subscribed and marked, about to re-check): the release then
    announces itself, and the waiter is granted."""
    waiter = lockapi.connect(pg_url, table_prefix=prefix)
    holder_mgr = lockapi.connect(pg_url, table_prefix=prefix)
    try:
        holder = holder_mgr.acquire(name, ttl=60)
        result: list[Any] = []
        thread = threading.Thread(target=lambda: result.append(waiter.acquire(name, ttl=60, wait=60)),
                                  daemon=True)
        assert isinstance(waiter.backend, SQLBackend)
        with heard(waiter.backend) as drain:
            with pause_at("acquire:watching", thread=thread) as pause:
                thread.start()
                pause.wait_reached(60)
                assert mark_of(waiter.backend, name) > 0, "the waiter subscribed without marking"
                drain()
                assert holder.release()
                assert lock_payload(name) in drain(), "the release after the mark did not notify"
            thread.join(30)
        assert result and result[0].token > holder.token and result[0].release()
    finally:
        waiter.close()
        holder_mgr.close()


def test_a_waiter_whose_mark_lapses_is_still_granted(pg_url: str, prefix: str, name: str) -> None:
    """A mark shorter than the waiter's pauses lapses while it waits: the release is not announced, yet
    the waiter's next re-check (at most PUSH_MAX later) takes the lock, and re-marks meanwhile."""
    waiter = lockapi.connect(pg_url, table_prefix=prefix)
    holder_mgr = lockapi.connect(pg_url, table_prefix=prefix)
    backend = waiter.backend
    assert isinstance(backend, SQLBackend)
    backend.plans.mark_horizon = 0.2
    try:
        holder = holder_mgr.acquire(name, ttl=60)
        result: list[Any] = []
        thread = threading.Thread(target=lambda: result.append(waiter.acquire(name, ttl=60, wait=60)),
                                  daemon=True)
        with pause_at("acquire:watching", thread=thread) as pause:
            thread.start()
            pause.wait_reached(60)
            assert mark_of(backend, name) > 0
        wait_until(lambda: mark_of(backend, name) <= 0, 30, "the mark to lapse")
        released = time.monotonic()
        assert holder.release()
        thread.join(PUSH_MAX + MARGIN + 30)
        assert result, "the waiter was never granted"
        assert time.monotonic() - released < PUSH_MAX + MARGIN
        assert result[0].token > holder.token and result[0].release()
    finally:
        waiter.close()
        holder_mgr.close()


def test_a_denied_attempt_of_a_watch_re_marks_when_due(pg_url: str, make_backend: Factory, prefix: str,
                                                      name: str) -> None:
    backend, other = make_backend(pg_url, table_prefix=prefix), make_backend(pg_url, table_prefix=prefix)
    backend.plans.mark_horizon = 0.2
    assert other.try_acquire(name, "h", 60).token is not None
    with backend.watch(name, lambda: None):
        wait_until(lambda: mark_of(backend, name) <= 0, 30, "the mark to lapse")
        assert backend.try_acquire(name, "w", 60).token is None
        assert mark_of(backend, name) > 0, "a due denied attempt did not re-mark"
    wait_until(lambda: mark_of(backend, name) <= 0, 30, "the mark to lapse")
    assert backend.try_acquire(name, "w", 60).token is None
    assert mark_of(backend, name) <= 0, "a denied attempt without a watch marked"


def test_a_fair_waiters_queue_entry_marks_the_row(pg_url: str, make_backend: Factory, prefix: str,
                                                 name: str) -> None:
    """Without any watch: joining the queue marks the row, so the release notifies, addressed to the head."""
    backend, other = make_backend(pg_url, table_prefix=prefix), make_backend(pg_url, table_prefix=prefix)
    token = other.try_acquire(name, "h", 60).token
    assert token is not None
    assert backend.try_acquire(name, "w1", 60, queue_ttl=60).token is None
    assert mark_of(backend, name) > 0
    with heard(backend) as drain:
        drain()
        assert other.release(name, "h", token)
        assert f"{lock_payload(name)}|w1" in drain()
    assert backend.try_acquire(name, "w1", 60, queue_ttl=60).token is not None


def test_an_asyncio_watch_marks_the_row(pg_url: str, make_backend: Factory, prefix: str, name: str) -> None:
    sync = make_backend(pg_url, table_prefix=prefix)
    token = sync.try_acquire(name, "h", 60).token
    assert token is not None

    async def main() -> None:
        mgr = lockapi.aio.connect(pg_url, table_prefix=prefix)
        backend = mgr.backend
        assert isinstance(backend, AsyncSQLBackend)
        woken = asyncio.Event()
        try:
            async with backend.watch(name, woken.set):
                assert await asyncio.to_thread(mark_of, sync, name) > 0
                with heard(sync) as drain:
                    await asyncio.to_thread(drain)
                    assert await asyncio.to_thread(sync.release, name, "h", token)
                    assert lock_payload(name) in await asyncio.to_thread(drain)
                await asyncio.wait_for(woken.wait(), 30)
        finally:
            await mgr.aclose()

    asyncio.run(main())


def test_tables_of_the_previous_version_are_upgraded_in_place(sql_url: str, make_backend: Factory,
                                                              prefix: str, name: str) -> None:
    """A leases table without ``waited_us`` (as the previous version created it, with a live lease in it)
    gets the column on first use, by several backends at once; the lease is unharmed."""
    old = make_backend(sql_url, table_prefix=prefix)
    old.ensure_schema()
    token = old.try_acquire(name, "h", 60).token
    assert token is not None
    with old.engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {old.tables.leases.name} DROP COLUMN waited_us"))
        assert old.tables.missing_columns(conn) == ["waited_us"]
    backends = [make_backend(sql_url, table_prefix=prefix) for _ in range(4)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(backends))

    def upgrade(backend: SQLBackend) -> None:
        try:
            start.wait(30)
            backend.ensure_schema()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=upgrade, args=(b,), daemon=True) for b in backends]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    with old.engine.connect() as conn:
        assert old.tables.missing_columns(conn) == []
    new = backends[0]
    info = new.inspect(name)
    assert info is not None and info.holder == "h" and info.token == token
    assert new.try_acquire(name, "w", 60).token is None
    assert new.release(name, "h", token)
    assert new.try_acquire(name, "w", 60).token is not None


def test_create_schema_false_on_a_table_of_the_previous_version_is_a_clear_error(
        pg_url: str, make_backend: Factory, prefix: str, name: str) -> None:
    """With create_schema off, a leases table without ``waited_us`` (which this version's PostgreSQL
    statements name) is reported before any lock call runs, with what to do; once the DBA adds the column
    (the statement ``lockapi sql ddl`` prints), the same backend works."""
    creator = make_backend(pg_url, table_prefix=prefix)
    creator.ensure_schema()
    with creator.engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {creator.tables.leases.name} DROP COLUMN waited_us"))
    lazy = make_backend(pg_url, table_prefix=prefix, create_schema="false")
    with pytest.raises(ConfigError, match=r"waited_us.*create_schema") as err:
        lazy.try_acquire(name, "h", 30)
    assert "lockapi sql ddl" in str(err.value)
    assert creator.inspect(name) is None, "the lock call ran although the table lacks the column"
    with creator.engine.begin() as conn:
        conn.execute(sa.text(creator.tables.add_column("waited_us")))
    lease = lazy.try_acquire(name, "h", 30)
    assert lease.token is not None and lazy.release(name, "h", lease.token)
