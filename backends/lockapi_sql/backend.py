"""The SQL lease-row backend: locks, semaphores, fair queues and done markers in ordinary tables.

Every time comparison uses the database's clock, so clients with skewed clocks agree. The hot operations
(acquire, release, extend, holds, inspect) are one prepared statement each in autocommit; the fair queue
and semaphores are one short transaction. A lock's fencing token goes up by one on every grant and rows
are never deleted, so tokens never repeat. One class per dialect (below) says what that dialect can do;
the statements are written once, in :mod:`lockapi_sql.statements`, and the operations once, as plans
(:mod:`lockapi_sql.plans`) that this class runs on blocking connections and
:mod:`lockapi_sql.aio_backend` on asyncio ones.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, Protocol, TypeVar

import sqlalchemy as sa

from lockapi.spi import (
    Attempt,
    Backend,
    BackendConfig,
    BackendUnavailable,
    Capability,
    ConfigError,
    LockError,
    LockInfo,
    Wake,
    drive,
)
from lockapi_sql.connections import Connections
from lockapi_sql.dialects import DIALECTS, Dialect, MariaDB, MySQL, PostgreSQL, SQLite
from lockapi_sql.plans import CHUNK, First, Plan, Plans, seconds
from lockapi_sql.schema import DEFAULT_PREFIX, LOCK, SEMAPHORE, Tables, key_of
from lockapi_sql.statements import Statements, payload

T = TypeVar("T")


class _Runner(Protocol):
    def __call__(self, plan: Callable[..., Plan[T]], /, *args: Any) -> T: ...


class _DirectRunner(Protocol):
    def __call__(self, first: Callable[..., First[T]], /, *args: Any) -> T: ...


class SQLBackend(Backend):
    """Lease rows in SQLite, PostgreSQL or MariaDB/MySQL; the dialect comes from the URL's scheme.

    Options: ``table_prefix`` (default ``lockapi_``), ``pool_size`` (5), ``max_overflow`` (10),
    ``create_schema`` (true: create missing tables and columns on first use); on PostgreSQL ``listen``
    (true: push wake-ups over LISTEN/NOTIFY; turn off behind a transaction-pooling proxy) and ``notify``
    (``waited``: a lock's release notifies only while a waiter has marked its row; ``always``: every
    release notifies, for the window of a rolling upgrade from a version whose waiters do not mark,
    docs/backends/sql.md); on MariaDB/MySQL ``watch``
    (push wake-ups from a server-side wait; true on ``mariadb://``, false on ``mysql://``: MySQL cannot run
    it) and ``watch_interval`` (0.001: seconds between its checks); on SQLite ``synchronous``
    (``normal`` or ``full``, see docs/backends/sql.md).
    """

    dialect_type: ClassVar[type[Dialect] | None] = None
    """The dialect of a per-dialect subclass; None: chosen from the URL's scheme."""
    description = "SQL lease rows: SQLite, PostgreSQL, MariaDB/MySQL"
    capabilities = frozenset({Capability.MULTI_PROCESS, Capability.BACKEND_EXPIRY, Capability.FAIR,
                              Capability.ITER_DONE, Capability.ADMIN})
    capabilities_vary = "per dialect: see the sqlite, postgresql and mariadb entries"
    contended_pause_points = frozenset({"acquire_fair:denied"})
    pause_points = contended_pause_points

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        dialect_type = DIALECTS.get(config.scheme)
        if dialect_type is None or not issubclass(dialect_type, self.dialect_type or Dialect):
            served = sorted(s for s, d in DIALECTS.items() if issubclass(d, self.dialect_type or Dialect))
            raise ConfigError(f"{type(self).__name__} serves {', '.join(served)}, not {config.scheme!r}")
        options = config.options
        self.tables = Tables(options.str("table_prefix", DEFAULT_PREFIX) or DEFAULT_PREFIX)
        self.pool_size = pool_size = options.int("pool_size", 5, minimum=1)
        self.max_overflow = max_overflow = options.int("max_overflow", 10, minimum=0)
        self._create_schema = options.bool("create_schema", True)
        listen = options.bool("listen", True) if dialect_type.notifies else False
        notify_always = (options.str("notify", "waited", choices=("waited", "always")) == "always"
                         if dialect_type.notifies else False)
        wait_loop = (options.bool("watch", issubclass(dialect_type, MariaDB))
                     if issubclass(dialect_type, MySQL) else False)
        watch_interval = options.float("watch_interval", 0.001) if issubclass(dialect_type, MySQL) else 0.001
        try:
            self.dialect = dialect_type(_parse_url(config), config.timeout, options)
        except ImportError as exc:
            raise ConfigError(f"the {dialect_type.driver} driver is not installed (pip install 'lockapi[sql]'): "
                              f"{exc}") from None
        options.finish()
        self.engine = sa.create_engine(self.dialect.url, poolclass=sa.pool.NullPool,
                                       connect_args=self.dialect.ddl_connect_args())
        """A SQLAlchemy engine (no pool) for the DDL and for people reading the tables; locking does not
        use it."""
        self.connections = Connections(self.dialect, size=pool_size, overflow=max_overflow,
                                       timeout=config.timeout, where=config.redacted_url)
        self.sql = Statements(self.dialect, self.tables, notify=listen, always=notify_always)
        self._listener = None
        if listen and isinstance(self.dialect, PostgreSQL):
            from lockapi_sql.listener import Listener

            self._listener = Listener(self.dialect.connect_params(config.timeout), self.tables.notify_channel,
                                      timeout=config.timeout)
        self.wait_loop = None
        """MariaDB's server-side wait that wakes watchers (:mod:`lockapi_sql.waitloop`), or None."""
        if wait_loop and isinstance(self.dialect, MySQL):
            from lockapi_sql.statements import WaitStatements
            from lockapi_sql.waitloop import WaitLoop

            dialect = self.dialect
            self.wait_loop = WaitLoop(lambda read_timeout: dialect.connect(config.timeout, read_timeout),
                                      dialect.fileno, WaitStatements(dialect, self.tables),
                                      timeout=config.timeout, interval=watch_interval)
        caps = set(type(self).capabilities)
        if self.dialect.multi_host:
            caps.add(Capability.MULTI_HOST)
        if self.dialect.returning:
            caps.add(Capability.ATOMIC_BATCH)
        if self._listener is not None or self.wait_loop is not None:
            caps.add(Capability.PUSH_WAKEUP)
        self.capabilities = frozenset(caps)
        self.pause_points = self.contended_pause_points | (
            frozenset() if self.dialect.returning else frozenset({"acquire:created"}))
        self.plans = Plans(self.dialect, self.tables, self.sql)
        """The operations (:mod:`lockapi_sql.plans`), run here by :attr:`connections`."""
        self._acquire_first = self.plans.acquire_first  # bound once: the two calls of every cycle
        self._release_first = self.plans.release_first
        self._schema_lock = threading.Lock()
        self._schema_failure: LockError | None = None
        self.schema_tries = 0
        """Attempts of :meth:`ensure_schema` that failed so far (see its ``waited_since``)."""
        # With create_schema off, a backend whose statements name waited_us (PostgreSQL's marks) looks
        # once that the table has it: a table of an earlier version gets a clear error, not failing releases.
        self._schema_ready = not self._create_schema and not self.sql.notify
        self._call: _Runner = self.connections.call if self._schema_ready else self._first_call
        """Runs one call's plan (``self._call(plan, *args)``)."""
        self._direct: _DirectRunner = self.connections.direct if self._schema_ready else self._first_direct
        """Runs one call's direct plan (``self._direct(plans.x_first, *args)``; the hot single-statement
        operations, see :mod:`lockapi_sql.plans`)."""

    # -- plumbing ---------------------------------------------------------------------------------------
    def ensure_schema(self, *, force: bool = False, waited_since: int | None = None) -> None:
        """Create the tables if they are missing (with ``create_schema`` off: check that they have this
        version's columns); concurrent creators (other processes) are fine.

        Runs on the first operation unless ``create_schema`` is off; ``force`` runs it now regardless.
        Callers queued behind one attempt share its failure instead of each waiting the ``timeout`` again
        (a server that never answers): a call that finds an attempt failed while it waited raises that
        error. ``waited_since``: :attr:`schema_tries` when the caller began to wait, if before this call
        (the asyncio backend queues its callers itself).
        """
        if self._schema_ready and not force:
            return
        tries = self.schema_tries if waited_since is None else waited_since
        with self._schema_lock:
            if self._schema_ready and not force:
                return
            failure = self._schema_failure
            if failure is not None and self.schema_tries != tries and not force:
                raise type(failure)(str(failure)) from failure
            try:
                try:
                    if self._create_schema:
                        self.tables.create(self.engine, deadline=time.monotonic() + self.config.timeout)
                    elif not self._has_added_columns():
                        return  # no tables yet: calls fail as on any missing table, and look again next time
                except (sa.exc.DBAPIError, sa.exc.TimeoutError) as exc:
                    cause = getattr(exc, "orig", None) or exc
                    raise self.connections.translate(cause, self.dialect.classify(cause)) from exc
            except LockError as error:
                self._schema_failure, self.schema_tries = error, self.schema_tries + 1
                raise
            self._schema_ready = True
            self._call = self.connections.call  # the hot path: straight to the pool
            self._direct = self.connections.direct

    def _has_added_columns(self) -> bool:
        """With ``create_schema`` off: False if the leases table does not exist; raises ConfigError if it
        lacks a column this version's statements use (a table of an earlier version)."""
        with self.engine.connect() as conn:
            if self.tables.leases.name in self.tables.missing(conn):
                return False
            missing = self.tables.missing_columns(conn)
        if missing:
            raise ConfigError(
                f"table {self.tables.leases.name} was created by an earlier lockapi and lacks column(s) "
                f"{', '.join(missing)}; with create_schema=false add them first (`lockapi sql ddl URL` prints "
                f"the ALTER TABLE; earlier versions keep working on the upgraded table), or let lockapi add "
                f"them with create_schema=true")
        return True

    @property
    def schema_ready(self) -> bool:
        """The tables exist (created, or ``create_schema`` is off)."""
        return self._schema_ready

    def _first_call(self, plan: Callable[..., Plan[T]], *args: Any) -> T:
        """:attr:`_call` until the tables exist: creates them first."""
        self.ensure_schema()
        return self.connections.call(plan, *args)

    def _first_direct(self, first: Callable[..., First[T]], *args: Any) -> T:
        """:attr:`_direct` until the tables exist: creates them first."""
        self.ensure_schema()
        return self.connections.direct(first, *args)

    def _call_step(self, call: tuple[Any, ...]) -> Any:
        return self._call(*call)

    # -- locks ------------------------------------------------------------------------------------------
    def try_acquire(self, name: str, holder: str, ttl: float, *, queue_ttl: float | None = None) -> Attempt:
        if queue_ttl is None:
            return self._direct(self._acquire_first, name, holder, ttl)
        return drive(self.plans.acquire_fair(name, holder, ttl, queue_ttl), self._call_step)

    def cancel_wait(self, name: str, holder: str) -> None:
        self._call(self.plans.cancel_wait, name, holder)

    def release(self, name: str, holder: str, token: int) -> bool:
        return self._direct(self._release_first, name, holder, token)

    def extend(self, name: str, holder: str, token: int, ttl: float) -> bool:
        return self._direct(self.plans.extend_first, name, holder, token, ttl)

    def inspect(self, name: str) -> LockInfo | None:
        return lock_info(name, self._call(self.plans.inspect, name))

    def holds(self, name: str, holder: str, token: int) -> bool:
        return self._direct(self.plans.holds_first, name, holder, token)

    def try_acquire_many(
        self, names: Sequence[str], holder: str, ttl: float, *, skip_done: bool = False
    ) -> dict[str, int]:
        """All names in one transaction, chunked per dialect; see :meth:`lockapi_sql.plans.Plans.acquire_many`."""
        if not names:
            return {}
        return self._call(self.plans.acquire_many, names, holder, ttl, skip_done)

    # -- semaphores -------------------------------------------------------------------------------------
    def try_acquire_permit(self, name: str, permits: int, holder: str, ttl: float) -> Attempt:
        """One transaction; see :meth:`lockapi_sql.plans.Plans.acquire_permit`."""
        return self._call(self.plans.acquire_permit, name, permits, holder, ttl)

    def release_permit(self, name: str, holder: str, token: int) -> bool:
        return self._direct(self.plans.release_first, name, holder, token, True)

    def extend_permit(self, name: str, holder: str, token: int, ttl: float) -> bool:
        return self._direct(self.plans.extend_first, name, holder, token, ttl, True)

    def holds_permit(self, name: str, holder: str, token: int) -> bool:
        return self._direct(self.plans.holds_first, name, holder, token, True)

    # -- done markers -----------------------------------------------------------------------------------
    def mark_done(self, name: str, ttl: float) -> None:
        self._call(self.plans.mark_done, name, ttl)

    def done(self, names: Sequence[str]) -> set[str]:
        if not names:
            return set()
        return self._call(self.plans.done, names)

    def iter_done(self) -> Iterator[tuple[str, float]]:
        """Pages of 500 markers in ``name_hash`` order, each page its own statement."""
        after = ""
        while True:
            page = self._call(self.plans.done_page, after)
            for _, name, left in page:
                yield name, seconds(left) or 0.0
            if len(page) < CHUNK:
                return
            after = page[-1][0]

    # -- administration ---------------------------------------------------------------------------------
    def set_fence_floor(self, name: str, token: int, *, semaphore: bool = False) -> None:
        self._call(self.plans.set_fence_floor, name, token, semaphore)

    def force_release(self, name: str) -> bool:
        return self._call(self.plans.force_release, name)

    # -- waiting and lifecycle --------------------------------------------------------------------------
    def watch(
        self, name: str, wake: Wake, *, semaphore: bool = False, holder: str | None = None
    ) -> contextlib.AbstractContextManager[None]:
        kind = SEMAPHORE if semaphore else LOCK
        if self.wait_loop is not None:
            return self.wait_loop.watch(kind, key_of(name), wake, holder)
        if self._listener is None:
            return contextlib.nullcontext()
        watch = self._listener.watch(payload(kind, key_of(name)), wake, holder)
        return watch if semaphore else self._marked(watch, name, wake)

    @contextlib.contextmanager
    def _marked(self, watch: contextlib.AbstractContextManager[None], name: str, wake: Wake) -> Iterator[None]:
        """``watch`` (the LISTEN subscription), then the lock row's mark, so that releases announce
        themselves while a waiter waits (:attr:`lockapi_sql.statements.Statements.mark`); ``wake`` at once
        if the lock may be free already. A mark that cannot be written (the database is down) also wakes:
        the waiter's re-check meets the error itself."""
        with watch, self.plans.watching(name):
            try:
                free = self._call(self.plans.mark, name)
            except BackendUnavailable:
                free = True
            if free:
                wake()
            yield

    def ping(self) -> None:
        self._call(self.plans.ping)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        if self.wait_loop is not None:
            self.wait_loop.close()
        self.connections.close()
        self.engine.dispose()


class SQLiteBackend(SQLBackend):
    """SQLite: one file shared by the processes of one host; push-free, atomic batches."""

    dialect_type = SQLite
    description = "SQLite lease rows (one host; WAL; synchronous=normal by default)"
    capabilities = SQLBackend.capabilities | {Capability.ATOMIC_BATCH}
    capabilities_vary = ""


class PostgresBackend(SQLBackend):
    """PostgreSQL: many hosts, atomic batches, push wake-ups over LISTEN/NOTIFY."""

    dialect_type = PostgreSQL
    description = "PostgreSQL lease rows (psycopg 3; LISTEN/NOTIFY wake-ups)"
    capabilities = SQLBackend.capabilities | {Capability.MULTI_HOST, Capability.ATOMIC_BATCH}
    capabilities_vary = "push_wakeup unless the URL has listen=false"


class MariaDBBackend(SQLBackend):
    """MariaDB and MySQL: many hosts; batches are one transaction (not one statement); on MariaDB push
    wake-ups from a server-side wait (:mod:`lockapi_sql.waitloop`)."""

    dialect_type = MySQL
    description = "MariaDB/MySQL lease rows (PyMySQL; server-side wait wake-ups on MariaDB)"
    capabilities = SQLBackend.capabilities | {Capability.MULTI_HOST}
    capabilities_vary = "push_wakeup on mariadb:// URLs unless watch=false (on mysql:// with watch=true)"


def lock_info(name: str, row: Any) -> LockInfo | None:
    """:meth:`~lockapi.spi.Backend.inspect`'s answer from the row :meth:`Plans.inspect` read."""
    if row is None:
        return None
    return LockInfo(name=name, holder=row[0], token=int(row[1]), ttl_remaining=seconds(row[2]) or 0.0)


def _parse_url(config: BackendConfig) -> sa.engine.URL:
    url = config.url
    if url.lower().startswith("postgres://") or url.lower().startswith("postgres+"):
        url = "postgresql" + url[len("postgres"):]
    try:
        return sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:  # ValueError: e.g. a port that is not a number
        raise ConfigError(f"bad SQL URL {config.redacted_url}: {exc}") from None


__all__ = ["BackendUnavailable", "MariaDBBackend", "PostgresBackend", "SQLBackend", "SQLiteBackend"]
