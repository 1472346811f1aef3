"""The tables, their DDL, and creating them safely when many processes start at once.

Three tables, named ``<prefix>leases``, ``<prefix>waiters`` and ``<prefix>done``:

* leases: one row per lock name (kind 0, slot 0), per semaphore slot (kind 1, slot >= 0) and one fencing
  counter row per semaphore name (kind 1, slot -1). ``fence`` only goes up; rows are never deleted.
  A row is live while ``expires_us`` (microseconds since the epoch, by the DATABASE's clock) is in the
  future; a free row has ``holder`` NULL and ``expires_us`` 0. ``waited_us`` (same clock) is a waiters'
  mark: until then someone may wait on the row, so its release announces itself (PostgreSQL push
  wake-ups; see :attr:`lockapi_sql.statements.Statements.mark`). The column is there on every dialect
  (one schema); tables of the previous version get it added on first use (:meth:`Tables.create`).
* waiters: the fair queue; ``seq`` (auto-increment) is the arrival order.
* done: done markers, live while ``expires_us`` is in the future.

Rows are keyed by ``name_hash``, the SHA-256 of the UTF-8 name in hex (names reach 1024 UTF-8 bytes, more
than an InnoDB index may hold); the name itself is kept beside it for people reading the tables.
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.schema import CreateTable

from lockapi.errors import ConfigError

LOCK = 0
"""``kind`` of a lock row."""
SEMAPHORE = 1
"""``kind`` of a semaphore slot or counter row."""
COUNTER_SLOT = -1
"""``slot`` of a semaphore's fencing counter row."""

DEFAULT_PREFIX = "lockapi_"
_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
_MYSQL: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mariadb_engine": "InnoDB",
          "mariadb_charset": "utf8mb4"}


def name_hash(name: str) -> str:
    """The row key of ``name``: SHA-256 of its UTF-8 bytes, 64 hex digits."""
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


key_of = functools.lru_cache(maxsize=1024)(name_hash)
""":func:`name_hash` through a small per-process cache, for single-name operations: a lease's acquire,
extend and release hash its name once (0.06 against 0.6 µs per call). Batches use :func:`name_hash`,
so fresh names of a large batch do not evict the names in use."""


HEAD_SEPARATOR = "|"
"""In a NOTIFY payload, between the name's payload and the holder id of the fair waiter it is addressed to."""


class Tables:
    """The three tables for one table prefix."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not _PREFIX.fullmatch(prefix):
            raise ConfigError(
                f"option 'table_prefix' must be letters, digits and _ (not starting with a digit, "
                f"at most 40 characters), got {prefix!r}"
            )
        self.prefix = prefix
        self.metadata = sa.MetaData()
        self.leases = sa.Table(
            f"{prefix}leases", self.metadata,
            sa.Column("name_hash", sa.String(64), primary_key=True),
            sa.Column("kind", sa.SmallInteger, primary_key=True, autoincrement=False),
            sa.Column("slot", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("name", sa.String(1024), nullable=False),
            sa.Column("holder", sa.String(128), nullable=True),
            sa.Column("expires_us", sa.BigInteger, nullable=False),
            sa.Column("fence", sa.BigInteger, nullable=False),
            # set_fence_floor raises this, never ``fence``: a live holder's token must not change.
            sa.Column("fence_floor", sa.BigInteger, nullable=False, server_default="0"),
            sa.Column("waited_us", sa.BigInteger, nullable=False, server_default="0"),
            **_MYSQL,
        )
        self.waiters = sa.Table(
            f"{prefix}waiters", self.metadata,
            sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                      autoincrement=True),
            sa.Column("name_hash", sa.String(64), nullable=False),
            sa.Column("name", sa.String(1024), nullable=False),
            sa.Column("holder", sa.String(128), nullable=False),
            sa.Column("expires_us", sa.BigInteger, nullable=False),
            sa.UniqueConstraint("name_hash", "holder", name=f"{prefix}waiters_name_holder"),
            **_MYSQL,
        )
        self.done = sa.Table(
            f"{prefix}done", self.metadata,
            sa.Column("name_hash", sa.String(64), primary_key=True),
            sa.Column("name", sa.String(1024), nullable=False),
            sa.Column("expires_us", sa.BigInteger, nullable=False),
            **_MYSQL,
        )

    @property
    def notify_channel(self) -> str:
        """The PostgreSQL NOTIFY channel on which releases are announced."""
        return f"{self.prefix}release"

    def ddl(self, dialect: Dialect) -> str:
        """The CREATE TABLE statements for ``dialect``, as a DBA would run them, then (commented out) the
        ALTER TABLE statements that upgrade a table of an earlier version."""
        return "".join(
            f"{str(CreateTable(table).compile(dialect=dialect)).strip()};\n\n"
            for table in self.metadata.sorted_tables
        ) + "-- Upgrading tables created by an earlier lockapi (each column once):\n" + "".join(
            f"-- {self.add_column(column)};\n" for column in ADDED_COLUMNS)

    def add_column(self, column: str) -> str:
        """The statement that adds ``column`` (of :data:`ADDED_COLUMNS`) to the leases table."""
        return f"ALTER TABLE {self.leases.name} ADD COLUMN {column} BIGINT NOT NULL DEFAULT 0"

    def missing(self, conn: Connection) -> list[str]:
        """Names of the tables that do not exist yet."""
        present = set(sa.inspect(conn).get_table_names())
        return [t.name for t in self.metadata.sorted_tables if t.name not in present]

    def missing_columns(self, conn: Connection) -> list[str]:
        """Columns of :data:`ADDED_COLUMNS` that the leases table (which exists) lacks: a table created
        by an earlier version."""
        present = {c["name"] for c in sa.inspect(conn).get_columns(self.leases.name)}
        return [column for column in ADDED_COLUMNS if column not in present]

    def create(self, engine: Engine, *, deadline: float) -> None:
        """Create the missing tables and add the missing columns; safe when several processes do it at
        once.

        Each attempt creates the missing tables in one transaction (on MySQL each CREATE commits on its
        own), then adds each missing column (:data:`ADDED_COLUMNS`) with ``ALTER TABLE .. ADD COLUMN`` and
        its constant default (no table rewrite on PostgreSQL >= 11 or MariaDB >= 10.3; SQLite only edits
        the schema). A concurrent creator may make an attempt fail with "already exists" or "duplicate
        column": the next attempt sees its table or column and skips it. Gives up (raising the last
        error) at ``deadline`` (monotonic).
        """
        while True:
            try:
                with engine.begin() as conn:
                    self.metadata.create_all(conn, checkfirst=True)
                with engine.begin() as conn:
                    for column in self.missing_columns(conn):
                        conn.execute(sa.text(self.add_column(column)))
                return
            except sa.exc.DBAPIError:
                if time.monotonic() >= deadline:
                    raise
                with engine.connect() as conn:
                    if not self.missing(conn) and not self.missing_columns(conn):
                        return
                time.sleep(0.05)


ADDED_COLUMNS = ("waited_us",)
"""Lease columns added after the first version (BIGINT NOT NULL DEFAULT 0), in the order added."""
