"""The SQL lease-row backend: locks, semaphores, fair queues and done markers in ordinary tables.

Every time comparison uses the database's clock, so clients with skewed clocks agree. The hot operations
(acquire, release, extend, holds, inspect) are one prepared statement each in autocommit; the fair queue
and semaphores are one short transaction. A lock's fencing token goes up by one on every grant and rows
are never deleted, so tokens never repeat. One class per dialect (below) says what that dialect can do;
the statements are written once, in :mod:`lockapi_sql.statements`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import sqlalchemy as sa

from lockapi.spi import (
    Attempt,
    Backend,
    BackendConfig,
    BackendUnavailable,
    Capability,
    ConfigError,
    LockInfo,
    Wake,
    pause_point,
)
from lockapi_sql.connections import Connections, Session
from lockapi_sql.dialects import DIALECTS, Dialect, MySQL, PostgreSQL, SQLite
from lockapi_sql.schema import COUNTER_SLOT, DEFAULT_PREFIX, HEAD_SEPARATOR, LOCK, SEMAPHORE, Tables, name_hash
from lockapi_sql.statements import Statements, payload

CHUNK = 500
"""Most names per statement in batch operations (keeps under every dialect's bind-parameter limit)."""


def _us(seconds: float) -> int:
    return max(1, round(seconds * 1_000_000))


def _seconds(us: int | None) -> float | None:
    return None if us is None else max(0.0, us / 1_000_000)


class SQLBackend(Backend):
    """Lease rows in SQLite, PostgreSQL or MariaDB/MySQL; the dialect comes from the URL's scheme.

    Options: ``table_prefix`` (default ``lockapi_``), ``pool_size`` (5), ``max_overflow`` (10),
    ``create_schema`` (true: create missing tables on first use); on PostgreSQL ``listen`` (true: push
    wake-ups over LISTEN/NOTIFY; turn off behind a transaction-pooling proxy); on SQLite ``synchronous``
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
        pool_size = options.int("pool_size", 5, minimum=1)
        max_overflow = options.int("max_overflow", 10, minimum=0)
        self._create_schema = options.bool("create_schema", True)
        listen = options.bool("listen", True) if dialect_type.notifies else False
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
        self.sql = Statements(self.dialect, self.tables, notify=listen)
        self._listener = None
        if listen and isinstance(self.dialect, PostgreSQL):
            from lockapi_sql.listener import Listener

            self._listener = Listener(self.dialect.connect_params(config.timeout), self.tables.notify_channel,
                                      timeout=config.timeout)
        caps = set(type(self).capabilities)
        if self.dialect.multi_host:
            caps.add(Capability.MULTI_HOST)
        if self.dialect.returning:
            caps.add(Capability.ATOMIC_BATCH)
        if self._listener is not None:
            caps.add(Capability.PUSH_WAKEUP)
        self.capabilities = frozenset(caps)
        self.pause_points = self.contended_pause_points | (
            frozenset() if self.dialect.returning else frozenset({"acquire:created"}))
        self._notify = {"channel": self.tables.notify_channel, "sep": HEAD_SEPARATOR}
        self._queued: set[tuple[str, str]] = set()
        """(name hash, holder) of this backend's fair waiters that have a queue entry."""
        self._schema_lock = threading.Lock()
        self._schema_ready = not self._create_schema

    # -- plumbing ---------------------------------------------------------------------------------------
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
                cause = getattr(exc, "orig", None) or exc
                raise self.connections.translate(cause, self.dialect.classify(cause)) from exc
            self._schema_ready = True

    def _call(self, work: Any) -> Any:
        if not self._schema_ready:
            self.ensure_schema()
        return self.connections.call(work)

    def _announce(self, kind: int, digest: str, leaving: str = "") -> dict[str, Any]:
        """The extra parameters of a releasing statement that announces itself (push wake-ups)."""
        if not self.sql.notify:
            return {}
        return {**self._notify, "payload": payload(kind, digest), "leaving": leaving}

    # -- locks ------------------------------------------------------------------------------------------
    def try_acquire(self, name: str, holder: str, ttl: float, *, queue_ttl: float | None = None) -> Attempt:
        digest = name_hash(name)
        params = {"h": digest, "kind": LOCK, "slot": 0, "name": name, "holder": holder, "ttl": _us(ttl)}
        if queue_ttl is None:
            return self._call(lambda s: self._claim(s, params, self.sql.claim))  # type: ignore[no-any-return]
        if (digest, holder) not in self._queued:  # not queued yet: granted at once if nobody waits
            attempt: Attempt = self._call(lambda s: self._claim(s, params, self.sql.claim_fair))
            if attempt.granted:
                return attempt
            pause_point("acquire_fair:denied")
        self._queued.add((digest, holder))
        attempt = self._call(lambda s: self._fair_attempt(s, {**params, "queue": _us(queue_ttl)}))
        if attempt.granted:
            self._queued.discard((digest, holder))
        return attempt

    def _claim(self, session: Session, params: dict[str, Any], statement: str) -> Attempt:
        """One claim; on denial, the seconds until the current lease ends. Without RETURNING, a row that
        does not exist yet is created first (then the claim is tried again)."""
        token = self._claim_once(session, statement, params)
        if token is not None:
            return Attempt(token)
        left = session.one(self.sql.remaining, params)
        if left is None:  # no row yet (MariaDB/MySQL): create it, free, and try again
            session.execute(self.sql.create, params)
            pause_point("acquire:created")  # the same step in fair mode
            token = self._claim_once(session, statement, params)
            return Attempt(token) if token is not None else Attempt(None, _seconds(session.one(
                self.sql.remaining, params)[0]))
        return Attempt(None, _seconds(left[0]))

    def _claim_once(self, session: Session, statement: str, params: dict[str, Any]) -> int | None:
        cursor = session.execute(statement, params)
        if self.dialect.returning:
            row = cursor.fetchone()
            return None if row is None else int(row[0])
        return int(cursor.lastrowid) if cursor.rowcount == 1 else None

    def _fair_attempt(self, session: Session, params: dict[str, Any]) -> Attempt:
        """Join or refresh ``holder``'s queue entry and claim the lock if it heads the queue; one
        transaction that row-locks the lease row first, so fair operations on a name queue up (and never
        deadlock on MariaDB/MySQL)."""
        sql = self.sql
        with session.transaction():
            session.execute(sql.lock_name, params)
            session.execute(sql.drop_expired_waiters, params)
            session.execute(sql.join_queue, params)
            head = session.one(sql.queue_head, params)
            if head is not None and head[0] == params["holder"]:
                token = self._claim_once(session, sql.claim, params)
                if token is not None:
                    session.execute(sql.leave_queue, params)
                    return Attempt(token)
            left = session.one(sql.remaining, params)
        return Attempt(None, _seconds(left[0]) if left else None)

    def cancel_wait(self, name: str, holder: str) -> None:
        digest = name_hash(name)
        self._queued.discard((digest, holder))
        params = {"h": digest, "holder": holder, **self._announce(LOCK, digest, leaving=holder)}
        self._call(lambda s: s.execute(self.sql.cancel_wait, params))

    def release(self, name: str, holder: str, token: int) -> bool:
        return self._release(name_hash(name), LOCK, holder, token, self.sql.release_lock)

    def _release(self, digest: str, kind: int, holder: str, token: int, statement: str) -> bool:
        params = {"h": digest, "kind": kind, "holder": holder, "token": token,
                  **self._announce(kind, digest, leaving=holder)}
        return self._call(lambda s: s.count(statement, params) > 0)  # type: ignore[no-any-return]

    def extend(self, name: str, holder: str, token: int, ttl: float) -> bool:
        return self._extend(name_hash(name), LOCK, holder, token, ttl)

    def _extend(self, digest: str, kind: int, holder: str, token: int, ttl: float) -> bool:
        params = {"h": digest, "kind": kind, "holder": holder, "token": token, "ttl": _us(ttl)}
        return self._call(lambda s: s.count(self.sql.extend, params) > 0)  # type: ignore[no-any-return]

    def inspect(self, name: str) -> LockInfo | None:
        row = self._call(lambda s: s.one(self.sql.inspect, {"h": name_hash(name)}))
        if row is None or row[0] is None:
            return None
        return LockInfo(name=name, holder=row[0], token=int(row[1]), ttl_remaining=_seconds(row[2]) or 0.0)

    def holds(self, name: str, holder: str, token: int) -> bool:
        return self._holds(name_hash(name), LOCK, holder, token)

    def _holds(self, digest: str, kind: int, holder: str, token: int) -> bool:
        params = {"h": digest, "kind": kind, "holder": holder, "token": token}
        return self._call(lambda s: s.one(self.sql.holds, params) is not None)  # type: ignore[no-any-return]

    def try_acquire_many(
        self, names: Sequence[str], holder: str, ttl: float, *, skip_done: bool = False
    ) -> dict[str, int]:
        """All names in one transaction, 500 per statement; with ``skip_done``, done markers are read
        AFTER the claim (a fresh READ COMMITTED snapshot, so a marker written before the previous holder
        released is seen) and those names are given back."""
        rows = sorted({(name_hash(n), n) for n in names})
        if not rows:
            return {}
        by_digest = dict(rows)

        def work(session: Session) -> dict[str, int]:
            got: dict[str, int] = {}
            with session.transaction():
                for start in range(0, len(rows), CHUNK):
                    got.update(self._claim_chunk(session, rows[start:start + CHUNK], holder, ttl))
                if skip_done and got:
                    finished = sorted(self._done_among(session, list(got)))
                    for start in range(0, len(finished), CHUNK):
                        part = finished[start:start + CHUNK]
                        params = {**_numbered("h", part), "holder": holder}
                        if self.sql.notify:
                            params.update(channel=self.tables.notify_channel, lock_prefix=payload(LOCK, ""))
                        session.execute(self.sql.free_many(len(part)), params)
                    for digest in finished:
                        del got[digest]
            return {by_digest[d]: token for d, token in got.items()}

        return self._call(work)  # type: ignore[no-any-return]

    def _claim_chunk(self, session: Session, rows: Sequence[tuple[str, str]], holder: str,
                     ttl: float) -> dict[str, int]:
        params = {**_numbered("h", [h for h, _ in rows]), **_numbered("name", [n for _, n in rows]),
                  "holder": holder, "ttl": _us(ttl)}
        if self.dialect.returning:
            return {h: int(f) for h, f in session.all(self.sql.claim_many(len(rows)), params)}
        session.execute(self.sql.create_many(len(rows)), params)
        session.execute(self.sql.claim_many(len(rows)), params)
        return {h: int(f) for h, f in session.all(self.sql.claimed_many(len(rows)), params)}

    # -- semaphores -------------------------------------------------------------------------------------
    def try_acquire_permit(self, name: str, permits: int, holder: str, ttl: float) -> Attempt:
        """Bump the semaphore's counter row (which also serialises its acquirers), then take the lowest
        free slot below ``permits`` if fewer than ``permits`` slots are live; one transaction. A retry
        after a lost reply finds the permit it took and returns it."""
        params = {"h": name_hash(name), "kind": SEMAPHORE, "slot": COUNTER_SLOT, "name": name,
                  "holder": holder, "ttl": _us(ttl)}
        sql = self.sql

        def work(session: Session) -> Attempt:
            with session.transaction() as txn:
                token = self._bump_counter(session, params)
                live = session.all(sql.live_slots, params)
                own = [fence for _, who, fence, _ in live if who == holder]
                if own:  # a retry: this request took that permit before its reply was lost
                    txn.roll_back()
                    return Attempt(int(own[0]))
                if len(live) >= permits:
                    txn.roll_back()  # a denied attempt burns no token
                    return Attempt(None, _seconds(min(left for *_, left in live)))
                busy = {slot for slot, *_ in live}
                slot = next(i for i in range(permits) if i not in busy)
                session.execute(sql.take_slot, {**params, "slot": slot, "token": token})
            return Attempt(token)

        return self._call(work)  # type: ignore[no-any-return]

    def _bump_counter(self, session: Session, params: dict[str, Any]) -> int:
        cursor = session.execute(self.sql.bump_counter, params)
        if self.dialect.returning:
            return int(cursor.fetchone()[0])
        if cursor.rowcount != 1:  # no counter row yet (MariaDB/MySQL)
            session.execute(self.sql.create, params)
            cursor = session.execute(self.sql.bump_counter, params)
        return int(cursor.lastrowid)

    def release_permit(self, name: str, holder: str, token: int) -> bool:
        return self._release(name_hash(name), SEMAPHORE, holder, token, self.sql.release_permit)

    def extend_permit(self, name: str, holder: str, token: int, ttl: float) -> bool:
        return self._extend(name_hash(name), SEMAPHORE, holder, token, ttl)

    def holds_permit(self, name: str, holder: str, token: int) -> bool:
        return self._holds(name_hash(name), SEMAPHORE, holder, token)

    # -- done markers -----------------------------------------------------------------------------------
    def mark_done(self, name: str, ttl: float) -> None:
        params = {"h": name_hash(name), "name": name, "ttl": _us(ttl)}
        self._call(lambda s: s.execute(self.sql.mark_done, params))

    def _done_among(self, session: Session, digests: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(digests), CHUNK):
            part = list(digests[start:start + CHUNK])
            found.update(h for (h,) in session.all(self.sql.done_among(len(part)), _numbered("h", part)))
        return found

    def done(self, names: Sequence[str]) -> set[str]:
        by_digest = {name_hash(n): n for n in names}
        if not by_digest:
            return set()
        found: set[str] = self._call(lambda s: self._done_among(s, list(by_digest)))
        return {by_digest[d] for d in found}

    def iter_done(self) -> Iterator[tuple[str, float]]:
        """Pages of 500 markers in ``name_hash`` order, each page its own statement."""
        after = ""
        while True:
            params = {"after": after, "limit": CHUNK}
            page = self._call(lambda s, p=params: s.all(self.sql.done_page, p))
            for _, name, left in page:
                yield name, _seconds(left) or 0.0
            if len(page) < CHUNK:
                return
            after = page[-1][0]

    # -- administration ---------------------------------------------------------------------------------
    def set_fence_floor(self, name: str, token: int, *, semaphore: bool = False) -> None:
        kind, slot = (SEMAPHORE, COUNTER_SLOT) if semaphore else (LOCK, 0)
        params = {"h": name_hash(name), "kind": kind, "slot": slot, "name": name, "token": token}
        self._call(lambda s: s.execute(self.sql.set_fence_floor, params))

    def force_release(self, name: str) -> bool:
        digest = name_hash(name)
        params = {"h": digest, **self._announce(LOCK, digest)}
        return self._call(lambda s: s.count(self.sql.force_release, params) > 0)  # type: ignore[no-any-return]

    # -- waiting and lifecycle --------------------------------------------------------------------------
    def watch(
        self, name: str, wake: Wake, *, semaphore: bool = False, holder: str | None = None
    ) -> contextlib.AbstractContextManager[None]:
        if self._listener is None:
            return contextlib.nullcontext()
        return self._listener.watch(payload(SEMAPHORE if semaphore else LOCK, name_hash(name)), wake, holder)

    def ping(self) -> None:
        self._call(lambda s: s.one(self.sql.inspect, {"h": ""}))

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
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
    """MariaDB and MySQL: many hosts; batches are one transaction (not one statement)."""

    dialect_type = MySQL
    description = "MariaDB/MySQL lease rows (PyMySQL)"
    capabilities = SQLBackend.capabilities | {Capability.MULTI_HOST}
    capabilities_vary = ""


def _numbered(prefix: str, items: Sequence[Any]) -> dict[str, Any]:
    return {f"{prefix}{i}": item for i, item in enumerate(items)}


def _parse_url(config: BackendConfig) -> sa.engine.URL:
    url = config.url
    if url.lower().startswith("postgres://") or url.lower().startswith("postgres+"):
        url = "postgresql" + url[len("postgres"):]
    try:
        return sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:  # ValueError: e.g. a port that is not a number
        raise ConfigError(f"bad SQL URL {config.redacted_url}: {exc}") from None


__all__ = ["BackendUnavailable", "MariaDBBackend", "PostgresBackend", "SQLBackend", "SQLiteBackend"]
