"""The SQL backend's operations, written once as plans that both APIs run.

A plan (see :data:`lockapi.spi.Plan`) is a generator that yields the statements of one call and is sent
their results; it does no I/O. :class:`lockapi_sql.connections.Connections` runs a plan on a blocking
DB-API connection (:func:`lockapi.spi.drive`), :class:`lockapi_sql.aio_connections.AsyncConnections` on
the driver's asyncio connection (:func:`lockapi.aio.spi.drive_async`); both retry a whole call by
running the plan again (every call is idempotent), so a plan method is handed over with its arguments,
not as a started generator.

A step is a tuple ``(kind, statement, params)``; its result by kind:

* :data:`EXEC` None; :data:`ONE` the first row or None; :data:`ALL` a list of rows; :data:`COUNT` the
  rows the statement matched;
* :data:`TOKEN` a fencing token or None: the first column of the first row where the dialect has
  ``RETURNING``, otherwise ``LAST_INSERT_ID(expr)`` (the driver's ``lastrowid``) if one row matched;
* :data:`BEGIN` / :data:`END` start and end a transaction (the statement is ``BEGIN``, ``COMMIT`` or
  ``ROLLBACK``); a runner discards a connection whose call failed inside a transaction.

Plans of several calls (:meth:`Plans.acquire_fair`) yield *calls* instead: ``(plan method, *args)``,
each run as one call.

The hot single-statement operations are also written as *direct* plans (``Plans.*_first``): a
:data:`First` ``(step, finish)``, where ``finish(answer, step)`` is the call's result, or a :class:`Then`
naming the plan that continues the call (a denied claim's follow-up statements). A runner with a direct
path (:meth:`lockapi_sql.connections.Connections.direct`) runs the step without a generator, a session
object or an exception to end it (about 1.2 us less client CPU per acquire+release cycle); the generator form
of the same operation is :func:`unfold` of it, so each operation is written once.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

from lockapi.spi import Attempt, pause_point
from lockapi_sql.dialects import Dialect
from lockapi_sql.schema import COUNTER_SLOT, LOCK, SEMAPHORE, Tables, key_of, name_hash
from lockapi_sql.statements import Statements

T = TypeVar("T")
EXEC, ONE, ALL, COUNT, TOKEN, BEGIN, END = range(7)
Step = tuple[int, str, Any]
Plan = Generator[Step, Any, T]
COMMIT: Step = (END, "COMMIT", None)
ROLLBACK: Step = (END, "ROLLBACK", None)


class Then(NamedTuple):
    """A direct plan's ``finish`` asks for more statements: the call goes on with ``plan(*args)``."""

    plan: Callable[..., Plan[Any]]
    args: tuple[Any, ...]


First = tuple[Step, Callable[[Any, Step], "T | Then"]]
"""A direct plan: its one step and ``finish(answer, step)``, the result or a :class:`Then`."""


def unfold(first: First[T]) -> Plan[T]:
    """The generator plan of direct plan ``first`` (for runners without a direct path)."""
    step, finish = first
    result = finish((yield step), step)
    if isinstance(result, Then):
        then: T = yield from result.plan(*result.args)
        return then
    return result


def _matched(count: int, step: Step) -> bool:
    """``finish`` of a statement that succeeds if it matched a row."""
    return count > 0


def _found(row: Any, step: Step) -> bool:
    """``finish`` of a query that succeeds if it found a row."""
    return row is not None


KNOWN_ROWS = 10_000
"""Most name hashes :class:`Plans` remembers as having a row (about 1.5 MB)."""

CHUNK = 500
"""Most done markers per page (:meth:`Plans.done_page`); batch statements use the dialect's
:attr:`~lockapi_sql.dialects.Dialect.batch_chunk`."""


MARK_HORIZON = 10.0
"""Seconds a waiter's mark on a lock row lasts (push wake-ups; see
:attr:`lockapi_sql.statements.Statements.mark`). A watch marks when it opens; while it stays open, its
waiter's denied attempts re-mark once half of this has passed (lockapi's waiters re-check at least every
:data:`lockapi.waiting.PUSH_MAX`, 2 s). A waiter that gave up leaves a mark that costs needless
notifications for at most this long."""


def us(seconds: float) -> int:
    """Seconds as whole microseconds, at least one (the statements' unit)."""
    return max(1, round(seconds * 1_000_000))


def seconds(micro: int | None) -> float | None:
    return None if micro is None else max(0.0, micro / 1_000_000)


def numbered(prefix: str, items: Sequence[Any]) -> dict[str, Any]:
    return {f"{prefix}{i}": item for i, item in enumerate(items)}


def chunks(dialect: Dialect, items: Sequence[T]) -> list[Sequence[T]]:
    """``items`` in pieces of the dialect's :attr:`~lockapi_sql.dialects.Dialect.batch_chunk`."""
    size = dialect.batch_chunk
    return [items[start:start + size] for start in range(0, len(items), size)]


def one(statement: str, params: dict[str, Any]) -> Plan[Any]:
    """A plan of one statement: its first row or None (for tools and tests)."""
    return (yield (ONE, statement, params))


class Plans:
    """The operations of one backend (one dialect, table prefix and notify setting); holds the set of
    this backend's fair waiters that have a queue entry, so use one per backend."""

    def __init__(self, dialect: Dialect, tables: Tables, sql: Statements) -> None:
        self.dialect = dialect
        self.tables = tables
        self.sql = sql
        self._begin: Step = (BEGIN, dialect.begin, None)
        self._rows: dict[str, None] = {}
        """Name hashes of lock rows this backend has seen exist (rows are never deleted): their claims
        are a plain UPDATE; other names' first claim creates the row (``Statements.first_claim``). Cleared
        when it reaches :data:`KNOWN_ROWS` (their next claims are upserts again, then UPDATEs)."""
        self._queued: set[tuple[str, str]] = set()
        """(name hash, holder) of this backend's fair waiters that have a queue entry."""
        self.mark_horizon = MARK_HORIZON
        """Seconds a mark lasts (:data:`MARK_HORIZON`; tests shorten it)."""
        self._watched: dict[str, list[float]] = {}
        """Lock name hash -> [open watches, monotonic time of its last mark] (push wake-ups)."""
        self._watched_lock = threading.Lock()

    # -- locks ------------------------------------------------------------------------------------------
    def acquire_first(self, name: str, holder: str, ttl: float) -> First[Attempt]:
        """One claim of ``name`` (not fair), direct."""
        digest = key_of(name)
        params = {"h": digest, "name": name, "holder": holder, "ttl": us(ttl)}
        return (TOKEN, self.sql.claim if digest in self._rows else self.sql.first_claim, params), self._claimed

    def acquire(self, name: str, holder: str, ttl: float) -> Plan[Attempt]:
        """One claim of ``name`` (not fair)."""
        return unfold(self.acquire_first(name, holder, ttl))

    def _claimed(self, token: int | None, step: Step) -> Attempt | Then:
        """``finish`` of a claim: granted, or the time left of the current lease (:meth:`_denied`)."""
        if token is not None:
            if step[2]["h"] not in self._rows:
                self._seen(step[2]["h"])
            return Attempt(token)
        return Then(self._denied, (step[2], step[1]))

    def _seen(self, digest: str) -> None:
        """Remember that the lock row of ``digest`` exists (see :attr:`_rows`)."""
        rows = self._rows
        if len(rows) >= KNOWN_ROWS:
            rows.clear()
        rows[digest] = None

    def acquire_fair(self, name: str, holder: str, ttl: float, queue_ttl: float) -> Generator[Any, Any, Attempt]:
        """A fair attempt, as CALLS: a claim that is granted at once if nobody waits (skipped once
        queued), then joining or refreshing the queue and claiming at its head."""
        digest = key_of(name)
        params = {"h": digest, "name": name, "holder": holder, "ttl": us(ttl)}
        key = (digest, holder)
        if key not in self._queued:  # not queued yet: granted at once if nobody waits
            sql = self.sql
            attempt: Attempt = yield (self._claim, params, sql.claim_fair if digest in self._rows
                                      else sql.first_claim_fair)
            if attempt.granted:
                return attempt
            pause_point("acquire_fair:denied")
        self._queued.add(key)
        attempt = yield (self._fair_attempt, {**params, "queue": us(queue_ttl)})
        if attempt.granted:
            self._queued.discard(key)
        return attempt

    def _claim(self, params: dict[str, Any], statement: str) -> Plan[Attempt]:
        """One claim; on denial, the seconds until the current lease ends. A row that does not exist yet
        is created: by the claim as an upsert (RETURNING dialects), or first (then the claim is tried
        again)."""
        return unfold(((TOKEN, statement, params), self._claimed))

    def _denied(self, params: dict[str, Any], statement: str) -> Plan[Attempt]:
        """After a claim that was not granted: see :meth:`_claim`. The time left is read by re-marking
        the row when a watch of this backend waits on it and its mark is due (:data:`MARK_HORIZON`): the
        same round trip."""
        sql = self.sql
        if self._mark_due(params["h"]):
            left = yield (ONE, sql.mark, {**params, "horizon": us(self.mark_horizon)})
        else:
            left = yield (ONE, sql.remaining, params)
        if left is not None:
            self._seen(params["h"])
        else:  # no row yet (a name's first claim)
            if self.dialect.returning:  # one upsert creates the row and claims it
                token = yield (TOKEN, sql.creating[statement], params)
            else:  # create it, free, and try again
                yield (EXEC, sql.create, {**params, "kind": LOCK, "slot": 0})
                pause_point("acquire:created")  # the same step in fair mode
                token = yield (TOKEN, statement, params)
            if token is not None:
                return Attempt(token)
            left = yield (ONE, sql.remaining, params)
        return Attempt(None, seconds(left[0]))

    def _fair_attempt(self, params: dict[str, Any]) -> Plan[Attempt]:
        """Join or refresh ``holder``'s queue entry and claim the lock if it heads the queue; one
        transaction that row-locks the lease row first, so fair operations on a name queue up (and never
        deadlock on MariaDB/MySQL)."""
        sql = self.sql
        if sql.notify:  # the row lock is a mark (Statements.lock_name)
            params["horizon"] = us(self.mark_horizon)
        yield self._begin
        yield (EXEC, sql.lock_name, params)
        yield (EXEC, sql.drop_expired_waiters, params)
        yield (EXEC, sql.join_queue, params)
        head = yield (ONE, sql.queue_head, params)
        if head is not None and head[0] == params["holder"]:
            token = yield (TOKEN, sql.claim, params)
            if token is not None:
                yield (EXEC, sql.leave_queue, params)
                yield COMMIT
                return Attempt(token)
        left = yield (ONE, sql.remaining, params)
        yield COMMIT
        return Attempt(None, seconds(left[0]) if left else None)

    # -- waiters' marks (push wake-ups) -------------------------------------------------------------------
    @contextlib.contextmanager
    def watching(self, name: str) -> Iterator[None]:
        """While open, a waiter of this backend waits on lock ``name``: its denied claims keep the row's
        mark alive (:meth:`_denied`). Opened by a backend's ``watch`` just before :meth:`mark`."""
        digest = key_of(name)
        with self._watched_lock:
            entry = self._watched.setdefault(digest, [0, time.monotonic()])
            entry[0] += 1
        try:
            yield
        finally:
            with self._watched_lock:
                entry[0] -= 1
                if entry[0] <= 0 and self._watched.get(digest) is entry:
                    del self._watched[digest]

    def _mark_due(self, digest: str) -> bool:
        """A watch waits on ``digest`` and half its mark's horizon has passed (then counted as marked now:
        the mark is sent next)."""
        if not self._watched:
            return False
        now = time.monotonic()
        with self._watched_lock:
            entry = self._watched.get(digest)
            if entry is None or now - entry[1] < self.mark_horizon / 2:
                return False
            entry[1] = now
            return True

    def mark(self, name: str) -> Plan[bool]:
        """Mark lock ``name``'s row for :data:`MARK_HORIZON` (see
        :attr:`lockapi_sql.statements.Statements.mark`); True if the lock may be free now (its waiter must
        then re-check: a release that committed before the mark did not announce itself). Run by a
        backend's ``watch`` once its subscription is in effect, inside :meth:`watching`."""
        digest = key_of(name)
        with self._watched_lock:
            entry = self._watched.get(digest)
            if entry is not None:
                entry[1] = time.monotonic()
        left = yield (ONE, self.sql.mark, {"h": digest, "name": name, "horizon": us(self.mark_horizon)})
        return left is None or left[0] <= 0

    def cancel_wait(self, name: str, holder: str) -> Plan[None]:
        digest = key_of(name)
        self._queued.discard((digest, holder))
        yield (EXEC, self.sql.cancel_wait, {"h": digest, "holder": holder})

    def release_first(self, name: str, holder: str, token: int, semaphore: bool = False) -> First[bool]:
        statement = self.sql.release_permit if semaphore else self.sql.release_lock
        return (COUNT, statement, {"h": key_of(name), "holder": holder, "token": token}), _matched

    def release(self, name: str, holder: str, token: int, semaphore: bool = False) -> Plan[bool]:
        return unfold(self.release_first(name, holder, token, semaphore))

    def extend_first(self, name: str, holder: str, token: int, ttl: float, semaphore: bool = False) -> First[bool]:
        params = {"h": key_of(name), "kind": SEMAPHORE if semaphore else LOCK, "holder": holder,
                  "token": token, "ttl": us(ttl)}
        return (COUNT, self.sql.extend, params), _matched

    def extend(self, name: str, holder: str, token: int, ttl: float, semaphore: bool = False) -> Plan[bool]:
        return unfold(self.extend_first(name, holder, token, ttl, semaphore))

    def holds_first(self, name: str, holder: str, token: int, semaphore: bool = False) -> First[bool]:
        params = {"h": key_of(name), "kind": SEMAPHORE if semaphore else LOCK, "holder": holder,
                  "token": token}
        return (ONE, self.sql.holds, params), _found

    def holds(self, name: str, holder: str, token: int, semaphore: bool = False) -> Plan[bool]:
        return unfold(self.holds_first(name, holder, token, semaphore))

    def inspect(self, name: str) -> Plan[Any]:
        """The lock's row ``(holder, token, microseconds left)``, or None when nobody holds it."""
        row = yield (ONE, self.sql.inspect, {"h": key_of(name)})
        return None if row is None or row[0] is None else row

    def ping(self) -> Plan[None]:
        yield (ONE, self.sql.inspect, {"h": ""})

    def _batch(self, columns: dict[str, Sequence[Any]]) -> tuple[int, dict[str, Any]]:
        """(count, parameters) of a batch statement (see :class:`lockapi_sql.statements.Statements`):
        one array parameter per column (``<column>s``, count 0) where the dialect has
        :attr:`~lockapi_sql.dialects.Dialect.arrays`, otherwise one parameter per value."""
        if self.dialect.arrays:
            return 0, {f"{column}s": list(values) for column, values in columns.items()}
        params: dict[str, Any] = {}
        for column, values in columns.items():
            params.update(numbered(column, values))
        return len(next(iter(columns.values()))), params

    def acquire_many(self, names: Sequence[str], holder: str, ttl: float, skip_done: bool) -> Plan[dict[str, int]]:
        """All names in one transaction, the dialect's ``batch_chunk`` per statement (PostgreSQL: one
        statement of two array parameters); with ``skip_done``, done markers are read AFTER the claim (a
        fresh READ COMMITTED snapshot, so a marker written before the previous holder released is seen)
        and those names are given back. ``names`` must not be empty."""
        rows = sorted({(name_hash(n), n) for n in names})
        by_digest = dict(rows)
        got: dict[str, int] = {}
        yield self._begin
        for part in chunks(self.dialect, rows):
            got.update((yield from self._claim_chunk(part, holder, ttl)))
        if skip_done and got:
            finished = sorted((yield from self._done_among(list(got))))
            for digests in chunks(self.dialect, finished):
                count, params = self._batch({"h": digests})
                params["holder"] = holder
                yield (EXEC, self.sql.free_many(count), params)
            for digest in finished:
                del got[digest]
        yield COMMIT
        return {by_digest[d]: token for d, token in got.items()}

    def _claim_chunk(self, rows: Sequence[tuple[str, str]], holder: str, ttl: float) -> Plan[dict[str, int]]:
        sql = self.sql
        count, params = self._batch({"h": [h for h, _ in rows], "name": [n for _, n in rows]})
        params.update(holder=holder, ttl=us(ttl))
        if self.dialect.returning:
            return {h: int(f) for h, f in (yield (ALL, sql.claim_many(count), params))}
        yield (EXEC, sql.claim_many(count), params)
        return {h: int(f) for h, f in (yield (ALL, sql.claimed_many(count), params))}

    # -- semaphores -------------------------------------------------------------------------------------
    def acquire_permit(self, name: str, permits: int, holder: str, ttl: float) -> Plan[Attempt]:
        """Bump the semaphore's counter row (which also serialises its acquirers), then take the lowest
        free slot below ``permits`` if fewer than ``permits`` slots are live; one transaction. A retry
        after a lost reply finds the permit it took and returns it."""
        sql = self.sql
        params = {"h": key_of(name), "kind": SEMAPHORE, "slot": COUNTER_SLOT, "name": name,
                  "holder": holder, "ttl": us(ttl)}
        yield self._begin
        token = yield (TOKEN, sql.bump_counter, params)
        if token is None:  # no counter row yet (MariaDB/MySQL)
            yield (EXEC, sql.create, params)
            token = yield (TOKEN, sql.bump_counter, params)
        live = yield (ALL, sql.live_slots, params)
        own = [fence for _, who, fence, _ in live if who == holder]
        if own:  # a retry: this request took that permit before its reply was lost
            yield ROLLBACK
            return Attempt(int(own[0]))
        if len(live) >= permits:
            yield ROLLBACK  # a denied attempt burns no token
            return Attempt(None, seconds(min(left for *_, left in live)))
        busy = {slot for slot, *_ in live}
        slot = next(i for i in range(permits) if i not in busy)
        yield (EXEC, sql.take_slot, {**params, "slot": slot, "token": int(token)})
        yield COMMIT
        return Attempt(int(token))

    # -- done markers -----------------------------------------------------------------------------------
    def mark_done(self, name: str, ttl: float) -> Plan[None]:
        yield (EXEC, self.sql.mark_done, {"h": key_of(name), "name": name, "ttl": us(ttl)})

    def done(self, names: Sequence[str]) -> Plan[set[str]]:
        by_digest = {name_hash(n): n for n in names}
        found = yield from self._done_among(list(by_digest))
        return {by_digest[d] for d in found}

    def _done_among(self, digests: Sequence[str]) -> Plan[set[str]]:
        found: set[str] = set()
        for part in chunks(self.dialect, digests):
            count, params = self._batch({"h": part})
            found.update(h for (h,) in (yield (ALL, self.sql.done_among(count), params)))
        return found

    def done_page(self, after: str) -> Plan[list[Any]]:
        """Up to :data:`CHUNK` markers ``(name hash, name, microseconds left)`` after ``after``."""
        page: list[Any] = yield (ALL, self.sql.done_page, {"after": after, "limit": CHUNK})
        return page

    # -- administration ---------------------------------------------------------------------------------
    def set_fence_floor(self, name: str, token: int, semaphore: bool = False) -> Plan[None]:
        kind, slot = (SEMAPHORE, COUNTER_SLOT) if semaphore else (LOCK, 0)
        params = {"h": key_of(name), "kind": kind, "slot": slot, "name": name, "token": token}
        yield (EXEC, self.sql.set_fence_floor, params)

    def force_release(self, name: str) -> Plan[bool]:
        matched: int = yield (COUNT, self.sql.force_release, {"h": key_of(name)})
        return matched > 0
