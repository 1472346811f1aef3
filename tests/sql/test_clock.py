"""Expiry follows the DATABASE's clock, read per statement (not the client's, not a transaction's start)."""

from __future__ import annotations

import time

import sqlalchemy as sa
from lockapi_sql import SQLBackend
from lockapi_sql.schema import LOCK, name_hash

from tests.sql.conftest import Factory


def db_clock(backend: SQLBackend) -> sa.ColumnElement[int]:
    """The dialect's clock expression (what every lease statement compares against)."""
    return sa.literal_column(backend.dialect.now, sa.BigInteger)


def db_now_us(backend: SQLBackend) -> int:
    with backend.engine.connect() as conn:
        return int(conn.execute(sa.select(db_clock(backend))).scalar_one())


def set_expiry(backend: SQLBackend, name: str, offset_us: int) -> None:
    """Move the lock row's expiry to the database's now + ``offset_us``, as another node's clock would."""
    c = backend.tables.leases.c
    with backend.engine.begin() as conn:
        changed = conn.execute(
            sa.update(backend.tables.leases)
            .where(c.name_hash == name_hash(name), c.kind == LOCK, c.slot == 0)
            .values(expires_us=db_clock(backend) + offset_us)
        ).rowcount
    assert changed == 1


def test_row_expiry_is_database_time_plus_ttl(sql_url: str, make_backend: Factory, name: str) -> None:
    backend = make_backend(sql_url)
    before = db_now_us(backend)
    assert backend.try_acquire(name, "h1", 30).token is not None
    after = db_now_us(backend)
    c = backend.tables.leases.c
    with backend.engine.connect() as conn:
        expires = conn.execute(sa.select(c.expires_us).where(c.name_hash == name_hash(name))).scalar_one()
    assert before + 30_000_000 <= expires <= after + 30_000_000


def test_expiry_is_decided_by_the_database_clock(sql_url: str, make_backend: Factory, name: str) -> None:
    backend, other = make_backend(sql_url), make_backend(sql_url)
    first = backend.try_acquire(name, "h1", 3600)
    assert first.token is not None
    # The client granted an hour; the database says the lease ended a moment ago: it is free.
    set_expiry(backend, name, -1)
    assert backend.inspect(name) is None
    assert backend.holds(name, "h1", first.token) is False
    second = other.try_acquire(name, "h2", 30)
    assert second.token is not None and second.token > first.token
    assert backend.release(name, "h1", first.token) is False
    # And the time left that inspect reports is the database's.
    set_expiry(backend, name, 100_000_000)
    info = backend.inspect(name)
    assert info is not None and 95 < info.ttl_remaining <= 100


def test_database_clock_advances_inside_a_long_transaction(sql_url: str, make_backend: Factory) -> None:
    backend = make_backend(sql_url)
    with backend.engine.begin() as conn:
        first = conn.execute(sa.select(db_clock(backend))).scalar_one()
        time.sleep(1.2)  # the quantity under test is elapsed time inside one open transaction
        second = conn.execute(sa.select(db_clock(backend))).scalar_one()
    assert second - first >= 1_000_000, "the clock expression is frozen at the transaction's start"


def test_postgres_lock_statement_in_a_long_transaction_is_not_fooled(pg_url: str, make_backend: Factory,
                                                                      name: str) -> None:
    """ShedLock #3577: now() is the transaction's start. Our expression is clock_timestamp()."""
    backend = make_backend(pg_url)
    with backend.engine.begin() as conn:
        conn.execute(sa.text("SELECT now()"))
        time.sleep(1.2)  # the quantity under test is elapsed time inside one open transaction
        stale, clock = conn.execute(
            sa.select(sa.literal_column("CAST(EXTRACT(EPOCH FROM now()) * 1000000 AS BIGINT)"),
                      db_clock(backend))
        ).one()
    assert clock - stale >= 1_000_000
