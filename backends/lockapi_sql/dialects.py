"""Everything that differs between SQLite, PostgreSQL and MariaDB/MySQL, one small class each.

A dialect knows its driver (how to open an autocommit DBAPI connection bounded by a deadline), the
database clock as SQL, the few pieces of syntax the statements need (upsert, how a claim reports its
fencing token), and how to classify the driver's errors. Everything else, every statement included,
is written once in :mod:`lockapi_sql.statements`; a new dialect is a class like the ones below.
"""

from __future__ import annotations

import functools
import math
import re
import socket
import sqlite3
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import URL

from lockapi.errors import ConfigError
from lockapi.spi import drive

DBAPIConnection = Any
"""An open connection of the dialect's driver, in autocommit mode."""

RETRY, DEAD, CONFIG = "retry", "dead", "config"
"""Error classes: retry the call (deadlock, lock wait, busy); the connection is gone (drop it, retry
if the request is idempotent); the configuration is wrong (bad password, no such database)."""


class Dialect:
    """The generic part; subclasses fill in the class attributes and hooks."""

    scheme: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    driver: ClassVar[str]
    """The one supported DBAPI driver (``scheme+driver`` in URLs)."""
    multi_host: ClassVar[bool] = True
    needs_watchdog: ClassVar[bool] = False
    """The driver has no read timeout: guard each call with :class:`~lockapi_sql.watchdog.Watchdog`."""
    now: ClassVar[str]
    """SQL for the database's current time in integer microseconds since the epoch, read per statement."""
    returning: ClassVar[bool] = True
    """``UPDATE``/``INSERT .. RETURNING`` exist; otherwise a claim reports its token through
    ``LAST_INSERT_ID(expr)`` (the driver's ``lastrowid``) and missing rows are created first."""
    for_update: ClassVar[str] = " FOR UPDATE"
    begin: ClassVar[str] = "BEGIN"
    paramstyle: ClassVar[str] = "pyformat"
    """``named`` (``:name``, as the statements are written) or ``pyformat`` (``%(name)s``)."""
    notifies: ClassVar[bool] = False
    """Releases can announce themselves to push-waiters inside the releasing statement."""
    batch_chunk: ClassVar[int] = 500
    """Most names per batch statement (SQLite's bind-parameter limit is 32,766; 500 keeps statements short)."""
    arrays: ClassVar[bool] = False
    """Batch statements take each column as ONE array parameter (``unnest``, ``= ANY``) instead of one
    parameter per name: a short statement, prepared once whatever the batch size."""
    retry_delay: ClassVar[tuple[float, float]] = (0.005, 0.2)
    """Seconds a call sleeps before its first retry after a :data:`RETRY` error, and at most (the sleep
    doubles per retry, times a random 1-2 jitter, and never passes the call's deadline)."""

    def __init__(self, url: URL, timeout: float, options: Any) -> None:
        self.timeout = timeout
        self.url = self.engine_url(url)

    # -- connecting ------------------------------------------------------------------------------------
    def engine_url(self, url: URL) -> URL:
        """The SQLAlchemy URL (``scheme+driver``) for DDL; refuses another driver."""
        backend = url.get_backend_name()
        driver = url.get_driver_name()
        if url.drivername != backend and driver != self.driver:
            raise ConfigError(f"{self.scheme} URLs support only the {self.driver} driver, got {driver!r}")
        backend = "postgresql" if backend == "postgres" else backend
        return url.set(drivername=f"{backend}+{self.driver}")

    def connect(self, remaining: float) -> DBAPIConnection:
        """A new autocommit connection; connecting takes at most ``remaining`` seconds."""
        raise NotImplementedError

    def ddl_connect_args(self) -> dict[str, Any]:
        """Driver arguments for the SQLAlchemy engine that creates the tables (timeouts)."""
        return {}

    def fileno(self, conn: DBAPIConnection) -> int:
        """The connection's socket, for the watchdog."""
        raise NotImplementedError

    def classify(self, exc: BaseException) -> str | None:
        """:data:`RETRY`, :data:`DEAD`, :data:`CONFIG` or None (a plain failure) for a driver error."""
        raise NotImplementedError

    def is_driver_error(self, exc: BaseException) -> bool:
        raise NotImplementedError

    # -- syntax ----------------------------------------------------------------------------------------
    def next_fence(self, table: str) -> str:
        """The token a claim of a row of ``table`` gives: one above both its fence and its floor."""
        return (f"CASE WHEN {table}.fence < {table}.fence_floor THEN {table}.fence_floor "
                f"ELSE {table}.fence END + 1")

    def upsert(self, table: str, columns: str, rows: str, keys: str) -> str:
        """``INSERT INTO table (columns) VALUES rows`` that, on a conflict on ``keys``, runs the ``SET``
        list that follows (in which ``table.column`` is the existing row and :meth:`new` the proposed one)."""
        raise NotImplementedError

    def new(self, column: str) -> str:
        """In an upsert's ``SET`` list: the value the insert proposed for ``column``."""
        raise NotImplementedError

    def insert_missing(self, table: str, columns: str, rows: str) -> str:
        """``INSERT`` that skips the rows whose key exists."""
        raise NotImplementedError

    def first_fence(self) -> str:
        """The token of a row's first claim."""
        return "1"

    # Every statement of a connection runs on ONE cursor made when it connects (``lockapi_cursor``, set by
    # :meth:`connect`): a cursor per statement cost 1 us of client CPU each (sqlite3: making one, and
    # finalising its statement when it is dropped; psycopg: 5-10 us). Results are read to their end
    # (``ONE`` reads all rows), so an idle connection's cursor holds no open statement (SQLite: no
    # read snapshot kept open between calls).

    def execute(self, conn: DBAPIConnection, statement: str, params: dict[str, Any]) -> Any:
        """Run one statement on the connection's cursor and return it (the driver's cursor, as DB-API
        instrumentation wraps them)."""
        cursor = conn.lockapi_cursor
        cursor.execute(statement, params)
        return cursor

    def command(self, conn: DBAPIConnection, statement: str) -> None:
        """Run a statement without parameters (``BEGIN``, ``COMMIT``)."""
        conn.lockapi_cursor.execute(statement)

    # -- asyncio (the dialects with a native asyncio driver; see lockapi_sql.aio_connections) ------------
    async_driver: ClassVar[str | None] = None
    """The asyncio driver's module, or None: served to asyncio code on threads (the sync driver)."""

    async def async_connect(self, remaining: float) -> Any:
        """A new autocommit asyncio connection, set up like :meth:`connect`'s."""
        raise NotImplementedError

    async def async_execute(self, conn: Any, statement: str, params: dict[str, Any] | None) -> Any:
        """Run one statement (``params`` None: a command such as ``BEGIN``); the driver's cursor, whose
        ``fetchone``/``fetchall`` are awaited."""
        raise NotImplementedError

    def async_fileno(self, conn: Any) -> int:
        """An asyncio connection's socket (cut when its deadline passes)."""
        raise NotImplementedError

    def async_close(self, conn: Any) -> None:
        """Close an asyncio connection at once, without a round trip (it may be stuck)."""
        raise NotImplementedError

    async_settles: ClassVar[bool] = False
    """Whether :meth:`async_settle` works: the asyncio driver can finish a statement whose caller was
    cancelled, instead of dropping the connection."""

    def async_settle(self, conn: Any, settle: bool) -> None:
        """From now on, a statement on ``conn`` interrupted by a cancellation (``settle``) finishes: its
        reply is read on the same connection and returned as if nothing happened (the deadline still
        cuts the socket); or (not ``settle``) the connection is dropped, the default."""
        raise NotImplementedError

    def compile(self, statement: str) -> str:
        """``statement`` (``:name`` parameters) in the driver's parameter style."""
        if self.paramstyle == "named":
            return statement
        return _NAMED.sub(lambda m: f"%({m.group(1)})s", statement)

    def prepared(self, name: str, statement: str) -> str:
        """A hot statement (``:name`` parameters) as the connections run it: :meth:`compile` of it, or, where
        the dialect prepares statements server-side (MariaDB), the statement that executes the one
        prepared as ``name`` on the connection (:meth:`execute` prepares it on first use)."""
        return self.compile(statement)


_NAMED = re.compile(r"(?<![:\w]):(\w+)")


def _driver_params(url: URL) -> dict[str, Any]:
    """The driver's connect arguments for ``url``, as SQLAlchemy's dialect derives them."""
    _, params = sa.create_engine(url, poolclass=sa.pool.NullPool).dialect.create_connect_args(url)
    return dict(params)


class _SQLiteConnection(sqlite3.Connection):
    """sqlite3's connection with room for attributes (``lockapi_cursor``) that gives a database file it
    creates pages of :attr:`SQLite.PAGE_SIZE` bytes (the backend's connections and the engine that creates
    the tables both use it)."""

    lockapi_cursor: sqlite3.Cursor

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # no effect on a database that has tables already (its page size is fixed); like the other set-up
        # pragmas it may read the schema, within the connection's busy timeout (see SQLite.connect)
        self.execute(f"PRAGMA page_size = {SQLite.PAGE_SIZE}")


class _OnConflict(Dialect):
    """PostgreSQL and SQLite: ``INSERT .. ON CONFLICT (keys) DO UPDATE SET .. WHERE .. RETURNING``."""

    def upsert(self, table: str, columns: str, rows: str, keys: str) -> str:
        return f"INSERT INTO {table} ({columns}) VALUES {rows} ON CONFLICT ({keys}) DO UPDATE SET "

    def new(self, column: str) -> str:
        return f"excluded.{column}"

    def insert_missing(self, table: str, columns: str, rows: str) -> str:
        return f"INSERT INTO {table} ({columns}) VALUES {rows} ON CONFLICT DO NOTHING"


class SQLite(_OnConflict):
    """SQLite through the standard library: WAL, ``BEGIN IMMEDIATE`` for writes.

    ``synchronous`` (option): ``normal`` (default) or ``full``. Fencing tokens are seeded from the
    database clock (never below the current time in microseconds), so the commits a power loss can
    take back under ``normal`` never make a token repeat.

    No busy timeout once connected (``PRAGMA busy_timeout = 0``): a write that finds the database
    locked fails at once and the call is retried by :mod:`lockapi_sql.connections` after a short
    jittered sleep (:attr:`retry_delay`, 0.1 ms doubling to 2 ms), within the call's deadline. SQLite's
    own busy handler sleeps on a fixed schedule (1, 2, 5, 10 ... 100 ms) while a write holds the lock
    for tens of microseconds, so a process that had to wait once kept losing the lock to processes
    that never slept (workers starved under contention).
    """

    scheme = "sqlite"
    driver = "pysqlite"
    multi_host = False
    now = "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)"
    for_update = ""
    begin = "BEGIN IMMEDIATE"
    paramstyle = "named"
    retry_delay = (0.0001, 0.002)
    SYNCHRONOUS = ("normal", "full")
    PAGE_SIZE = 1024
    """The page size of a database file the backend creates (SQLite's default is 4096). Every commit
    writes the changed page whole to the WAL, checksummed: one lease row's UPDATE writes one table page,
    so a smaller page is less copying and checksumming per acquire or release (about 4 us of the ~30 us
    of CPU an acquire+release cycle costs with 4096, a few hundred rows; 3.5 us with 10,000). A row whose
    name is longer than about 900 bytes spills into an overflow page. A file created with another page
    size keeps it (SQLite cannot change it in WAL mode) and works as before."""

    def __init__(self, url: URL, timeout: float, options: Any) -> None:
        super().__init__(url, timeout, options)
        self.synchronous = (options.str("synchronous", "normal") or "normal").lower()
        if self.synchronous not in self.SYNCHRONOUS:
            raise ConfigError(f"option 'synchronous' must be normal or full, got {self.synchronous!r}")
        self.path = self.url.database or ""
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)

    def engine_url(self, url: URL) -> URL:
        database = url.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            raise ConfigError("sqlite URLs need a file path: sqlite:///relative.db or sqlite:////abs/path.db "
                              "(for an in-process store use the memory backend)")
        return super().engine_url(url)

    def connect(self, remaining: float) -> DBAPIConnection:
        # through sqlite3.dbapi2, the module DB-API instrumentation (OpenTelemetry) wraps
        # the set-up waits for a busy database within ``remaining`` (SQLite's busy handler); calls do not
        conn = sqlite3.dbapi2.connect(self.path, timeout=max(0.001, remaining), isolation_level=None,
                                      check_same_thread=False, factory=_SQLiteConnection)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
            conn.execute("PRAGMA busy_timeout = 0")
            conn.lockapi_cursor = conn.cursor()
        except BaseException:
            conn.close()
            raise
        return conn

    def ddl_connect_args(self) -> dict[str, Any]:
        return {"timeout": self.timeout, "factory": _SQLiteConnection}  # the tables' file gets PAGE_SIZE

    def next_fence(self, table: str) -> str:
        return f"MAX({super().next_fence(table)}, {self.now})"

    def first_fence(self) -> str:
        return self.now

    def classify(self, exc: BaseException) -> str | None:
        text = str(exc)
        if "database is locked" in text or "database is busy" in text:
            return RETRY
        if isinstance(exc, sqlite3.OperationalError) and ("unable to open" in text or "readonly" in text):
            return CONFIG
        return None

    def is_driver_error(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.Error)


class PostgreSQL(_OnConflict):
    """PostgreSQL through psycopg 3. ``clock_timestamp()`` is the wall clock (``now()`` is the
    transaction's start). Statements are prepared server-side after their first uses (psycopg); the
    claim and lock release run on libpq directly (:meth:`execute`, :meth:`async_execute`)."""

    scheme = "postgresql"
    aliases = ("postgres",)
    driver = "psycopg"
    needs_watchdog = True
    now = "CAST(date_part('epoch', clock_timestamp()) * 1000000 AS BIGINT)"
    """``date_part`` (double precision: rounded to the microsecond, off by at most one) rather than
    ``EXTRACT`` (numeric since PostgreSQL 14, slower to compute and to multiply): about 1 us less server
    time per evaluation, five per acquire+release cycle."""
    notifies = True
    arrays = True
    batch_chunk = 10_000
    _RETRY = frozenset({"40P01", "40001", "55P03"})  # deadlock, serialization, lock not available
    _CONFIG_PREFIXES = ("28", "3D", "42501")  # authentication, no such database, permission

    def __init__(self, url: URL, timeout: float, options: Any) -> None:
        super().__init__(url, timeout, options)
        self.params = _driver_params(self.url)
        self._hot: dict[str, tuple[bytes, bytes, tuple[str, ...]]] = {}
        """A hot statement (as :meth:`prepared` returns it) -> (its server-side name, its text with
        ``$n`` parameters, the parameters' names in ``$n`` order): see :meth:`execute`."""

    def connect_params(self, remaining: float) -> dict[str, Any]:
        """libpq parameters: the connect timeout, and TCP keepalives plus ``tcp_user_timeout`` so a dead
        host or a partition breaks the connection (also used by the LISTEN connection)."""
        seconds = max(1, math.ceil(remaining))
        every = max(1, math.ceil(self.timeout))
        return {**self.params, "connect_timeout": seconds, "keepalives": 1, "keepalives_idle": every,
                "keepalives_interval": 1, "keepalives_count": 3, "tcp_user_timeout": every * 1000}

    def _session_options(self) -> str:
        ms = max(1, math.ceil(self.timeout * 1000))
        return (f"-c statement_timeout={ms} -c lock_timeout={ms} "
                f"-c idle_in_transaction_session_timeout={max(ms, 10_000)}")

    def connect(self, remaining: float) -> DBAPIConnection:
        import psycopg

        conn = psycopg.connect(**self.connect_params(remaining), options=self._session_options(), autocommit=True)
        conn.lockapi_cursor = conn.cursor()  # type: ignore[attr-defined]
        conn.lockapi_encoding = conn.info.encoding  # type: ignore[attr-defined]  # (the hot statements' text)
        return conn

    def prepared(self, name: str, statement: str) -> str:
        """:meth:`compile` of ``statement``, which the connections run as the statement prepared
        server-side as ``name`` (:meth:`execute`, :meth:`async_execute`)."""
        if not _PREPARED_NAME.fullmatch(name) or "$" in statement:
            raise ValueError(f"cannot prepare {name!r}: {statement!r}")  # (our own statements: a bug)
        order = tuple(dict.fromkeys(_NAMED.findall(statement)))
        positional = _NAMED.sub(lambda m: f"${order.index(m.group(1)) + 1}", statement)
        run = self.compile(statement)
        self._hot[run] = (name.encode(), positional.encode(), order)
        return run

    def execute(self, conn: DBAPIConnection, statement: str, params: dict[str, Any]) -> Any:
        """As :meth:`Dialect.execute`; a hot statement (:meth:`prepared`: a claim, a lock's release) runs
        on libpq directly (``PQexecPrepared``, text parameters encoded here), prepared server-side on
        the connection's first use of it (on the error that says it is not: no check on the hot path).
        Inside a transaction (a fair waiter's queue step) the statement takes psycopg's path: a failed
        first try would abort the transaction.

        psycopg's cursor runs libpq non-blocking and waits in Python, adapts every parameter and builds
        its result in Python: the same two statements cost about 90 us less client CPU per cycle this
        way (bare loops on one connection). ``PQexecPrepared`` releases the GIL while it blocks, so the
        watchdog still cuts a connection whose server stopped answering (the call then fails as a dead
        connection); a server error is psycopg's own exception for its SQLSTATE, classified as ever. A
        parameter that is neither a ``bigint`` nor a string without NUL takes psycopg's path."""
        hot = self._hot.get(statement)
        if hot is not None and conn.pgconn.transaction_status == _IDLE:
            values = _text_params(params, hot[2], conn.lockapi_encoding)
            if values is not None:
                return _PreparedResult(_exec_prepared(conn, hot, values))
        cursor = conn.lockapi_cursor
        cursor.execute(statement, params)
        return cursor

    async_driver = "psycopg"

    async def async_connect(self, remaining: float) -> Any:
        conn = await _dropping_async_connection().connect(**self.connect_params(remaining),
                                                          options=self._session_options(), autocommit=True)
        conn.lockapi_cursor = conn.cursor()
        conn.lockapi_encoding = conn.info.encoding
        return conn

    async def async_execute(self, conn: Any, statement: str, params: dict[str, Any] | None) -> Any:
        """As :meth:`execute`, on libpq's non-blocking API (:func:`_round_trip`) driven by the
        connection's ``wait``: a settling connection settles the hot statements too, and the pool's
        deadline cuts them the same way. Its result's ``fetchone``/``fetchall`` are awaited."""
        hot = self._hot.get(statement)
        if hot is not None and params is not None and conn.pgconn.transaction_status == _IDLE:
            values = _text_params(params, hot[2], conn.lockapi_encoding)
            if values is not None:
                return _AsyncPreparedResult(await _async_exec_prepared(conn, hot, values))
        return await conn.lockapi_cursor.execute(statement, params)

    def async_fileno(self, conn: Any) -> int:
        return int(conn.fileno())

    def async_close(self, conn: Any) -> None:
        conn.pgconn.finish()  # AsyncConnection.close() is a coroutine; finishing libpq's side is enough

    async_settles = True

    def async_settle(self, conn: Any, settle: bool) -> None:
        conn.lockapi_settle = settle

    def ddl_connect_args(self) -> dict[str, Any]:
        return {"connect_timeout": max(1, math.ceil(self.timeout))}

    def fileno(self, conn: DBAPIConnection) -> int:
        return int(conn.fileno())

    def classify(self, exc: BaseException) -> str | None:
        import psycopg

        code = getattr(exc, "sqlstate", None) or ""
        if code in self._RETRY:
            return RETRY
        if code.startswith(self._CONFIG_PREFIXES) or "password authentication failed" in str(exc):
            return CONFIG
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and not code.startswith("57014"):
            return DEAD
        return None

    def is_driver_error(self, exc: BaseException) -> bool:
        import psycopg

        return isinstance(exc, psycopg.Error)


_UNDEFINED_STATEMENT = b"26000"  # invalid_sql_statement_name: not prepared on this connection (yet)
_DUPLICATE_STATEMENT = b"42P05"  # duplicate_prepared_statement


_BIGINT = 2**63


def _text_params(params: dict[str, Any], order: tuple[str, ...], encoding: str) -> list[bytes] | None:
    """``params`` in ``order`` as libpq text parameters, or None if one is not a ``bigint`` ``int`` (the
    type the server infers for every integer parameter of the hot statements; psycopg would send a
    larger one as numeric) or a string without NUL (libpq's text parameters end at a NUL)."""
    out = []
    for name in order:
        value = params[name]
        if type(value) is int and -_BIGINT <= value < _BIGINT:
            out.append(str(value).encode())
        elif type(value) is str and "\0" not in value:
            out.append(value.encode(encoding))
        else:
            return None
    return out


_COMMAND_OK, _TUPLES_OK = 1, 2
"""libpq's ``PGRES_COMMAND_OK``/``PGRES_TUPLES_OK`` (``psycopg.pq.ExecStatus``): a statement that ran."""
_IDLE = 0
"""libpq's ``PQTRANS_IDLE`` (``psycopg.pq.TransactionStatus``): no transaction open."""


_WAIT_R, _WAIT_RW, _READY_R = 1, 3, 1
"""psycopg's ``Wait.R``/``Wait.RW``/``Ready.R`` (``psycopg.waiting``): what a round trip's generator
yields to its connection's ``wait``, and the readiness sent back (0: none, the wait's poll interval)."""


def _succeeded(result: Any) -> bool:
    return bool(result.status == _TUPLES_OK or result.status == _COMMAND_OK)


def _recovery(conn: Any, result: Any) -> Generator[bool, Any, Any]:
    """What follows ``result``, a hot statement's failed first run on ``conn``, as steps for either API's
    runner (:func:`lockapi.spi.drive`, :func:`lockapi.aio.spi.drive_async`; a step is True: run the
    prepared statement again, False: prepare it; the answer is libpq's result): if the connection had
    not prepared it (SQLSTATE 26000: its first use, or lost by ``DEALLOCATE``), prepare it (one that
    exists meanwhile is fine) and run it again. Returns the successful result; a failure is raised as
    psycopg's exception (:func:`_pg_error`)."""
    from psycopg import pq

    if result.error_field(pq.DiagnosticField.SQLSTATE) == _UNDEFINED_STATEMENT:
        made = yield False
        if made.status != _COMMAND_OK and made.error_field(pq.DiagnosticField.SQLSTATE) != _DUPLICATE_STATEMENT:
            raise _pg_error(conn, made)
        result = yield True
        if _succeeded(result):
            return result
    raise _pg_error(conn, result)


def _exec_prepared(conn: DBAPIConnection, hot: tuple[bytes, bytes, tuple[str, ...]], values: list[bytes]) -> Any:
    """The result of the statement prepared as ``hot[0]`` on ``conn`` (preparing it first if the
    connection has not: :func:`_recovery`), or psycopg's exception for its failure. Blocking libpq."""
    pgconn = conn.pgconn
    result = pgconn.exec_prepared(hot[0], values)  # (a connection already broken raises OperationalError)
    if _succeeded(result):
        return result
    return drive(_recovery(conn, result),
                 lambda run: pgconn.exec_prepared(hot[0], values) if run else pgconn.prepare(hot[0], hot[1]))


async def _async_exec_prepared(conn: Any, hot: tuple[bytes, bytes, tuple[str, ...]], values: list[bytes]) -> Any:
    """:func:`_exec_prepared` on an asyncio connection: each round trip is :func:`_round_trip` driven by
    the connection's own ``wait`` (so a settling connection settles it, and the deadline's cut of the
    socket ends it, as on psycopg's path)."""
    result = await conn.wait(_round_trip(conn.pgconn, hot, values, True))
    if _succeeded(result):
        return result
    from lockapi.aio.spi import drive_async  # (not imported by sync-only users)

    return await drive_async(_recovery(conn, result),
                             lambda run: conn.wait(_round_trip(conn.pgconn, hot, values, run)))


def _round_trip(pgconn: Any, hot: tuple[bytes, bytes, tuple[str, ...]], values: list[bytes],
                run: bool) -> Generator[int, int, Any]:
    """One round trip on libpq's non-blocking API, as a psycopg wait generator: send the statement
    prepared as ``hot[0]`` with ``values`` (``run``), or prepare it; flush; read until libpq has the whole
    reply; return its result. A broken connection raises psycopg's ``OperationalError`` (libpq's)."""
    if run:
        pgconn.send_query_prepared(hot[0], values)
    else:
        pgconn.send_prepare(hot[0], hot[1])
    while pgconn.flush():  # (1: more to send; the server may be sending meanwhile)
        if (yield _WAIT_RW) & _READY_R:
            pgconn.consume_input()
    result = None
    while True:  # every result up to the end of the reply (get_result's None): the connection is idle again
        while pgconn.is_busy():
            if (yield _WAIT_R) & _READY_R:
                pgconn.consume_input()
        last = pgconn.get_result()
        if last is None:
            return result
        result = last


def _pg_error(conn: DBAPIConnection, result: Any) -> Exception:
    """psycopg's exception for a failed ``result``, as its cursor raises it: by SQLSTATE, and a connection
    lost on the way (no SQLSTATE, the connection bad: e.g. cut by the watchdog) as ``OperationalError``."""
    from psycopg import errors, pq

    encoding = conn.lockapi_encoding
    if conn.pgconn.status == pq.ConnStatus.BAD and not result.error_field(pq.DiagnosticField.SQLSTATE):
        return errors.OperationalError(result.get_error_message(encoding) or "the connection to the server was lost")
    return errors.error_from_result(result, encoding=encoding)


class _PreparedResult:
    """The cursor-like view :func:`lockapi_sql.connections.read` reads of a hot statement's result."""

    __slots__ = ("_result",)

    def __init__(self, result: Any) -> None:
        self._result = result

    @property
    def rowcount(self) -> int:
        count = self._result.command_tuples
        return -1 if count is None else int(count)

    def fetchone(self) -> tuple[Any, ...] | None:
        result = self._result
        if not result.ntuples:
            return None
        return tuple(result.get_value(0, i) for i in range(result.nfields))

    def fetchall(self) -> list[tuple[Any, ...]]:
        result = self._result
        return [tuple(result.get_value(r, i) for i in range(result.nfields)) for r in range(result.ntuples)]


class _AsyncPreparedResult(_PreparedResult):
    """:class:`_PreparedResult` as :class:`lockapi_sql.aio_connections.AsyncSession` reads it (awaited)."""

    __slots__ = ()

    async def fetchone(self) -> tuple[Any, ...] | None:  # type: ignore[override]
        return _PreparedResult.fetchone(self)

    async def fetchall(self) -> list[tuple[Any, ...]]:  # type: ignore[override]
        return _PreparedResult.fetchall(self)


@functools.cache
def _dropping_async_connection() -> Any:
    """psycopg's ``AsyncConnection``, except that a wait interrupted by a cancellation (or
    KeyboardInterrupt/SystemExit) closes the connection at once and lets the interruption go on.

    psycopg itself answers one by asking the server to cancel the query and waiting for that (up to
    5 + 5 s, which a frozen server never grants) before the CancelledError goes on; the pool drops a
    cancelled call's connection anyway (its state is unknown), and the server rolls back whatever it
    had open when the connection ends. Doing it here, in the one method every one of psycopg's
    asyncio round trips goes through, costs nothing per call (a task per call that kept the
    cancellation away from psycopg cost three loop iterations, about 12 us a call).

    A connection marked settling (:meth:`PostgreSQL.async_settle`, for the calls of
    :meth:`lockapi_sql.aio_connections.AsyncConnections.settled`) waits with ``_settling_wait``
    instead: a cancellation neither interrupts the statement nor drops the connection.
    """
    import asyncio
    import inspect

    import psycopg
    from psycopg import errors, waiting
    from psycopg.waiting import READY_R, READY_W, WAIT_R, WAIT_W

    interval = inspect.signature(psycopg.AsyncConnection.wait).parameters["interval"].default
    # psycopg's own default (0.1 s): wait_async's (0) would wake the loop at once, a busy wait

    async def _settling_wait(gen: Any, fileno: int, interval: float) -> Any:
        """psycopg's ``wait_async`` (drive the generator ``gen`` of one round trip on ``fileno``), except
        that a cancellation does not interrupt it: the same statement's reply is read on and returned,
        and the cancellation is left to the caller to find (``Task.cancelling()``), as
        :attr:`lockapi.aio.spi.AsyncBackend.settles_cancelled_attempts` says. It still ends when the
        socket breaks: the pool's deadline timer shuts it down (an ``OperationalError``, as psycopg
        raises). Every ``interval`` the generator is polled with no readiness, as psycopg does."""
        loop = asyncio.get_running_loop()
        ready = 0
        fut: asyncio.Future[None] | None = None

        def wakeup(state: int) -> None:
            nonlocal ready
            ready |= state
            if fut is not None and not fut.done():
                fut.set_result(None)

        try:
            state = next(gen)
            while True:
                ready = 0
                reader, writer = state & WAIT_R, state & WAIT_W
                if reader:
                    loop.add_reader(fileno, wakeup, READY_R)
                if writer:
                    loop.add_writer(fileno, wakeup, READY_W)
                try:
                    while True:
                        fut = loop.create_future()
                        timer = loop.call_later(interval, _resolve, fut)
                        try:
                            await fut
                            break
                        except asyncio.CancelledError:  # settle: wait on for this statement's reply
                            if ready:
                                break
                        finally:
                            timer.cancel()
                            fut = None
                finally:
                    if reader:
                        loop.remove_reader(fileno)
                    if writer:
                        loop.remove_writer(fileno)
                state = gen.send(ready)
        except OSError as exc:
            raise errors.OperationalError("connection socket closed") from exc
        except StopIteration as stop:
            return stop.value

    class DroppingAsyncConnection(psycopg.AsyncConnection[Any]):
        lockapi_settle = False
        """Set by :meth:`PostgreSQL.async_settle`: a cancellation does not interrupt a statement."""

        async def wait(self, gen: Any, interval: float = interval, *args: Any, **kwargs: Any) -> Any:
            try:
                if self.lockapi_settle:
                    return await _settling_wait(gen, self.pgconn.socket, interval)
                return await waiting.wait_async(gen, self.pgconn.socket, interval, *args, **kwargs)
            except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                self.pgconn.finish()
                raise

    return DroppingAsyncConnection


def _resolve(fut: Any) -> None:
    if not fut.done():
        fut.set_result(None)


class MySQL(Dialect):
    """MariaDB and MySQL through PyMySQL: autocommit, READ COMMITTED, socket read/write timeouts,
    ``CLIENT.FOUND_ROWS`` (an UPDATE's row count is the rows its WHERE matched)."""

    scheme = "mysql"
    driver = "pymysql"
    needs_watchdog = True
    now = "TIMESTAMPDIFF(MICROSECOND, TIMESTAMP'1970-01-01 00:00:00', UTC_TIMESTAMP(6))"
    """The epoch as a typed literal: a string there was converted to a date on every evaluation
    (``BENCHMARK``: 0.47 against 0.20 us each). ``UTC_TIMESTAMP`` is the time the statement started,
    so every read of it in one statement (a claim's SET and WHERE) sees the same time."""
    returning = False
    server_wait: ClassVar[bool] = False
    """Waiters are woken by a server-side wait loop (:mod:`lockapi_sql.waitloop`) by default: MariaDB's
    anonymous blocks; MySQL has none (a ``mysql://`` URL may turn it on with ``watch=true`` for a MariaDB
    server)."""
    batch_chunk = 2000  # PyMySQL binds client-side: no parameter limit; 2,000 names of 1 KB stay under 4 MB packets
    _RETRY = frozenset({1213, 1205})  # deadlock, lock wait timeout
    _CONFIG = frozenset({1044, 1045, 1049, 1142, 1698})  # access denied, unknown database, no privilege
    _DEAD = frozenset({2003, 2006, 2013, 2014, 2055})  # cannot connect, gone away, lost, out of sync

    def __init__(self, url: URL, timeout: float, options: Any) -> None:
        super().__init__(url, timeout, options)
        self.params = _driver_params(self.url)

    def _session(self, remaining: float) -> dict[str, Any]:
        """Connect arguments both drivers take (aiomysql's are PyMySQL's)."""
        from pymysql.constants import CLIENT  # type: ignore[import-untyped]

        lock_wait = max(1, math.ceil(self.timeout))
        params = {k: v for k, v in self.params.items() if k != "client_flag"}
        return {**params, "autocommit": True, "client_flag": CLIENT.FOUND_ROWS,
                "connect_timeout": max(0.001, remaining), "charset": "utf8mb4",
                "init_command": f"SET SESSION innodb_lock_wait_timeout = {lock_wait}"}

    _READ_COMMITTED = "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"

    def connect(self, remaining: float, read_timeout: float | None = None) -> DBAPIConnection:
        """A PyMySQL connection whose socket has the read/write timeouts while it connects and none
        afterwards: a socket with a timeout waits in ``poll`` before every ``recv`` (two system calls per
        read, about 6 us of client CPU per acquire+release cycle), while every call on the connection
        is guarded by the watchdog anyway (:attr:`needs_watchdog`), which shuts the socket down when
        the call's deadline passes. With ``read_timeout`` the socket keeps its timeouts, one read of a
        reply taking up to ``read_timeout``: for a connection no watchdog guards (the server-side wait of
        :mod:`lockapi_sql.waitloop`). The socket is made here (over TCP; PyMySQL makes its own for a Unix
        socket or a bind address) and handed to PyMySQL's public ``connect(sock)``; PyMySQL sets a
        socket's timeout only when its own read/write timeout changes, which ours never do."""
        import pymysql  # type: ignore[import-untyped]

        deadline = time.monotonic() + remaining
        session = self._session(remaining)
        conn = pymysql.connect(**session, read_timeout=read_timeout or self.timeout, write_timeout=self.timeout,
                               defer_connect=True)
        sock = None
        try:
            if not session.get("unix_socket") and not session.get("bind_address"):
                sock = _tcp(session.get("host") or "localhost", session.get("port") or 3306,
                            max(0.001, deadline - time.monotonic()))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            conn.connect(sock)
            conn.lockapi_cursor = conn.cursor()
            conn.lockapi_cursor.execute(self._READ_COMMITTED)
        except BaseException:
            if conn.open:
                conn.close()
            elif sock is not None:
                sock.close()
            raise
        if read_timeout is None and sock is not None and sock.fileno() >= 0:  # (TLS: the wrapper keeps it)
            sock.settimeout(None)
        return conn

    async_driver = "aiomysql"

    async def async_connect(self, remaining: float) -> Any:
        """aiomysql: PyMySQL's protocol code on asyncio streams, so the same client flags (FOUND_ROWS),
        ``lastrowid`` from ``LAST_INSERT_ID(expr)`` and the same error classes and codes."""
        import aiomysql  # type: ignore[import-untyped]

        params = self._session(remaining)
        params["db"] = params.pop("database", None)
        conn = await aiomysql.connect(**params, cursorclass=_quiet_cursor(aiomysql.Cursor))
        try:
            await self.async_execute(conn, self._READ_COMMITTED, None)
        except BaseException:
            conn.close()
            raise
        return conn

    async def async_execute(self, conn: Any, statement: str, params: dict[str, Any] | None) -> Any:
        cursor = await conn.cursor()
        await cursor.execute(statement, params)
        return cursor

    def async_fileno(self, conn: Any) -> int:
        return int(conn._writer.transport.get_extra_info("socket").fileno())

    def async_close(self, conn: Any) -> None:
        conn.close()  # closes the transport; ensure_closed() would wait for the server

    def classify(self, exc: BaseException) -> str | None:
        code = mysql_error_code(exc)
        if code in self._RETRY:
            return RETRY
        if code in self._CONFIG:
            return CONFIG
        import pymysql

        if code in self._DEAD or isinstance(exc, pymysql.err.InterfaceError):
            return DEAD
        return None

    def is_driver_error(self, exc: BaseException) -> bool:
        import pymysql

        return isinstance(exc, pymysql.err.Error)

    def next_fence(self, table: str) -> str:
        return f"LAST_INSERT_ID({super().next_fence(table)})"

    def upsert(self, table: str, columns: str, rows: str, keys: str) -> str:
        return f"INSERT INTO {table} ({columns}) VALUES {rows} ON DUPLICATE KEY UPDATE "

    def new(self, column: str) -> str:
        return f"VALUES({column})"

    def insert_missing(self, table: str, columns: str, rows: str) -> str:
        return f"INSERT IGNORE INTO {table} ({columns}) VALUES {rows}"

    def fileno(self, conn: DBAPIConnection) -> int:
        return int(conn._sock.fileno())

    def ddl_connect_args(self) -> dict[str, Any]:
        return {"connect_timeout": self.timeout, "read_timeout": self.timeout, "write_timeout": self.timeout}


def _tcp(host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to a MySQL/MariaDB server; failing, the error PyMySQL raises for it (an
    ``OperationalError`` 2003, "can't connect"), so it is classified as every other driver error."""
    import pymysql

    try:
        return socket.create_connection((host, port), timeout)
    except OSError as exc:
        raise pymysql.err.OperationalError(2003, f"Can't connect to MySQL server on {host!r} ({exc})") from exc


@functools.cache
def _quiet_cursor(base: type) -> type:
    """aiomysql's cursor without its ``SHOW WARNINGS`` round trip after a statement that warned (an
    ``INSERT IGNORE`` of an existing row does, by design); PyMySQL no longer makes it either."""

    class QuietCursor(base):  # type: ignore[misc]
        async def _show_warnings(self, conn: Any) -> None:
            return None

    return QuietCursor


class MariaDB(MySQL):
    """MariaDB: MySQL's, plus the server-side wait (:mod:`lockapi_sql.waitloop`) and the hot statements
    (a claim and a lock's release) prepared server-side once per connection and run as ``EXECUTE name
    USING <literals>`` (MariaDB >= 10.2; MySQL's ``EXECUTE`` takes only user variables, so ``mysql://``
    runs the plain statements). A prepared statement is parsed once: the claim + release cycle cost
    about 20 us less server CPU than the same statements sent in full (whose parse grew with their
    length: about twice the raw anchor's), and the client sends and formats a much shorter text."""

    scheme = "mariadb"
    server_wait: ClassVar[bool] = True
    _UNKNOWN_STATEMENT = 1243  # ER_UNKNOWN_STMT_HANDLER: not prepared on this connection (yet)

    def __init__(self, url: URL, timeout: float, options: Any) -> None:
        super().__init__(url, timeout, options)
        self._prepare: dict[str, tuple[str, str]] = {}
        """``EXECUTE`` statement -> (the ``PREPARE`` that must run first on a connection, the plain
        statement to run instead when the server can hold no more prepared statements)."""
        self._using: dict[str, tuple[str, tuple[str, ...]]] = {}
        """``EXECUTE`` statement -> (its text up to ``USING``, the parameters it passes, in order)."""

    def prepared(self, name: str, statement: str) -> str:
        """As :meth:`Dialect.prepared`, for a statement that changes rows (``UPDATE``, ``INSERT``,
        ``DELETE``): its reply is one OK packet, which :meth:`execute` reads itself."""
        if (not _PREPARED_NAME.fullmatch(name) or any(c in statement for c in "?%\\")
                or not statement.lstrip().upper().startswith(("UPDATE ", "INSERT ", "DELETE "))):
            raise ValueError(f"cannot prepare {name!r}: {statement!r}")  # (our own statements: a bug)
        params = tuple(_NAMED.findall(statement))
        head = f"EXECUTE {name}" + (" USING " if params else "")
        run = head + ", ".join(f"%({p})s" for p in params)
        self._prepare[run] = (f"PREPARE {name} FROM '{_NAMED.sub('?', statement).replace(chr(39), chr(39) * 2)}'",
                              self.compile(statement))
        self._using[run] = (head, params)
        return run

    def execute(self, conn: DBAPIConnection, statement: str, params: dict[str, Any]) -> Any:
        """As :meth:`Dialect.execute`; a prepared statement's ``EXECUTE`` is written here (:func:`_literals`,
        not PyMySQL's escaping of every parameter: 1-3 us less client CPU a statement) and run as one
        command whose OK packet is read here (:func:`_command`), and one this connection has not
        prepared yet (each connection's first use of it) is prepared and run again (:meth:`_recovery`):
        no check on the hot path."""
        using = self._using.get(statement)
        if using is None:
            cursor = conn.lockapi_cursor
            cursor.execute(statement, params)
            return cursor
        text = using[0] + _literals(conn, params, using[1])
        try:
            return _command(conn, text)
        except Exception as exc:
            cursor = conn.lockapi_cursor
            drive(self._recovery(exc, statement, (text, None), params), lambda step: cursor.execute(*step))
            return cursor

    async def async_execute(self, conn: Any, statement: str, params: dict[str, Any] | None) -> Any:
        cursor = await conn.cursor()
        try:
            await cursor.execute(statement, params)
        except Exception as exc:
            from lockapi.aio.spi import drive_async  # (not imported by sync-only users)

            await drive_async(self._recovery(exc, statement, (statement, params), params),
                              lambda step: cursor.execute(*step))
        return cursor

    _TOO_MANY_PREPARED = 1461  # ER_MAX_PREPARED_STMT_COUNT_REACHED (max_prepared_stmt_count, server-wide)

    def _recovery(self, exc: Exception, statement: str, again: tuple[str, Any],
                  params: dict[str, Any] | None) -> Generator[tuple[str, Any], Any, None]:
        """What follows ``exc``, the failure of ``statement`` (as :meth:`prepared` returned it), as
        ``(statement, params)`` steps for either API's runner to run (:func:`lockapi.spi.drive`): if the
        connection had not prepared it, ``PREPARE`` it and run ``again``; if the server can hold no more
        prepared statements (``max_prepared_stmt_count``, counted over every session), the plain
        statement instead (prepared again on the connection's next use). Any other failure is raised."""
        if mysql_error_code(exc) != self._UNKNOWN_STATEMENT or statement not in self._prepare:
            raise exc
        prepare, plain = self._prepare[statement]
        try:
            yield prepare, None
        except Exception as full:
            if mysql_error_code(full) != self._TOO_MANY_PREPARED:
                raise
            yield plain, params
        else:
            yield again


_COM_QUERY = 3


class _Ok:
    """The cursor-like view :func:`lockapi_sql.connections.read` reads of an OK packet (:func:`_command`)."""

    __slots__ = ("lastrowid", "rowcount")

    def __init__(self, rowcount: int, lastrowid: int) -> None:
        self.rowcount = rowcount
        self.lastrowid = lastrowid


def _command(conn: DBAPIConnection, text: str) -> _Ok:
    """Run ``text``, a statement that changes rows, on PyMySQL's connection as one ``COM_QUERY`` and read
    its OK packet here: PyMySQL's own packet layer (``_execute_command``, ``_read_packet``: the sequence
    check, a lost connection's ``OperationalError`` 2013 that closes it, and a server error raised as
    its exception class) without its cursor and result objects, about 15 us less client CPU a
    statement (nearly half of PyMySQL's). A reply that is not an OK packet (rows: never for the
    statements :meth:`MariaDB.prepared` accepts) leaves rows unread, so it is ``OperationalError``
    2014 ("commands out of sync"), for which the pool discards the connection."""
    conn._execute_command(_COM_QUERY, text)
    data = conn._read_packet().get_all_data()  # an error packet was raised as the server's error
    if data[0] != 0:
        import pymysql

        raise pymysql.err.OperationalError(2014, "Command Out of Sync: lockapi expected an OK packet, got rows")
    rowcount, at = _length_encoded(data, 1)
    lastrowid, at = _length_encoded(data, at)
    conn.server_status = data[at] | data[at + 1] << 8  # as PyMySQL's own OK packet reader keeps it
    return _Ok(rowcount, lastrowid)


def _length_encoded(data: bytes, at: int) -> tuple[int, int]:
    """The length-encoded integer of the MySQL protocol at ``data[at]``, and the offset after it."""
    first = data[at]
    if first < 0xFB:
        return first, at + 1
    size = {0xFC: 2, 0xFD: 3, 0xFE: 8}[first]
    return int.from_bytes(data[at + 1:at + 1 + size], "little"), at + 1 + size


def mysql_error_code(exc: BaseException) -> int | None:
    """A PyMySQL/aiomysql error's server error code (its first argument), or None."""
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _literals(conn: DBAPIConnection, params: dict[str, Any], names: tuple[str, ...]) -> str:
    """``params[name]`` for each of ``names`` as SQL literals, comma-separated: an ``int`` as digits, a
    string of printable ASCII without a quote or a backslash (name hashes, lockapi's holder ids such as
    ``host:pid:3f2a..:7``: nothing in it is special inside a quoted literal, whatever the sql_mode or
    the connection's character set) between quotes as it is, anything else by the connection's own
    escaping (which follows the server's ``NO_BACKSLASH_ESCAPES``)."""
    out = []
    for name in names:
        value = params[name]
        if type(value) is int:
            out.append(str(value))
        elif type(value) is str and value.isascii() and value.isprintable() and "'" not in value \
                and "\\" not in value:
            out.append("'" + value + "'")
        else:
            out.append(conn.escape(value))
    return ", ".join(out)


_PREPARED_NAME = re.compile(r"[a-z_]{1,64}")


DIALECTS: dict[str, type[Dialect]] = {}
for _dialect in (SQLite, PostgreSQL, MySQL, MariaDB):
    for _scheme in (_dialect.scheme, *_dialect.aliases):
        DIALECTS[_scheme] = _dialect
