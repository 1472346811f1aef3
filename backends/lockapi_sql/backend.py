"""The SQL lease-row backend: locks, semaphores, fair queues and done markers in ordinary tables.

Every operation is one short transaction on the backend's own SQLAlchemy engine, and every time
comparison uses the database's clock (see :mod:`lockapi_sql.dialects`), so clients with skewed clocks
agree. Acquiring a lock is one conditional write that succeeds only on a free or expired row; its fence
goes up by one on every grant and rows are never deleted, so tokens never repeat.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from lockapi.spi import (
    Attempt,
    Backend,
    BackendConfig,
    BackendUnavailable,
    Capability,
    ConfigError,
    LockInfo,
    Wake,
)
from lockapi_sql.dialects import DIALECTS, PostgresDialect, SQLDialect, SQLiteDialect
from lockapi_sql.schema import COUNTER_SLOT, DEFAULT_PREFIX, HEAD_SEPARATOR, LOCK, SEMAPHORE, Tables, name_hash
from lockapi_sql.watchdog import Watchdog

T = TypeVar("T")
CHUNK = 500
"""Most names per statement in batch operations (keeps under every dialect's bind-parameter limit)."""


class _Rollback(Exception):
    """Raised inside an operation to roll its transaction back and return ``value``."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _us(seconds: float) -> int:
    return max(1, round(seconds * 1_000_000))


def _seconds(us: int | None) -> float | None:
    return None if us is None else max(0.0, us / 1_000_000)


def _payload(kind: int, digest: str) -> str:
    return f"{'s' if kind == SEMAPHORE else 'l'}:{digest}"


class SQLBackend(Backend):
    """Lease rows in SQLite, PostgreSQL or MariaDB/MySQL (SQLAlchemy 2 Core).

    Options: ``table_prefix`` (default ``lockapi_``), ``pool_size`` (5), ``max_overflow`` (10),
    ``create_schema`` (true: create missing tables on first use) and, on PostgreSQL, ``listen``
    (true: push wake-ups over LISTEN/NOTIFY; turn off behind a transaction-pooling proxy).
    """

    description = ("SQL lease rows: SQLite, PostgreSQL, MariaDB/MySQL (SQLAlchemy Core); per dialect also "
                   "multi_host (not sqlite), atomic_batch (postgresql, sqlite), push_wakeup (postgresql)")
    capabilities = frozenset({Capability.MULTI_PROCESS, Capability.BACKEND_EXPIRY, Capability.FAIR,
                              Capability.ITER_DONE, Capability.ADMIN})
    """Every dialect's; an instance adds its dialect's (see ``__init__``)."""

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        dialect_type = DIALECTS.get(config.scheme)
        if dialect_type is None:
            raise ConfigError(f"the SQL backend serves {', '.join(sorted(DIALECTS))}, not {config.scheme!r}")
        options = config.options
        self.tables = Tables(options.str("table_prefix", DEFAULT_PREFIX) or DEFAULT_PREFIX)
        pool_size = options.int("pool_size", 5, minimum=1)
        max_overflow = options.int("max_overflow", 10, minimum=0)
        self._create_schema = options.bool("create_schema", True)
        listen = options.bool("listen", True) if dialect_type.scheme == "postgresql" else False
        options.finish()

        self.dialect: SQLDialect = dialect_type(config.timeout)
        try:
            url = self.dialect.engine_url(sa.make_url(config.url))
            self.engine: Engine = sa.create_engine(url, **self.dialect.engine_kwargs(pool_size, max_overflow))
        except (sa.exc.ArgumentError, ValueError) as exc:  # ValueError: e.g. a port that is not a number
            raise ConfigError(f"bad SQL URL {config.redacted_url}: {exc}") from None
        except ImportError as exc:
            raise ConfigError(f"the {url.drivername} driver is not installed (pip install 'lockapi[sql]'): "
                              f"{exc}") from None
        self.dialect.setup(self.engine)
        _discard_connections_after_fork(self.engine)

        self._listener = None
        if listen and isinstance(self.dialect, PostgresDialect):
            from lockapi_sql.listener import Listener

            _, params = self.engine.dialect.create_connect_args(self.engine.url)
            self._listener = Listener({**params, **self.dialect.connect_args()},
                                      self.tables.notify_channel, timeout=config.timeout)
        caps = set(SQLBackend.capabilities)
        if self.dialect.multi_host:
            caps.add(Capability.MULTI_HOST)
        if self.dialect.scheme in ("postgresql", "sqlite"):
            caps.add(Capability.ATOMIC_BATCH)
        if self._listener is not None:
            caps.add(Capability.PUSH_WAKEUP)
        self.capabilities = frozenset(caps)
        self._watchdog = Watchdog() if self.dialect.needs_watchdog else None
        self._schema_lock = threading.Lock()
        self._schema_ready = not self._create_schema

    # -- plumbing ---------------------------------------------------------------------------------------
    def _unavailable(self, exc: BaseException) -> BackendUnavailable:
        cause = getattr(exc, "orig", None) or exc
        detail = (str(cause).strip().splitlines() or [""])[0]
        return BackendUnavailable(f"{self.config.redacted_url}: {type(cause).__name__}: {detail}")

    def ensure_schema(self, *, force: bool = False) -> None:
        """Create the tables if they are missing; concurrent creators (other processes) are fine.

        Runs on the first operation unless ``create_schema`` is off; ``force`` runs it now regardless.
        """
        if self._schema_ready and not force:
            return
        with self._schema_lock:
            if self._schema_ready and not force:
                return
            try:
                self.tables.create(self.engine, deadline=time.monotonic() + self.config.timeout)
            except (sa.exc.DBAPIError, sa.exc.TimeoutError) as exc:
                raise self._unavailable(exc) from exc
            self._schema_ready = True

    def _run(self, op: Callable[[Connection], T], *, read_only: bool = False) -> T:
        """Run ``op`` in its own transaction; map driver errors to :class:`BackendUnavailable`.

        Retried while time is left: deadlocks and lock-wait timeouts, and a pooled connection found
        dead (the pool then drops its other old connections; no per-checkout ping is paid).
        """
        self.ensure_schema()
        deadline = time.monotonic() + self.config.timeout
        delay = 0.005
        while True:
            try:
                with self.engine.connect() as conn, self._guard(conn, deadline):
                    if read_only:
                        conn.execution_options(**{SQLiteDialect.READ_ONLY: True})
                    with conn.begin():
                        return op(conn)
            except _Rollback as rollback:
                return rollback.value  # type: ignore[no-any-return]
            except sa.exc.DBAPIError as exc:
                retry = self.dialect.retryable(exc) or exc.connection_invalidated
                if retry and time.monotonic() + delay < deadline:
                    time.sleep(delay * (1 + random.random()))
                    delay = min(delay * 2, 0.2)
                    continue
                raise self._unavailable(exc) from exc
            except sa.exc.TimeoutError as exc:  # no pooled connection within the timeout
                raise self._unavailable(exc) from exc

    def _guard(self, conn: Connection, deadline: float) -> contextlib.AbstractContextManager[None]:
        """Bound the operation on ``conn`` by ``deadline`` where the driver cannot (see watchdog.py)."""
        if self._watchdog is None:
            return contextlib.nullcontext()
        return self._watchdog.guard(conn.connection.dbapi_connection.fileno(),  # type: ignore[union-attr]
                                    deadline)

    def _now(self) -> sa.ColumnElement[int]:
        return self.dialect.now()

    def _held(self, digest: str, kind: int, holder: str, token: int) -> sa.ColumnElement[bool]:
        c = self.tables.leases.c
        return sa.and_(c.name_hash == digest, c.kind == kind, c.slot >= 0, c.holder == holder,
                       c.fence == token, c.expires_us > self._now())

    def _retry_after(self, conn: Connection, digest: str, kind: int) -> float | None:
        """Seconds until the soonest live row of ``digest``/``kind`` expires (None if none is live)."""
        c = self.tables.leases.c
        left = conn.execute(
            sa.select(sa.func.min(c.expires_us) - self._now())
            .where(c.name_hash == digest, c.kind == kind, c.slot >= 0, c.expires_us > self._now())
        ).scalar()
        return _seconds(left)

    def _free_rows(self, conn: Connection, where: sa.ColumnElement[bool], kind: int,
                   digests: Sequence[str]) -> int:
        """Free the lease rows matching ``where`` and notify push-waiters; return how many were freed."""
        freed = conn.execute(
            sa.update(self.tables.leases).where(where).values(holder=None, expires_us=0)
        ).rowcount
        if freed and self.dialect.notifies:
            if kind == LOCK and len(digests) == 1:
                payloads: list[str | sa.ColumnElement[str]] = [self._addressed(digests[0])]
            else:
                payloads = [_payload(kind, d) for d in digests]
            self.dialect.notify(conn, self.tables.notify_channel, payloads)
        return int(freed)

    def _addressed(self, digest: str) -> sa.ColumnElement[str]:
        """A lock's NOTIFY payload naming its next live fair waiter, if any, so only that waiter wakes
        (:class:`Listener`); computed inside the notify statement, no extra round trip."""
        w = self.tables.waiters.c
        head = (sa.select(w.holder).where(w.name_hash == digest, w.expires_us > self._now())
                .order_by(w.seq).limit(1).scalar_subquery())
        suffix = sa.func.coalesce(sa.literal(HEAD_SEPARATOR, sa.String) + head, "")
        return sa.literal(_payload(LOCK, digest), sa.String) + suffix

    # -- locks ------------------------------------------------------------------------------------------
    def try_acquire(self, name: str, holder: str, ttl: float, *, queue_ttl: float | None = None) -> Attempt:
        digest = name_hash(name)

        def op(conn: Connection) -> Attempt:
            if queue_ttl is not None:
                self._lock_name(conn, digest)
                if not self._queue_head(conn, digest, name, holder, _us(queue_ttl)):
                    return Attempt(None, self._retry_after(conn, digest, LOCK))
            got = self.dialect.claim(conn, self.tables.leases, [(digest, name)], kind=LOCK, slot=0,
                                     holder=holder, ttl_us=_us(ttl))
            if digest not in got:
                return Attempt(None, self._retry_after(conn, digest, LOCK))
            if queue_ttl is not None:
                w = self.tables.waiters.c
                conn.execute(sa.delete(self.tables.waiters).where(w.name_hash == digest, w.holder == holder))
            return Attempt(got[digest])

        return self._run(op)

    def _lock_name(self, conn: Connection, digest: str) -> None:
        """Row-lock the name's lease row first, so every fair operation on a name takes its locks in one
        order (lease row, then waiter rows) and they queue instead of deadlocking on MariaDB/MySQL.
        (SQLite serialises writers already and ignores FOR UPDATE.)"""
        c = self.tables.leases.c
        conn.execute(sa.select(c.fence).where(c.name_hash == digest, c.kind == LOCK, c.slot == 0)
                     .with_for_update())

    def _queue_head(self, conn: Connection, digest: str, name: str, holder: str, queue_us: int) -> bool:
        """Drop expired waiters, join or refresh ``holder``'s entry; True if it is first in the queue."""
        waiters = self.tables.waiters
        w = waiters.c
        mine = sa.and_(w.name_hash == digest, w.holder == holder)
        conn.execute(sa.delete(waiters).where(w.name_hash == digest, w.expires_us <= self._now()))
        expires = self._now() + queue_us
        if not conn.execute(sa.update(waiters).where(mine).values(expires_us=expires)).rowcount:
            conn.execute(sa.insert(waiters).values(name_hash=digest, name=name, holder=holder,
                                                   expires_us=expires))
        head = conn.execute(
            sa.select(w.holder).where(w.name_hash == digest).order_by(w.seq).limit(1)
        ).scalar()
        return bool(head == holder)

    def cancel_wait(self, name: str, holder: str) -> None:
        digest = name_hash(name)
        w = self.tables.waiters.c

        def op(conn: Connection) -> None:
            self._lock_name(conn, digest)
            left = conn.execute(
                sa.delete(self.tables.waiters).where(w.name_hash == digest, w.holder == holder)
            ).rowcount
            if left and self.dialect.notifies:  # the next waiter may now be first in the queue
                self.dialect.notify(conn, self.tables.notify_channel, [self._addressed(digest)])

        self._run(op)

    def release(self, name: str, holder: str, token: int) -> bool:
        digest = name_hash(name)
        where = self._held(digest, LOCK, holder, token)
        return self._run(lambda conn: self._free_rows(conn, where, LOCK, [digest]) > 0)

    def extend(self, name: str, holder: str, token: int, ttl: float) -> bool:
        return self._extend(name_hash(name), LOCK, holder, token, ttl)

    def _extend(self, digest: str, kind: int, holder: str, token: int, ttl: float) -> bool:
        stmt = (sa.update(self.tables.leases).where(self._held(digest, kind, holder, token))
                .values(expires_us=self._now() + _us(ttl)))
        return self._run(lambda conn: conn.execute(stmt).rowcount > 0)

    def inspect(self, name: str) -> LockInfo | None:
        c = self.tables.leases.c
        stmt = sa.select(c.holder, c.fence, c.expires_us - self._now()).where(
            c.name_hash == name_hash(name), c.kind == LOCK, c.slot == 0, c.expires_us > self._now())
        row = self._run(lambda conn: conn.execute(stmt).first(), read_only=True)
        if row is None or row[0] is None:
            return None
        return LockInfo(name=name, holder=row[0], token=int(row[1]), ttl_remaining=_seconds(row[2]) or 0.0)

    def holds(self, name: str, holder: str, token: int) -> bool:
        return self._holds(name_hash(name), LOCK, holder, token)

    def _holds(self, digest: str, kind: int, holder: str, token: int) -> bool:
        stmt = sa.select(sa.literal(1)).where(self._held(digest, kind, holder, token))
        return self._run(lambda conn: conn.execute(stmt).first() is not None, read_only=True)

    def try_acquire_many(
        self, names: Sequence[str], holder: str, ttl: float, *, skip_done: bool = False
    ) -> dict[str, int]:
        """All names in one transaction: one claim statement per 500 names (RETURNING dialects), then,
        with ``skip_done``, one query for done markers AFTER the claim (a fresh READ COMMITTED snapshot,
        so a marker written before the previous holder released is seen) and a release of those."""
        rows = sorted({(name_hash(n), n) for n in names})
        by_digest = dict(rows)

        def op(conn: Connection) -> dict[str, int]:
            got: dict[str, int] = {}
            for start in range(0, len(rows), CHUNK):
                got.update(self.dialect.claim(conn, self.tables.leases, rows[start:start + CHUNK],
                                              kind=LOCK, slot=0, holder=holder, ttl_us=_us(ttl)))
            if skip_done and got:
                finished = sorted(self._done_digests(conn, list(got)))
                c = self.tables.leases.c
                for start in range(0, len(finished), CHUNK):
                    part = finished[start:start + CHUNK]
                    self._free_rows(conn, sa.and_(c.name_hash.in_(part), c.kind == LOCK, c.slot == 0,
                                                  c.holder == holder), LOCK, part)
                for digest in finished:
                    del got[digest]
            return {by_digest[d]: token for d, token in got.items()}

        return self._run(op) if rows else {}

    # -- semaphores -------------------------------------------------------------------------------------
    def try_acquire_permit(self, name: str, permits: int, holder: str, ttl: float) -> Attempt:
        """Bump the semaphore's counter row (which also serialises its acquirers), then take the lowest
        free slot below ``permits`` if fewer than ``permits`` slots are live; else roll back."""
        digest = name_hash(name)
        leases = self.tables.leases
        c = leases.c

        def op(conn: Connection) -> Attempt:
            token = self.dialect.claim(conn, leases, [(digest, name)], kind=SEMAPHORE, slot=COUNTER_SLOT,
                                       holder=None)[digest]
            live = conn.execute(
                sa.select(c.slot, c.expires_us - self._now()).where(
                    c.name_hash == digest, c.kind == SEMAPHORE, c.slot >= 0, c.expires_us > self._now())
            ).all()
            if len(live) >= permits:
                raise _Rollback(Attempt(None, _seconds(min(left for _, left in live))))
            busy = {slot for slot, _ in live}
            slot = next(i for i in range(permits) if i not in busy)
            got = self.dialect.claim(conn, leases, [(digest, name)], kind=SEMAPHORE, slot=slot,
                                     holder=holder, ttl_us=_us(ttl), fence=token)
            if digest not in got:  # cannot happen while the counter row lock is held; stay safe
                raise _Rollback(Attempt(None))
            return Attempt(token)

        return self._run(op)

    def release_permit(self, name: str, holder: str, token: int) -> bool:
        digest = name_hash(name)
        where = self._held(digest, SEMAPHORE, holder, token)
        return self._run(lambda conn: self._free_rows(conn, where, SEMAPHORE, [digest]) > 0)

    def extend_permit(self, name: str, holder: str, token: int, ttl: float) -> bool:
        return self._extend(name_hash(name), SEMAPHORE, holder, token, ttl)

    def holds_permit(self, name: str, holder: str, token: int) -> bool:
        return self._holds(name_hash(name), SEMAPHORE, holder, token)

    # -- done markers -----------------------------------------------------------------------------------
    def mark_done(self, name: str, ttl: float) -> None:
        expires = self._now() + _us(ttl)
        row = {"name_hash": name_hash(name), "name": name, "expires_us": expires}
        self._run(lambda conn: self.dialect.upsert(conn, self.tables.done, [row], {"expires_us": expires}))

    def _done_digests(self, conn: Connection, digests: Sequence[str]) -> set[str]:
        d = self.tables.done.c
        found: set[str] = set()
        for start in range(0, len(digests), CHUNK):
            part = list(digests[start:start + CHUNK])
            found.update(conn.execute(
                sa.select(d.name_hash).where(d.name_hash.in_(part), d.expires_us > self._now())
            ).scalars())
        return found

    def done(self, names: Sequence[str]) -> set[str]:
        by_digest = {name_hash(n): n for n in names}
        if not by_digest:
            return set()
        found = self._run(lambda conn: self._done_digests(conn, list(by_digest)), read_only=True)
        return {by_digest[d] for d in found}

    def iter_done(self) -> Iterator[tuple[str, float]]:
        """Pages of 500 markers in ``name_hash`` order, each page its own short transaction."""
        d = self.tables.done.c
        after = ""
        while True:
            stmt = (sa.select(d.name_hash, d.name, d.expires_us - self._now())
                    .where(d.name_hash > after, d.expires_us > self._now())
                    .order_by(d.name_hash).limit(CHUNK))
            page = self._run(partial(_fetch_all, stmt), read_only=True)
            for _, name, left in page:
                yield name, _seconds(left) or 0.0
            if len(page) < CHUNK:
                return
            after = page[-1][0]

    # -- administration ---------------------------------------------------------------------------------
    def set_fence_floor(self, name: str, token: int, *, semaphore: bool = False) -> None:
        kind, slot = (SEMAPHORE, COUNTER_SLOT) if semaphore else (LOCK, 0)
        c = self.tables.leases.c
        row = {"name_hash": name_hash(name), "kind": kind, "slot": slot, "name": name, "holder": None,
               "expires_us": 0, "fence": 0, "fence_floor": token}
        raise_to = {"fence_floor": sa.case((c.fence_floor < token, token), else_=c.fence_floor)}
        self._run(lambda conn: self.dialect.upsert(conn, self.tables.leases, [row], raise_to))

    def force_release(self, name: str) -> bool:
        digest = name_hash(name)
        c = self.tables.leases.c
        where = sa.and_(c.name_hash == digest, c.kind == LOCK, c.slot == 0, c.expires_us > self._now())
        return self._run(lambda conn: self._free_rows(conn, where, LOCK, [digest]) > 0)

    # -- waiting and lifecycle --------------------------------------------------------------------------
    def watch(
        self, name: str, wake: Wake, *, semaphore: bool = False, holder: str | None = None
    ) -> contextlib.AbstractContextManager[None]:
        if self._listener is None:
            return contextlib.nullcontext()
        return self._listener.watch(_payload(SEMAPHORE if semaphore else LOCK, name_hash(name)), wake, holder)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        if self._watchdog is not None:
            self._watchdog.close()
        self.engine.dispose()


def _fetch_all(stmt: sa.Select[Any], conn: Connection) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in conn.execute(stmt)]


def _discard_connections_after_fork(engine: Engine) -> None:
    """A forked child must not use its parent's pooled connections (SQLAlchemy's pid-check recipe)."""

    @sa.event.listens_for(engine, "connect")
    def _connect(_dbapi_conn: Any, record: Any) -> None:
        record.info["pid"] = os.getpid()

    @sa.event.listens_for(engine, "checkout")
    def _checkout(_dbapi_conn: Any, record: Any, proxy: Any) -> None:
        if record.info.get("pid") != os.getpid():
            record.dbapi_connection = proxy.dbapi_connection = None
            raise sa.exc.DisconnectionError("connection belongs to the parent process")
