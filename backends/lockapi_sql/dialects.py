"""Everything that differs between SQLite, PostgreSQL and MariaDB/MySQL, in one strategy class each.

A strategy knows its driver, how to configure an engine (timeouts, isolation, SQLite's BEGIN), the
database clock as SQL, which errors are worth retrying, and the two writes that need dialect syntax:
``claim`` (take free lease rows, creating missing ones, and report their fencing tokens) and ``upsert``.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine

from lockapi.errors import ConfigError

Row = tuple[str, str]
"""(name_hash, name) of a lease row."""


class SQLDialect:
    """The generic part of a strategy; subclasses fill in the class attributes and hooks."""

    scheme: ClassVar[str]
    driver: ClassVar[str]
    """The one supported DBAPI driver (``scheme+driver`` in URLs)."""
    multi_host: ClassVar[bool] = True
    needs_watchdog: ClassVar[bool] = False
    """The driver has no read timeout: guard each operation with :class:`~.watchdog.Watchdog`."""
    now_sql: ClassVar[str]
    """SQL for the database's current time in integer microseconds since the epoch, re-read per statement."""
    retry_codes: ClassVar[frozenset[str | int]] = frozenset()
    """Driver error codes (deadlock, lock wait) after which the whole transaction is retried."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    # -- engine ---------------------------------------------------------------------------------------
    def engine_url(self, url: URL) -> URL:
        driver = url.get_driver_name()
        if url.drivername != url.get_backend_name() and driver != self.driver:
            raise ConfigError(f"{self.scheme} URLs support only the {self.driver} driver, got {driver!r}")
        return url.set(drivername=f"{url.get_backend_name()}+{self.driver}")

    def engine_kwargs(self, pool_size: int, max_overflow: int) -> dict[str, Any]:
        return {"pool_size": pool_size, "max_overflow": max_overflow, "pool_timeout": self.timeout,
                "isolation_level": "READ COMMITTED"}

    def setup(self, engine: Engine) -> None:
        """Install engine event hooks (none by default)."""

    def now(self) -> sa.ColumnElement[int]:
        return sa.literal_column(self.now_sql, sa.BigInteger)

    def retryable(self, exc: sa.exc.DBAPIError) -> bool:
        return _error_code(exc.orig) in self.retry_codes

    notifies = False
    """Whether :meth:`notify` sends anything (PostgreSQL)."""

    def notify(self, conn: Connection, channel: str, payloads: Sequence[str | sa.ColumnElement[str]]) -> None:
        """Announce released rows to push-waiters (inside the releasing transaction). No-op by default.

        A payload may be an SQL expression, evaluated by the database in the same statement."""

    # -- writes -----------------------------------------------------------------------------------------
    def insert(self, table: sa.Table) -> Any:
        raise NotImplementedError

    def claim(self, conn: Connection, table: sa.Table, rows: Sequence[Row], *, kind: int, slot: int,
              holder: str | None, ttl_us: int = 0, fence: int | None = None) -> dict[str, int]:
        """Take the lease rows ``rows`` of ``kind``/``slot``; return {name_hash: fence} of those taken.

        With a ``holder``: a row is taken only if it is free or expired; it gets ``holder``, expiry
        now + ``ttl_us`` and fence ``fence`` (or its fence + 1 when ``fence`` is None).
        With ``holder`` None (one fencing counter row): the row's fence goes up by one, unconditionally.
        Missing rows are created as if they had been free with fence 0.
        """
        raise NotImplementedError

    def upsert(self, conn: Connection, table: sa.Table, values: Sequence[Mapping[str, Any]],
               update: Mapping[str, Any]) -> None:
        """Insert ``values``; a row whose primary key exists gets ``update`` (expressions over the OLD row)."""
        raise NotImplementedError

    def _claim_values(self, table: sa.Table, holder: str | None, ttl_us: int,
                      fence: int | None) -> dict[str, Any]:
        """The columns a claim sets on an existing row."""
        c = table.c
        after = sa.case((c.fence < c.fence_floor, c.fence_floor), else_=c.fence) + 1
        values: dict[str, Any] = {"fence": after if fence is None else fence}
        if holder is not None:
            values.update(holder=holder, expires_us=self.now() + ttl_us)
        return values


class _ReturningDialect(SQLDialect):
    """PostgreSQL and SQLite >= 3.35: ``INSERT .. ON CONFLICT DO UPDATE .. WHERE .. RETURNING``, one statement."""

    def claim(self, conn: Connection, table: sa.Table, rows: Sequence[Row], *, kind: int, slot: int,
              holder: str | None, ttl_us: int = 0, fence: int | None = None) -> dict[str, int]:
        fresh = self.now() + ttl_us if holder is not None else 0
        stmt = self.insert(table).values([
            {"name_hash": h, "kind": kind, "slot": slot, "name": n, "holder": holder, "expires_us": fresh,
             "fence": 1 if fence is None else fence}
            for h, n in sorted(rows)
        ])
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.name_hash, table.c.kind, table.c.slot],
            set_=self._claim_values(table, holder, ttl_us, fence),
            where=table.c.expires_us <= self.now() if holder is not None else None,
        ).returning(table.c.name_hash, table.c.fence)
        return {h: f for h, f in conn.execute(stmt)}

    def upsert(self, conn: Connection, table: sa.Table, values: Sequence[Mapping[str, Any]],
               update: Mapping[str, Any]) -> None:
        stmt = self.insert(table).values(list(values))
        conn.execute(stmt.on_conflict_do_update(index_elements=list(table.primary_key.columns), set_=update))


class PostgresDialect(_ReturningDialect):
    """PostgreSQL via psycopg 3. ``clock_timestamp()`` is the wall clock (``now()`` is the transaction's start)."""

    scheme = "postgresql"
    driver = "psycopg"
    needs_watchdog = True
    now_sql = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)"
    retry_codes = frozenset({"40P01", "40001", "55P03"})  # deadlock, serialization, lock not available

    def engine_kwargs(self, pool_size: int, max_overflow: int) -> dict[str, Any]:
        ms = max(1, math.ceil(self.timeout * 1000))
        options = (f"-c statement_timeout={ms} -c lock_timeout={ms} "
                   f"-c idle_in_transaction_session_timeout={max(ms, 10_000)}")
        return {**super().engine_kwargs(pool_size, max_overflow),
                "connect_args": {**self.connect_args(), "options": options}}

    def connect_args(self) -> dict[str, Any]:
        """libpq parameters for every connection, the LISTEN connection included: a connect timeout, and
        TCP keepalives plus ``tcp_user_timeout`` so a dead host or a partition breaks the connection."""
        seconds = max(1, math.ceil(self.timeout))
        return {"connect_timeout": seconds, "keepalives": 1, "keepalives_idle": seconds,
                "keepalives_interval": 1, "keepalives_count": 3, "tcp_user_timeout": seconds * 1000}

    def insert(self, table: sa.Table) -> Any:
        return postgresql.insert(table)

    notifies = True

    def notify(self, conn: Connection, channel: str, payloads: Sequence[str | sa.ColumnElement[str]]) -> None:
        for payload in payloads:
            conn.execute(sa.select(sa.func.pg_notify(channel, payload)))


class SQLiteDialect(_ReturningDialect):
    """SQLite via the stdlib's sqlite3: WAL, a busy timeout, and explicit ``BEGIN IMMEDIATE`` for writes.

    pysqlite's own transaction handling is switched off (``isolation_level=None``) and the engine's
    ``begin`` event issues ``BEGIN IMMEDIATE`` (or plain ``BEGIN`` for a read-only operation), so a
    multi-statement operation holds the write lock from its first statement and cannot deadlock.
    """

    scheme = "sqlite"
    driver = "pysqlite"
    multi_host = False
    now_sql = "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)"
    READ_ONLY = "lockapi_read_only"
    """Execution option: begin with a deferred ``BEGIN`` (the operation only reads)."""

    def engine_url(self, url: URL) -> URL:
        database = url.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            raise ConfigError("sqlite URLs need a file path: sqlite:///relative.db or sqlite:////abs/path.db "
                              "(for an in-process store use the memory backend)")
        return super().engine_url(url)

    def engine_kwargs(self, pool_size: int, max_overflow: int) -> dict[str, Any]:
        kwargs = super().engine_kwargs(pool_size, max_overflow)
        del kwargs["isolation_level"]
        return {**kwargs, "connect_args": {"timeout": self.timeout, "check_same_thread": False}}

    def setup(self, engine: Engine) -> None:
        if engine.url.database:
            Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
        busy_ms = max(1, math.ceil(self.timeout * 1000))

        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # lockapi issues BEGIN itself (below)
            dbapi_conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
            dbapi_conn.execute("PRAGMA journal_mode = WAL")

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            read_only = conn.get_execution_options().get(self.READ_ONLY, False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    def retryable(self, exc: sa.exc.DBAPIError) -> bool:
        return "database is locked" in str(exc.orig)

    def insert(self, table: sa.Table) -> Any:
        return sqlite.insert(table)


class MySQLDialect(SQLDialect):
    """MariaDB and MySQL via PyMySQL, READ COMMITTED, socket read/write timeouts.

    No RETURNING: a claim is a conditional UPDATE (creating missing rows first when it matched fewer
    rows than asked), then a SELECT of the rows now held, all in one transaction. SQLAlchemy sets
    CLIENT.FOUND_ROWS, so an UPDATE's rowcount is the number of rows its WHERE matched.
    """

    scheme = "mysql"
    driver = "pymysql"
    now_sql = "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6))"
    retry_codes = frozenset({1213, 1205})  # deadlock, lock wait timeout

    def engine_kwargs(self, pool_size: int, max_overflow: int) -> dict[str, Any]:
        lock_wait = max(1, math.ceil(self.timeout))
        return {**super().engine_kwargs(pool_size, max_overflow), "connect_args": {
            "connect_timeout": self.timeout, "read_timeout": self.timeout, "write_timeout": self.timeout,
            "charset": "utf8mb4", "init_command": f"SET SESSION innodb_lock_wait_timeout = {lock_wait}",
        }}

    def insert(self, table: sa.Table) -> Any:
        return mysql.insert(table)

    def claim(self, conn: Connection, table: sa.Table, rows: Sequence[Row], *, kind: int, slot: int,
              holder: str | None, ttl_us: int = 0, fence: int | None = None) -> dict[str, int]:
        c = table.c
        hashes = sorted(h for h, _ in rows)
        target = sa.and_(c.name_hash.in_(hashes), c.kind == kind, c.slot == slot)
        free = sa.and_(target, c.expires_us <= self.now()) if holder is not None else target
        take = sa.update(table).where(free).values(self._claim_values(table, holder, ttl_us, fence))
        if conn.execute(take).rowcount < len(hashes):
            # Some rows may not exist yet: create them free, then try those again. (A counter row is
            # a single row, so it is only bumped here if the first UPDATE found nothing.)
            self.upsert(conn, table, [
                {"name_hash": h, "kind": kind, "slot": slot, "name": n, "holder": None, "expires_us": 0,
                 "fence": 0} for h, n in rows
            ], {"kind": c.kind})
            conn.execute(take)
        # Our holder id is unique to this attempt's lease, so the rows carrying it are exactly the ones this
        # transaction claimed, even if a tiny ttl has already run out by the next statement's clock.
        held = sa.and_(target, c.holder == holder) if holder is not None else target
        return {h: f for h, f in conn.execute(sa.select(c.name_hash, c.fence).where(held))}

    def upsert(self, conn: Connection, table: sa.Table, values: Sequence[Mapping[str, Any]],
               update: Mapping[str, Any]) -> None:
        conn.execute(self.insert(table).values(list(values)).on_duplicate_key_update(dict(update)))


class MariaDBDialect(MySQLDialect):
    scheme = "mariadb"


DIALECTS: dict[str, type[SQLDialect]] = {
    d.scheme: d for d in (PostgresDialect, SQLiteDialect, MySQLDialect, MariaDBDialect)
}


def _error_code(orig: BaseException | None) -> str | int | None:
    """The driver's error code: psycopg's SQLSTATE, PyMySQL's errno."""
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate:
        return str(sqlstate)
    args = getattr(orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None
