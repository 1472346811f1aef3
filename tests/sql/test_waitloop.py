"""MariaDB push wake-ups from the server-side wait (lockapi_sql.waitloop), on a real server.

The loops under test poll every 60 s and end a server-side wait after 30 s at the latest, so a wake-up
well within those bounds can only come from the wait noticing the change (or from the wake-up owed to a
newly watched name, once its snapshot is in place). Every wait for a wake-up is event-driven.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pymysql
import pytest
from lockapi_sql import SQLBackend
from lockapi_sql.aio_backend import AsyncMariaDBBackend
from lockapi_sql.schema import LOCK, SEMAPHORE, key_of
from lockapi_sql.statements import WaitStatements, WatchedKey
from lockapi_sql.waitloop import WaitLoop

from lockapi.errors import ConfigError
from lockapi.spi import BackendConfig, Capability, Options
from tests.servers.common import wait_until
from tests.sql.conftest import Factory
from tests.sql.test_waiting import release_in_child

PROMPT = 5.0
"""A wake-up the wait owes comes well within this (it takes milliseconds; the machine is shared)."""

Loop = Callable[..., WaitLoop]


@pytest.fixture
def make_loop() -> Iterator[Loop]:
    """A WaitLoop on ``backend``'s tables that polls every 60 s and waits 30 s at most (closed at teardown)."""
    made: list[WaitLoop] = []

    def make(backend: SQLBackend, statements: WaitStatements | None = None,
             connect: Callable[[float], Any] | None = None, **kw: Any) -> WaitLoop:
        backend.ensure_schema()
        dialect = backend.dialect
        kw = {"poll_interval": 60.0, "longest": 30.0, **kw}
        loop = WaitLoop(connect or (lambda read_timeout: dialect.connect(10.0, read_timeout)), dialect.fileno,
                        statements or WaitStatements(dialect, backend.tables), timeout=10.0, **kw)
        made.append(loop)
        return loop

    yield make
    for loop in made:
        loop.close()


def held(backend: SQLBackend, name: str, holder: str = "h", ttl: float = 60) -> int:
    token = backend.try_acquire(name, holder, ttl).token
    assert token is not None
    return token


def sessions(backend: SQLBackend) -> dict[int, str]:
    """The server's sessions but this query's: id -> command (``Query`` while one runs)."""
    with backend.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT id, command FROM information_schema.processlist "
                                    "WHERE id <> CONNECTION_ID()").all()
    return {int(i): str(command) for i, command in rows}


def waiting(backend: SQLBackend, loop: WaitLoop) -> bool:
    """``loop``'s connection runs a statement (its wait: the server shows the part running, DO SLEEP)."""
    return loop.session_id is not None and sessions(backend).get(loop.session_id) == "Query"


def settled(loop: WaitLoop, kind: int, name: str) -> tuple[Any, threading.Event]:
    """Watch ``name`` on ``loop`` and wait for the wake-up owed once its snapshot is in place; returns the
    open watch (exit it to stop watching) and its event, cleared."""
    woken = threading.Event()
    watch = loop.watch(kind, key_of(name), woken.set)
    watch.__enter__()
    assert woken.wait(30), "no wake-up once the new name's snapshot was in place"
    woken.clear()
    return watch, woken


# -- configuration ------------------------------------------------------------------------------------------
def test_push_capability_on_mariadb_unless_turned_off(maria_url: str, make_backend: Factory) -> None:
    assert Capability.PUSH_WAKEUP in make_backend(maria_url).capabilities
    assert make_backend(maria_url).wait_loop is not None
    off = make_backend(maria_url, watch="false")
    assert Capability.PUSH_WAKEUP not in off.capabilities and off.wait_loop is None
    mysql_url = maria_url.replace("mariadb+pymysql://", "mysql+pymysql://")
    assert Capability.PUSH_WAKEUP not in make_backend(mysql_url).capabilities  # MySQL: no anonymous blocks
    assert Capability.PUSH_WAKEUP in make_backend(mysql_url, watch="true").capabilities  # a MariaDB behind it


@pytest.mark.parametrize("bad", ["0", "-1", "soon"])
def test_a_bad_watch_interval_is_refused_before_any_io(bad: str) -> None:
    config = BackendConfig(url="mariadb://u@127.0.0.1:1/db", scheme="mariadb",
                           options=Options({"watch_interval": bad}), timeout=1.0)
    with pytest.raises(ConfigError, match="watch_interval"):
        SQLBackend(config)


# -- wake-ups -----------------------------------------------------------------------------------------------
def test_a_release_by_another_connection_wakes_promptly(maria_url: str, make_backend: Factory,
                                                        make_loop: Loop, name: str) -> None:
    backend = make_backend(maria_url)
    loop = make_loop(backend)
    token = held(backend, name)
    watch, woken = settled(loop, LOCK, name)
    try:
        assert not woken.wait(0.5), "woken while the lease was held and unchanged"
        started = time.monotonic()
        assert backend.release(name, "h", token)
        assert woken.wait(PROMPT), "no wake-up after a release"
        assert time.monotonic() - started < PROMPT
    finally:
        watch.__exit__(None, None, None)


def test_a_release_in_another_process_wakes_the_backends_waiters(maria_url: str, make_backend: Factory,
                                                                 prefix: str, name: str) -> None:
    backend = make_backend(maria_url, table_prefix=prefix)
    assert backend.wait_loop is not None
    names = {k: f"{name}:{k}" for k in "abc"}
    tokens = {k: held(backend, n, f"h{k}") for k, n in names.items()}
    woken = {k: threading.Event() for k in "ac"}
    with backend.watch(names["a"], woken["a"].set), backend.watch(names["c"], woken["c"].set):
        assert woken["a"].wait(30) and woken["c"].wait(30)  # once the snapshot is in place
        loop = backend.wait_loop
        wait_until(lambda: waiting(backend, loop), 30, "the server-side wait to run")
        for event in woken.values():
            event.clear()
        release_in_child(f"{maria_url}?table_prefix={prefix}", (names["b"], "hb", tokens["b"]),
                         (names["a"], "ha", tokens["a"]))
        assert woken["a"].wait(30), "no wake-up for a release in another process"
        assert not woken["c"].is_set(), "a name nobody released was woken"
    assert backend.inspect(names["a"]) is None


def test_a_lease_expiring_by_the_servers_clock_wakes(maria_url: str, make_backend: Factory, make_loop: Loop,
                                                    name: str) -> None:
    backend = make_backend(maria_url)
    loop = make_loop(backend)
    held(backend, name, ttl=2.0)
    watch, woken = settled(loop, LOCK, name)
    try:
        assert woken.wait(2.0 + PROMPT), "no wake-up when the lease expired"
        assert backend.inspect(name) is None, "woken before the lease had expired"
    finally:
        watch.__exit__(None, None, None)


def test_a_semaphore_release_wakes_its_watchers_not_the_locks(maria_url: str, make_backend: Factory,
                                                              make_loop: Loop, name: str) -> None:
    backend = make_backend(maria_url)
    loop = make_loop(backend)
    lock_token = held(backend, name)
    permit = backend.try_acquire_permit(name, 1, "s", 60).token
    assert permit is not None
    lock_watch, lock_woken = settled(loop, LOCK, name)
    slot_watch, slot_woken = settled(loop, SEMAPHORE, name)
    try:
        assert backend.release_permit(name, "s", permit)
        assert slot_woken.wait(PROMPT), "no wake-up after a permit was released"
        assert not lock_woken.is_set(), "the lock's watchers were woken by a permit"
        assert backend.release(name, "h", lock_token)
        assert lock_woken.wait(PROMPT), "no wake-up after the lock was released"
    finally:
        slot_watch.__exit__(None, None, None)
        lock_watch.__exit__(None, None, None)


def test_a_lease_taken_and_freed_again_between_two_checks_still_wakes(maria_url: str, make_backend: Factory,
                                                                      name: str) -> None:
    """The snapshot saw the name free (token 1); another holder took it and released it (token 2)
    before the wait looked: the row is free again, under another token, so it wakes."""
    from lockapi_sql.statements import fired

    digest = key_of(name)
    snapshot = {(digest, LOCK, 0): (1, False)}
    assert fired(snapshot, [(digest, LOCK, 0, 1, 0)]) == set()
    assert fired(snapshot, [(digest, LOCK, 0, 2, 0)]) == {(LOCK, digest)}
    assert fired(snapshot, [(digest, LOCK, 0, 2, 1)]) == set()  # taken: nothing to wake for yet
    held_snapshot = {(digest, LOCK, 0): (1, True)}
    assert fired(held_snapshot, [(digest, LOCK, 0, 1, 1)]) == set()  # extended: the same lease
    assert fired(held_snapshot, [(digest, LOCK, 0, 2, 1)]) == {(LOCK, digest)}  # freed and taken again
    backend = make_backend(maria_url)
    backend.ensure_schema()
    # the same rule server-side: the wait ends at once on a row that already differs from the snapshot
    first = held(backend, name, "a")
    assert backend.release(name, "a", first)
    second = held(backend, name, "b")
    assert backend.release(name, "b", second)
    sql = WaitStatements(backend.dialect, backend.tables)
    conn = backend.dialect.connect(10.0, 40.0)
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT GET_LOCK('lockapi_wait_test_guard', 0)")
        started = time.monotonic()
        cursor2 = backend.dialect.connect(10.0, 40.0)
        try:
            statement = sql.wait([(LOCK, digest)], {(digest, LOCK, 0): (first, False)}, "lockapi_wait_test_guard",
                                 0.001, 30.0)
            cur = cursor2.cursor()
            cur.execute(statement)
            rows = cur.fetchall()
            while cur.nextset():
                pass
        finally:
            cursor2.close()
        assert time.monotonic() - started < PROMPT, "the wait did not see the row freed under another token"
        assert [(h, int(k), int(s), int(f), int(live)) for h, k, s, f, live in rows] == [(digest, LOCK, 0, second, 0)]
    finally:
        conn.close()


# -- races and the watched set ------------------------------------------------------------------------------
class GatedStatements(WaitStatements):
    """Holds the thread just before it reads the rows of a snapshot that includes ``gated``."""

    def __init__(self, backend: SQLBackend, gated: WatchedKey) -> None:
        super().__init__(backend.dialect, backend.tables)
        self.gated = gated
        self.reached = threading.Event()
        self.gate = threading.Event()

    def rows(self, keys: Iterable[WatchedKey]) -> str:
        keys = list(keys)
        if self.gated in keys:
            self.reached.set()
            assert self.gate.wait(60)
        return super().rows(keys)


def test_a_release_between_the_waiters_check_and_the_snapshot_is_not_missed(
        maria_url: str, make_backend: Factory, make_loop: Loop, name: str) -> None:
    backend = make_backend(maria_url)
    other = name + ":other"
    statements = GatedStatements(backend, (LOCK, key_of(name)))
    loop = make_loop(backend, statements)
    held(backend, other)
    other_watch, _ = settled(loop, LOCK, other)  # the thread is connected and waiting
    token = held(backend, name)
    woken = threading.Event()
    try:
        with loop.watch(LOCK, key_of(name), woken.set):
            # a waiter: subscribed (above), then its check is denied ...
            assert backend.try_acquire(name, "waiter", 60).token is None
            assert statements.reached.wait(30), "the new name did not end the running wait"
            # ... and the lease is released before the thread's snapshot of the name
            assert backend.release(name, "h", token)
            statements.gate.set()
            assert woken.wait(PROMPT), "the release before the snapshot was missed"
        assert backend.try_acquire(name, "waiter", 60).token is not None
    finally:
        statements.gate.set()
        other_watch.__exit__(None, None, None)


def test_a_name_added_while_a_wait_runs_is_watched_at_once(maria_url: str, make_backend: Factory,
                                                           make_loop: Loop, name: str) -> None:
    """The running wait (30 s at most here) is ended through the guard lock, not waited out."""
    backend = make_backend(maria_url)
    loop = make_loop(backend)
    first, second = name + ":1", name + ":2"
    held(backend, first)
    token = held(backend, second)
    first_watch, first_woken = settled(loop, LOCK, first)
    try:
        wait_until(lambda: waiting(backend, loop), 30, "the wait to run")
        started = time.monotonic()
        second_watch, second_woken = settled(loop, LOCK, second)
        try:
            assert time.monotonic() - started < PROMPT, "the new name waited for the running wait to end"
            assert backend.release(second, "h", token)
            assert second_woken.wait(PROMPT), "no wake-up for the name added while a wait ran"
            assert not first_woken.is_set()
        finally:
            second_watch.__exit__(None, None, None)
    finally:
        first_watch.__exit__(None, None, None)


def test_one_wait_per_backend_whatever_the_number_of_watches(maria_url: str, make_backend: Factory,
                                                             name: str) -> None:
    backend = make_backend(maria_url)
    loop = backend.wait_loop
    assert loop is not None
    names = [f"{name}:{i}" for i in range(20)]
    for n in names:
        held(backend, n)  # (the pool's connections are open before the sessions are counted)
    events = [threading.Event() for _ in names]
    watches = [backend.watch(n, e.set) for n, e in zip(names, events, strict=True)]
    watches[0].__enter__()
    try:
        assert events[0].wait(30)
        wait_until(lambda: waiting(backend, loop), 30, "the wait to run")
        before, threads = set(sessions(backend)), threading.active_count()
        for w in watches[1:]:
            w.__enter__()
        for e in events:
            assert e.wait(30)
        assert set(sessions(backend)) == before, "more watches opened more server sessions"
        assert threading.active_count() == threads, "more watches started more threads"
    finally:
        for w in watches[::-1]:
            w.__exit__(None, None, None)


# -- failures and lifecycle ---------------------------------------------------------------------------------
def test_falls_back_to_polling_and_reconnects_when_its_connection_dies(maria_url: str, make_backend: Factory,
                                                                       make_loop: Loop, name: str) -> None:
    backend = make_backend(maria_url)
    loop = make_loop(backend, poll_interval=1.0)
    token = held(backend, name)
    watch, woken = settled(loop, LOCK, name)
    try:
        wait_until(lambda: waiting(backend, loop), 30, "the wait to run")
        ident = loop.session_id
        with backend.engine.connect() as conn:
            conn.exec_driver_sql(f"KILL CONNECTION {ident}")
        # the thread notices, wakes everyone (changes meanwhile are not seen), polls and reconnects
        assert woken.wait(30), "watchers were not woken when the wait's connection died"
        wait_until(lambda: loop.pushing and loop.session_id != ident and waiting(backend, loop), 30,
                   "the wait to run again")
        woken.clear()
        assert backend.release(name, "h", token)
        assert woken.wait(PROMPT + 1.0), "no wake-up after reconnecting"
    finally:
        watch.__exit__(None, None, None)


def test_polls_while_the_server_is_unreachable(make_loop: Loop, maria_url: str, make_backend: Factory,
                                               name: str) -> None:
    backend = make_backend(maria_url)
    refused = 0

    def unreachable(read_timeout: float) -> Any:
        nonlocal refused
        refused += 1
        raise pymysql.err.OperationalError(2003, "Can't connect (test)")

    loop = make_loop(backend, connect=unreachable, poll_interval=0.2)
    woken = threading.Event()
    count = 0

    def wake() -> None:
        nonlocal count
        count += 1
        if count >= 3:
            woken.set()

    with loop.watch(LOCK, key_of(name), wake):
        assert woken.wait(30), "no polling wake-ups while the server is unreachable"
    assert refused >= 1 and not loop.pushing


def test_close_returns_at_once_and_ends_the_wait(maria_url: str, make_backend: Factory, make_loop: Loop,
                                                 name: str) -> None:
    backend = make_backend(maria_url)
    loop = make_loop(backend)
    held(backend, name)
    watch, _ = settled(loop, LOCK, name)
    try:
        wait_until(lambda: waiting(backend, loop), 30, "the wait to run")
        ident = loop.session_id
        threads = [loop._thread, loop._kicker]
        started = time.monotonic()
        loop.close()
        elapsed = time.monotonic() - started
        assert elapsed < PROMPT, f"close() took {elapsed:.1f} s (it waited for the server-side wait)"
        assert not any(t is not None and t.is_alive() for t in threads), "close() returned while a thread runs"
    finally:
        watch.__exit__(None, None, None)
    wait_until(lambda: ident not in sessions(backend), 30, "the wait's session to end")
    loop.close()  # idempotent


def test_mysql_without_anonymous_blocks_falls_back_to_fast_polling(maria_url: str, make_backend: Factory,
                                                                   make_loop: Loop, name: str) -> None:
    """A server that cannot parse the wait (MySQL) gets every watcher woken every 50 ms instead."""
    backend = make_backend(maria_url)

    class Unparsable(WaitStatements):
        def wait(self, *args: Any) -> str:
            return "BEGIN NOT ATOMIC_NOT_SQL END"

    loop = make_loop(backend, Unparsable(backend.dialect, backend.tables))
    held(backend, name)
    watch, woken = settled(loop, LOCK, name)
    try:
        wait_until(lambda: loop.unsupported, 30, "the loop to give up on the wait")
        woken.clear()
        assert woken.wait(PROMPT), "no polling wake-up"
    finally:
        watch.__exit__(None, None, None)


# -- asyncio ------------------------------------------------------------------------------------------------
def test_asyncio_waiters_are_woken_from_the_wait_thread(maria_url: str, make_backend: Factory, name: str) -> None:
    sync = make_backend(maria_url)
    token = held(sync, name)
    base, _, _ = maria_url.partition("?")
    backend = AsyncMariaDBBackend(BackendConfig(url=base, scheme="mariadb", options=Options({}), timeout=10.0))
    assert Capability.PUSH_WAKEUP in backend.capabilities

    async def main() -> None:
        woken = asyncio.Event()
        loop = asyncio.get_running_loop()

        def wake() -> None:
            loop.call_soon_threadsafe(woken.set)

        try:
            async with backend.watch(name, wake):
                await asyncio.wait_for(woken.wait(), 30)  # once the snapshot is in place
                woken.clear()
                assert sync.release(name, "h", token)
                await asyncio.wait_for(woken.wait(), PROMPT)
        finally:
            await backend.aclose()

    asyncio.run(main())


def test_a_forked_child_runs_its_own_wait(maria_url: str, make_backend: Factory, make_loop: Loop,
                                          name: str) -> None:
    """The parent's threads and connections are not the child's: its first watch starts its own (with its
    own guard lock), and a release wakes the child's watcher."""
    import os

    from tests.sql.conftest import backend_for

    backend = make_backend(maria_url)
    loop = make_loop(backend)
    held(backend, name + ":parent")
    parent_watch, _ = settled(loop, LOCK, name + ":parent")
    try:
        pid = os.fork()
        if pid == 0:  # the child: report by exit status only
            code = 1
            try:
                other = backend_for(maria_url)
                token = held(other, name)
                woken = threading.Event()
                with loop.watch(LOCK, key_of(name), woken.set):
                    if woken.wait(30):  # once the child's own snapshot is in place
                        woken.clear()
                        other.release(name, "h", token)
                        code = 0 if woken.wait(PROMPT) else 2
                loop.close()
                other.close()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the child's watcher was not woken by its own wait"
        assert loop.pushing, "the child stopped the parent's wait"
    finally:
        parent_watch.__exit__(None, None, None)
