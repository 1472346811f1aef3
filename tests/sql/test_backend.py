"""SQL-specific behaviour through the SPI: fair queue, semaphore slots, batches, done markers,
administration, awkward names, isolation level, and an unreachable server."""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa
from lockapi_sql.plans import one

from lockapi.errors import BackendUnavailable
from tests.servers.common import free_port, wait_until
from tests.sql.conftest import Factory, seeded

AWKWARD = ["it's", 'say "hi"', "back\\slash", "\\'; DROP TABLE x; --", "ünï©ødé 🔒", "%s %(x)s :name ?",
           "tab\tnew\nline", "é" * 512]


def test_fair_queue_grants_the_head_and_drops_expired_waiters(sql_url: str, make_backend: Factory,
                                                             name: str) -> None:
    backend = make_backend(sql_url)
    held = backend.try_acquire(name, "holder", 60).token
    assert held is not None
    assert backend.try_acquire(name, "w1", 60, queue_ttl=1.0).token is None  # w1 first in the queue
    assert backend.try_acquire(name, "w2", 60, queue_ttl=60).token is None
    assert backend.release(name, "holder", held)
    assert backend.try_acquire(name, "w2", 60, queue_ttl=60).token is None, "w1 is ahead of w2"
    assert backend.try_acquire(name, "intruder", 60).token is not None, "a non-fair acquire ignores the queue"
    # w1 stops refreshing: its entry expires (by the database clock) and w2 becomes the head.
    assert backend.force_release(name)
    wait_until(lambda: backend.try_acquire(name, "w2", 60, queue_ttl=60).token is not None, 30,
               "w2 to be granted once w1's queue entry expired")


def test_cancel_wait_leaves_the_queue(sql_url: str, make_backend: Factory, name: str) -> None:
    backend = make_backend(sql_url)
    held = backend.try_acquire(name, "holder", 60).token
    assert held is not None
    assert backend.try_acquire(name, "w1", 60, queue_ttl=60).token is None
    assert backend.try_acquire(name, "w2", 60, queue_ttl=60).token is None
    backend.cancel_wait(name, "w1")
    assert backend.release(name, "holder", held)
    granted = backend.try_acquire(name, "w2", 60, queue_ttl=60)
    assert granted.token is not None and granted.token > held
    backend.cancel_wait(name, "nobody")  # not queued: nothing happens


def test_semaphore_counts_live_slots_whatever_permits_the_caller_passes(sql_url: str, make_backend: Factory,
                                                                         name: str) -> None:
    backend = make_backend(sql_url)
    tokens = [backend.try_acquire_permit(name, 3, f"p{i}", 60).token for i in range(3)]
    assert tokens == sorted(set(tokens)) and (tokens == [1, 2, 3] or seeded(backend)), tokens
    denied = backend.try_acquire_permit(name, 2, "p3", 60)
    assert denied.token is None and denied.retry_after is not None and 55 < denied.retry_after <= 60
    assert backend.release_permit(name, "p1", tokens[1])
    fourth = backend.try_acquire_permit(name, 3, "p4", 60).token
    assert fourth == 4 or (seeded(backend) and fourth is not None and fourth > tokens[2]), \
        "a denied attempt burns no token"
    assert backend.holds_permit(name, "p4", fourth) and not backend.holds_permit(name, "p1", tokens[1])
    assert backend.extend_permit(name, "p0", tokens[0], 120)
    assert not backend.extend_permit(name, "p1", tokens[1], 120)
    lock = backend.try_acquire(name, "lock", 60).token
    assert lock == 1 or seeded(backend), "locks and semaphores are separate"


def test_batch_of_many_names_and_skip_done(sql_url: str, make_backend: Factory, name: str) -> None:
    backend, other = make_backend(sql_url), make_backend(sql_url)
    names = [f"{name}:{i}" for i in range(backend.dialect.batch_chunk + 200)]  # more than one statement's worth
    assert other.try_acquire(names[7], "other", 60).token is not None
    for done in names[100:110]:
        other.mark_done(done, 60)
    granted = backend.try_acquire_many(names, "batch", 60, skip_done=True)
    assert set(granted) == set(names) - {names[7]} - set(names[100:110])
    assert seeded(backend) or set(granted.values()) == {1}
    assert all(backend.inspect(n) is None for n in names[100:110]), "done names were released again"
    assert backend.holds(names[0], "batch", granted[names[0]]) and backend.holds(names[-1], "batch", granted[names[-1]])
    assert other.try_acquire_many(names[:20], "late", 60) == {}


def test_batch_over_existing_rows_claims_only_the_free_ones(sql_url: str, make_backend: Factory, name: str) -> None:
    """Rows that exist: an ended lease is taken with the next token, a live one of another holder is left
    exactly as it was, the caller's own (a retry after a lost reply) is granted again."""
    backend = make_backend(sql_url)
    ended, held, own, new = (f"{name}:{k}" for k in ("ended", "held", "own", "new"))
    first = backend.try_acquire(ended, "old", 60).token
    assert first is not None and backend.release(ended, "old", first)
    other = backend.try_acquire(held, "other", 60).token
    before = backend.inspect(held)
    mine = backend.try_acquire_many([own], "batch", 60)[own]
    granted = backend.try_acquire_many([ended, held, own, new], "batch", 60)
    assert set(granted) == {ended, own, new}
    assert granted[ended] > first and granted[own] >= mine
    after = backend.inspect(held)
    assert after is not None and before is not None
    assert (after.holder, after.token) == ("other", other) and after.ttl_remaining <= before.ttl_remaining
    assert backend.holds(ended, "batch", granted[ended]) and not backend.holds(ended, "old", first)
    assert backend.holds(own, "batch", granted[own]) and backend.holds(new, "batch", granted[new])


def test_done_markers_list_and_expire(sql_url: str, make_backend: Factory, prefix: str) -> None:
    backend = make_backend(sql_url, table_prefix=prefix)
    for awkward in AWKWARD:
        backend.mark_done(awkward, 60)
    backend.mark_done("short", 0.5)
    assert backend.done([*AWKWARD, "short", "never"]) == {*AWKWARD, "short"}
    listed = dict(backend.iter_done())
    assert set(listed) >= set(AWKWARD) and all(0 < left <= 60 for left in listed.values())
    wait_until(lambda: backend.done(["short"]) == set(), 30, "the short marker to expire")
    assert "short" not in dict(backend.iter_done())
    backend.mark_done(AWKWARD[0], 0.2)  # marking again sets a new ttl
    wait_until(lambda: backend.done([AWKWARD[0]]) == set(), 30, "the re-marked marker to expire")


def test_iter_done_pages_through_many_markers(sql_url: str, make_backend: Factory, prefix: str) -> None:
    backend = make_backend(sql_url, table_prefix=prefix)
    names = [f"m{i}" for i in range(1100)]
    backend.try_acquire_many(names, "h", 60)  # (just to have lease rows around too)
    for n in names:
        backend.mark_done(n, 60)
    listed = [n for n, _ in backend.iter_done()]
    assert sorted(listed) == sorted(names)


@pytest.mark.parametrize("semaphore", [False, True])
def test_fence_floor_moves_tokens_up_never_down(sql_url: str, make_backend: Factory, name: str,
                                                semaphore: bool) -> None:
    backend = make_backend(sql_url)

    def take(holder: str) -> int | None:
        if semaphore:
            return backend.try_acquire_permit(name, 1, holder, 60).token
        return backend.try_acquire(name, holder, 60).token

    def free(holder: str, token: int) -> bool:
        return backend.release_permit(name, holder, token) if semaphore else backend.release(name, holder, token)

    backend.set_fence_floor(name, 1000, semaphore=semaphore)  # before the name was ever used
    first = take("a")
    assert first is not None and (first == 1001 or (seeded(backend) and first > 1000))
    assert free("a", first)
    backend.set_fence_floor(name, 10, semaphore=semaphore)  # lower: no effect
    second = take("b")
    assert second is not None and (second == 1002 or (seeded(backend) and second > first))


def test_force_release(sql_url: str, make_backend: Factory, name: str) -> None:
    backend = make_backend(sql_url)
    token = backend.try_acquire(name, "h", 60).token
    assert token is not None
    assert backend.force_release(name) is True
    assert backend.force_release(name) is False
    assert backend.release(name, "h", token) is False
    again = backend.try_acquire(name, "h2", 60).token
    assert again is not None and again > token


def test_a_name_s_first_claim_creates_its_row_and_later_claims_update_it(sql_url: str, make_backend: Factory,
                                                                          name: str) -> None:
    """A backend claims names it has seen a row for with a plain UPDATE and others with their first-claim
    statement; both paths give the same grants, also when a row it knew was deleted by hand under it
    (the UPDATE finds nothing and the name's row is made again)."""
    backend, other = make_backend(sql_url), make_backend(sql_url)
    first = backend.try_acquire(name, "a", 60).token
    assert first is not None
    assert other.try_acquire(name, "b", 60).token is None  # other's first claim meets a held row
    assert backend.release(name, "a", first) is True
    second = other.try_acquire(name, "b", 60).token  # other knows the row now (its denial read it)
    assert second is not None and second > first
    assert backend.try_acquire(name, "a", 60).token is None  # backend's UPDATE, denied
    assert other.release(name, "b", second) is True
    with backend.engine.begin() as conn:
        conn.execute(backend.tables.leases.delete().where(backend.tables.leases.c.name == name))
    again = backend.try_acquire(name, "a", 60).token  # known to backend, gone from the table
    assert again is not None
    assert other.try_acquire(name, "b", 60).token is None
    assert backend.release(name, "a", again) is True


def test_awkward_names_are_data(sql_url: str, make_backend: Factory, name: str) -> None:
    backend = make_backend(sql_url)
    for awkward in AWKWARD:
        full = f"{name}:{awkward}"
        token = backend.try_acquire(full, "h", 60).token
        assert token is not None
        info = backend.inspect(full)
        assert info is not None and info.name == full
        assert backend.try_acquire_permit(full, 1, "p", 60).token is not None
        assert backend.release(full, "h", token)
    granted = backend.try_acquire_many([f"{name}:{a}" for a in AWKWARD], "batch", 60)
    assert sorted(granted) == sorted(f"{name}:{a}" for a in AWKWARD)
    c = backend.tables.leases.c
    with backend.engine.connect() as conn:
        stored = set(conn.execute(sa.select(c.name).where(c.name.like(f"{name}:%"))).scalars())
    assert stored == {f"{name}:{a}" for a in AWKWARD}, "names are stored exactly"


def test_awkward_holders_are_data(sql_url: str, make_backend: Factory, name: str) -> None:
    """Holder ids reach the statements as data (MariaDB writes the literals of its prepared statements'
    EXECUTE itself: letters and digits as they are, anything else escaped by the driver)."""
    backend = make_backend(sql_url)
    for i, holder in enumerate(a[:100] for a in AWKWARD):  # (holder ids are at most 128 characters)
        token = backend.try_acquire(name, holder, 60).token
        assert token is not None
        info = backend.inspect(name)
        assert info is not None and info.holder == holder
        assert not backend.try_acquire(name, holder + "x", 60).granted
        again = backend.try_acquire(name, holder, 60).token  # the holder's own retry
        assert again is not None and again > token
        assert not backend.release(name, holder + "x", again) and not backend.release(name, holder, token)
        assert backend.release(name, holder, again), f"holder #{i}"


def test_mariadb_engine_reads_committed(maria_url: str, make_backend: Factory) -> None:
    backend = make_backend(maria_url)
    [level] = backend.connections.call(one, "SELECT @@SESSION.tx_isolation", {})
    assert level == "READ-COMMITTED"


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg", "mysql", "mariadb+pymysql"])
@pytest.mark.parametrize("create_schema", [True, False])  # False: the first connection is a lock call's own
def test_closed_port_is_backend_unavailable_within_timeout(make_backend: Factory, scheme: str,
                                                           create_schema: bool) -> None:
    backend = make_backend(f"{scheme}://locker:s3cret-pw@127.0.0.1:{free_port()}/db", timeout=2.0,
                           create_schema=create_schema)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as err:
        backend.try_acquire("x", "h", 30)
    assert time.monotonic() - started < 2.0 + 1.0
    assert "s3cret-pw" not in str(err.value) and "***" in str(err.value)
    with pytest.raises(BackendUnavailable):
        backend.inspect("x")


def test_stopped_server_is_backend_unavailable_within_timeout(maria_url: str, make_backend: Factory,
                                                              name: str) -> None:
    """A server that accepts but never answers (SIGSTOP): a call on a pooled connection (whose socket has
    no timeout once connected) is cut by the watchdog, and a new connection's handshake is bounded by
    PyMySQL's socket timeouts, which it keeps until it is connected."""
    import signal

    from tests.servers.mariadb import mariadb_server

    with mariadb_server() as server:
        backend = make_backend(server.url, timeout=2.0)
        assert backend.try_acquire(name, "h", 30).token == 1
        fresh = make_backend(server.url, timeout=2.0, create_schema=False)  # no connection yet
        server.process.signal(signal.SIGSTOP)
        try:
            for which in (backend, fresh):
                started = time.monotonic()
                with pytest.raises(BackendUnavailable):
                    which.try_acquire(name, "h2", 30)
                assert time.monotonic() - started < 2.0 * 2 + 1.0
        finally:
            server.process.signal(signal.SIGCONT)


def test_stopped_postgres_fails_a_prepared_claim_and_release_within_timeout(make_backend: Factory,
                                                                           name: str) -> None:
    """PostgreSQL's claim and lock release run on libpq directly (``PQexecPrepared``, which blocks in C):
    against a server that accepts but never answers (SIGSTOP) the watchdog still cuts them, they fail
    as ``BackendUnavailable`` within the timeout, and the backend works again once the server does."""
    from tests.reliability.targets import freeze, thaw
    from tests.servers.postgres import postgres_server

    with postgres_server() as server:
        backend = make_backend(server.url, timeout=1.0)
        first = backend.try_acquire(name, "h1", 30)
        assert first.token == 1 and backend.release(name, "h1", first.token)
        held = backend.try_acquire(name, "h2", 30)  # the prepared claim (the row is known now)
        assert held.token == 2
        freeze(server.process)  # the postmaster and its backends
        try:
            for what, call in (("claim", lambda: backend.try_acquire(name, "h3", 30)),
                               ("release", lambda: backend.release(name, "h2", 2))):
                started = time.monotonic()
                with pytest.raises(BackendUnavailable):
                    call()
                elapsed = time.monotonic() - started
                assert elapsed < 1.0 * 2 + 1.0, f"{what} took {elapsed:.2f}s with a 1 s timeout"
        finally:
            thaw(server.process)
        wait_until(lambda: _answers(backend, name), 30, "the backend to work again after the thaw")
        assert backend.release(name, "h2", 2)
        third = backend.try_acquire(name, "h4", 30)
        assert third.token == 3 and backend.release(name, "h4", 3)


def _answers(backend: Any, name: str) -> bool:
    try:
        return backend.inspect(name) is not None
    except BackendUnavailable:
        return False


def test_postgres_prepares_its_hot_statements_per_connection(pg_url: str, make_backend: Factory,
                                                             name: str) -> None:
    """PostgreSQL runs a claim and a lock's release as statements prepared on each connection's first
    use of them, also again when the connection lost them (``DEALLOCATE``); the statement text stays
    the lookup key (the asyncio path has its own test in tests/sql/test_asyncio.py); holders are data
    (quotes, backslashes, non-ASCII), and a server error is psycopg's exception, classified as on the
    cursor path."""
    backend = make_backend(pg_url)
    assert backend.sql.claim.startswith("UPDATE ") and "%(holder)s" in backend.sql.claim
    first = backend.try_acquire(name, "h1", 30)
    assert first.token == 1 and backend.release(name, "h1", first.token)
    first = backend.try_acquire(name, "h1", 30)  # the prepared claim (the row is known now)
    assert first.token == 2 and backend.release(name, "h1", first.token)
    assert backend.connections._idle, "the call's connection went back to the pool"
    for conn in backend.connections._idle:
        names = {row[0] for row in conn.execute("SELECT name FROM pg_prepared_statements").fetchall()}
        assert {"lockapi_claim", "lockapi_release"} <= names
        conn.execute("DEALLOCATE lockapi_claim")
        conn.execute("DEALLOCATE lockapi_release")
    awkward = "h'2\\ \u00fc\u6f22 --"
    second = backend.try_acquire(name, awkward, 30)
    assert second.token == 3 and not backend.try_acquire(name, "h3", 30).granted
    assert backend.try_acquire(name, awkward, 30).token == 4  # a retry by the holder: granted again
    assert backend.inspect(name).holder == awkward  # type: ignore[union-attr]
    assert not backend.release(name, awkward, 3) and backend.release(name, awkward, 4)
    assert backend.release(name, awkward, 4)  # a retried release finds the lease it ended
    assert not backend.release(name, "h1", 2**63)  # beyond bigint: psycopg's path (numeric), no error


def test_mariadb_connections_each_open_their_own_socket() -> None:
    """Each connection gets a new TCP socket, also when two connects pass the same host, port and time
    left (a cached helper handed the first socket, by then in use or closed, to the second)."""
    import socket

    from lockapi_sql.dialects import _tcp

    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        first, second = _tcp("127.0.0.1", port, 1.0), _tcp("127.0.0.1", port, 1.0)
        try:
            assert first is not second
            assert first.getsockname() != second.getsockname()
        finally:
            first.close()
            second.close()


def test_mariadb_prepares_its_hot_statements_per_connection(maria_url: str, make_backend: Factory,
                                                            name: str) -> None:
    """MariaDB runs a claim and a lock's release as prepared statements (``EXECUTE .. USING``), prepared
    on each connection's first use, also again when the connection lost them; ``mysql://`` (MySQL's
    ``EXECUTE`` takes no literals) runs the plain statements."""
    backend = make_backend(maria_url)
    assert backend.sql.claim.startswith("EXECUTE ") and backend.sql.release_lock.startswith("EXECUTE ")
    first = backend.try_acquire(name, "h1", 30)
    assert first.token == 1 and backend.release(name, "h1", first.token)
    assert backend.connections._idle, "the call's connection went back to the pool"
    for conn in backend.connections._idle:  # as if the server had forgotten them
        conn.lockapi_cursor.execute("DEALLOCATE PREPARE lockapi_claim")
        conn.lockapi_cursor.execute("DEALLOCATE PREPARE lockapi_release")
    second = backend.try_acquire(name, "h2", 30)
    assert second.token == 2 and not backend.try_acquire(name, "h3", 30).granted
    assert backend.release(name, "h2", second.token) and not backend.release(name, "h2", second.token + 1)
    mysql = make_backend(maria_url.replace("mariadb+pymysql://", "mysql+pymysql://"))
    assert mysql.sql.claim.startswith("UPDATE ") and mysql.sql.release_lock.startswith("UPDATE ")
    third = mysql.try_acquire(name, "h4", 30)
    assert third.token == 3 and mysql.release(name, "h4", third.token)


def test_mariadb_holders_are_data_without_backslash_escapes(maria_url: str, make_backend: Factory,
                                                            name: str) -> None:
    """A session in ``NO_BACKSLASH_ESCAPES`` mode (a backslash is an ordinary character): the literals
    of a prepared statement's EXECUTE follow it."""
    backend = make_backend(maria_url, pool_size=1)
    assert backend.release(name, "h", backend.try_acquire(name, "h", 60).token or 0)
    # printable ASCII without quote or backslash is written as it is: none of it is special in a literal
    for holder in ('vm-1.example:4242:0a71:7', 'a"b', "100%s %", "x; DROP TABLE y; -- ?", "`tick`", " "):
        token = backend.try_acquire(name, holder, 60).token
        info = backend.inspect(name)
        assert token is not None and info is not None and info.holder == holder
        assert backend.release(name, holder, token)
    [conn] = backend.connections._idle
    conn.lockapi_cursor.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')")
    for holder in ("back\\slash", "\\'; DROP TABLE x; --", "it's\\"):
        token = backend.try_acquire(name, holder, 60).token
        info = backend.inspect(name)
        assert token is not None and info is not None and info.holder == holder
        assert backend.release(name, holder, token)
    assert backend.connections._idle == [conn], "all on the one session"


def test_mariadb_reads_its_prepared_statements_ok_packets(maria_url: str, make_backend: Factory,
                                                         name: str) -> None:
    """The prepared claim and release are read from their OK packets by lockapi itself: the row count and
    ``LAST_INSERT_ID`` (the fence) at every width of the protocol's length-encoded integers, a server
    error raised as PyMySQL's own exception with the connection still in step, and a reply with rows
    (never from the statements it prepares) refused as a connection out of sync, which is discarded."""
    import pymysql
    from lockapi_sql.dialects import DEAD, _command

    backend = make_backend(maria_url, pool_size=1)
    c = backend.tables.leases.c
    first = backend.try_acquire(name, "h", 60).token
    assert first == 1 and backend.release(name, "h", first)
    for fence in (249, 250, 251, 65_535, 65_536, 2**24 - 1, 2**24, 2**40, 2**62):  # 1, 3, 4 and 9 bytes
        with backend.engine.begin() as conn:
            conn.execute(sa.update(backend.tables.leases).where(c.name == name).values(fence=fence - 1))
        token = backend.try_acquire(name, "h", 60).token
        assert token == fence
        assert not backend.try_acquire(name, "h2", 60).granted
        assert not backend.release(name, "h", token + 1) and backend.release(name, "h", token)
    [conn] = backend.connections._idle
    with pytest.raises(pymysql.err.ProgrammingError) as missing:
        _command(conn, "UPDATE lockapi_no_such_table SET x = 1")
    assert missing.value.args[0] == 1146 and backend.dialect.classify(missing.value) is None
    assert _command(conn, "DO 1").rowcount == 0, "the connection is still in step after the error"
    with pytest.raises(pymysql.err.OperationalError) as rows:
        _command(conn, "SELECT 1")
    assert rows.value.args[0] == 2014 and backend.dialect.classify(rows.value) == DEAD
    with pytest.raises(ValueError, match="cannot prepare"):
        backend.dialect.prepared("lockapi_select", "SELECT 1 FROM t WHERE a = :a")


def test_mariadb_runs_plain_statements_when_the_server_prepares_no_more(maria_url: str, make_backend: Factory,
                                                                        name: str) -> None:
    """At the server's ``max_prepared_stmt_count`` (all sessions together) PREPARE fails: the claim and
    the release run as plain statements instead, and are prepared again once the server has room."""
    backend = make_backend(maria_url)
    with backend.engine.connect() as admin:
        (limit,) = admin.execute(sa.text("SELECT @@GLOBAL.max_prepared_stmt_count")).one()
        admin.execute(sa.text("SET GLOBAL max_prepared_stmt_count = 0"))
        try:
            token = backend.try_acquire(name, "h", 30).token
            assert token is not None and not backend.try_acquire(name, "h2", 30).granted
            assert backend.release(name, "h", token)
        finally:
            admin.execute(sa.text(f"SET GLOBAL max_prepared_stmt_count = {int(limit)}"))
    token = backend.try_acquire(name, "h3", 30).token
    assert token is not None and backend.release(name, "h3", token)
