"""Every statement of the SQL backend, written once and filled in with a dialect's syntax.

The statements are built when the backend is created and bound per call (no SQL is composed on the hot
path); the batch statements are built once per batch size. Parameters: ``h`` a row's name hash, ``name``,
``holder``, ``token``, ``kind``/``slot`` (see :mod:`lockapi_sql.schema`; literals in the statements that
only touch lock rows), ``ttl`` in microseconds.

What each statement promises:

* a claim takes a row only if its lease ended (or is the caller's own, so that a retry after a lost
  reply is granted again instead of orphaning the first grant) and gives it the next fencing token; it
  is an UPDATE of an existing row, except a name's first claim (see ``first_claim`` and
  :class:`lockapi_sql.plans.Plans`);
* a release ends the lease by setting its expiry to 0 and keeps the holder, so that a retry after a
  lost reply still finds the lease it ended and reports success; an expired lease is not released;
* with push wake-ups (PostgreSQL), releasing statements announce the name in the same statement,
  addressed to the head of the name's fair queue, if any.
"""

from __future__ import annotations

from functools import lru_cache

from lockapi_sql.dialects import Dialect
from lockapi_sql.schema import COUNTER_SLOT, HEAD_SEPARATOR, LOCK, SEMAPHORE, Tables

LEASE_COLUMNS = "name_hash, kind, slot, name, holder, expires_us, fence, fence_floor"
LEASE_KEY = "name_hash, kind, slot"


def _in(prefix: str, count: int) -> str:
    """``IN (:h0, :h1, ..)``; count 0: the array form ``= ANY(:hs)`` (see :attr:`Dialect.arrays`)."""
    if not count:
        return f"= ANY(CAST(:{prefix}s AS text[]))"
    return "IN (" + ", ".join(f":{prefix}{i}" for i in range(count)) + ")"


def literal(text: str) -> str:
    """``text`` as a SQL string literal (quotes doubled). For constants the backend chooses when it builds
    its statements (the NOTIFY channel, payload prefixes), never for a caller's input."""
    return "'" + text.replace("'", "''") + "'"


class Statements:
    """The statements for one dialect and table prefix, in the driver's parameter style.

    Constants are SQL literals, not parameters: a lock row's ``kind``/``slot`` in the lock statements, the
    NOTIFY channel, the payload prefixes and the head separator (each bound parameter costs the driver
    adapting or escaping it per call)."""

    def __init__(self, dialect: Dialect, tables: Tables, *, notify: bool) -> None:
        self.dialect = dialect
        self.notify = notify and dialect.notifies
        d, now = dialect, dialect.now
        L, W, D = tables.leases.name, tables.waiters.name, tables.done.name
        self._L, self._W, self._D = L, W, D
        self._channel = tables.notify_channel
        c = d.compile
        claimable = f"({L}.expires_us <= {now} OR {L}.holder = :holder)"
        no_waiters = f"NOT EXISTS (SELECT 1 FROM {W} WHERE name_hash = :h AND expires_us > {now})"
        self._claimable = claimable
        self._take = f"holder = {d.new('holder')}, expires_us = {d.new('expires_us')}"  # batch upserts
        # A claim updates the lock's existing row (the usual case); a claim that matched nothing is
        # followed by ``remaining``, and by ``create`` and the claim again if the row does not exist yet
        # (plans.Plans._denied). An upsert per claim cost PostgreSQL more server time than the rare
        # extra round trips of a name's first claim.
        claim = (f"UPDATE {L} SET fence = {d.next_fence(L)}, holder = :holder, expires_us = {now} + :ttl "
                 f"WHERE name_hash = :h AND kind = {LOCK} AND slot = 0 AND {claimable}")
        returning = " RETURNING fence" if d.returning else ""
        self.claim = c(claim + returning)
        self.claim_fair = c(f"{claim} AND {no_waiters}{returning}")
        # A name's first claim (no row yet, or none this backend has seen): RETURNING dialects claim with
        # an upsert that creates the row (one statement); MariaDB/MySQL with the UPDATE, then ``create``
        # and the UPDATE again.
        self.first_claim, self.first_claim_fair = self.claim, self.claim_fair
        if d.returning:
            upsert = (d.upsert(L, LEASE_COLUMNS, f"(:h, {LOCK}, 0, :name, :holder, {now} + :ttl, "
                                                 f"{d.first_fence()}, 0)", LEASE_KEY)
                      + f"{self._take}, fence = {d.next_fence(L)} WHERE {claimable}")
            self.first_claim = c(upsert + returning)
            self.first_claim_fair = c(f"{upsert} AND {no_waiters}{returning}")
        self.creating = {self.claim: self.first_claim, self.claim_fair: self.first_claim_fair,
                         self.first_claim: self.first_claim, self.first_claim_fair: self.first_claim_fair}
        """The first-claim form of each claim statement (RETURNING dialects)."""
        self.create = c(d.insert_missing(L, LEASE_COLUMNS, "(:h, :kind, :slot, :name, NULL, 0, 0, 0)"))
        self.remaining = c(f"SELECT expires_us - {now} FROM {L} WHERE name_hash = :h AND kind = {LOCK} "
                           f"AND slot = 0")

        def mine(kind: int | str) -> str:
            return f"name_hash = :h AND kind = {kind} AND slot >= 0 AND holder = :holder AND fence = :token"

        channel = literal(tables.notify_channel)

        def announce(kind: int, leaving: str | None) -> str:
            """A releasing statement's announcement (push wake-ups): the kind's payload for the name,
            addressed (locks) to the head of its fair queue other than ``leaving`` (SQL), if any."""
            if not self.notify:
                return ""
            if leaving is None:
                return f" RETURNING pg_notify({channel}, {literal(payload(kind, ''))} || :h)"
            head = (f"(SELECT q.holder FROM {W} q WHERE q.name_hash = :h AND q.expires_us > {now} "
                    f"AND q.holder <> {leaving} ORDER BY q.seq LIMIT 1)")
            return (f" RETURNING pg_notify({channel}, {literal(payload(kind, ''))} || :h "
                    f"|| COALESCE({literal(HEAD_SEPARATOR)} || {head}, ''))")

        def release(kind: int) -> str:
            return f"UPDATE {L} SET expires_us = 0 WHERE {mine(kind)} AND (expires_us > {now} OR expires_us = 0)"

        self.release_lock = c(release(LOCK) + announce(LOCK, ":holder"))
        self.release_permit = c(release(SEMAPHORE) + announce(SEMAPHORE, None))
        self.extend = c(f"UPDATE {L} SET expires_us = {now} + :ttl WHERE {mine(':kind')} AND expires_us > {now}")
        self.holds = c(f"SELECT 1 FROM {L} WHERE {mine(':kind')} AND expires_us > {now}")
        self.inspect = c(f"SELECT holder, fence, expires_us - {now} FROM {L} WHERE name_hash = :h "
                         f"AND kind = {LOCK} AND slot = 0 AND expires_us > {now}")
        self.force_release = c(f"UPDATE {L} SET expires_us = 0, holder = NULL WHERE name_hash = :h "
                               f"AND kind = {LOCK} AND slot = 0 AND expires_us > {now}" + announce(LOCK, "''"))

        # -- the fair queue (one transaction that row-locks the name's lease row first) -------------------
        self.lock_name = c(f"SELECT fence FROM {L} WHERE name_hash = :h AND kind = {LOCK} AND slot = 0"
                           f"{d.for_update}")
        self.drop_expired_waiters = c(f"DELETE FROM {W} WHERE name_hash = :h AND expires_us <= {now}")
        self.join_queue = c(d.upsert(W, "name_hash, name, holder, expires_us",
                                     f"(:h, :name, :holder, {now} + :queue)", "name_hash, holder")
                            + f"expires_us = {d.new('expires_us')}")
        self.queue_head = c(f"SELECT holder FROM {W} WHERE name_hash = :h ORDER BY seq LIMIT 1")
        self.leave_queue = c(f"DELETE FROM {W} WHERE name_hash = :h AND holder = :holder")
        self.cancel_wait = c(f"DELETE FROM {W} WHERE name_hash = :h AND holder = :holder"
                             + announce(LOCK, ":holder"))

        # -- semaphores (one transaction serialised by the counter row) -----------------------------------
        if d.returning:
            self.bump_counter = c(d.upsert(L, LEASE_COLUMNS, f"(:h, {SEMAPHORE}, {COUNTER_SLOT}, :name, NULL, 0, "
                                                             f"{d.first_fence()}, 0)", LEASE_KEY)
                                  + f"fence = {d.next_fence(L)} RETURNING fence")
        else:
            self.bump_counter = c(f"UPDATE {L} SET fence = {d.next_fence(L)} WHERE name_hash = :h "
                                  f"AND kind = {SEMAPHORE} AND slot = {COUNTER_SLOT}")
        self.live_slots = c(f"SELECT slot, holder, fence, expires_us - {now} FROM {L} WHERE name_hash = :h "
                            f"AND kind = {SEMAPHORE} AND slot >= 0 AND expires_us > {now}")
        self.take_slot = c(d.upsert(L, LEASE_COLUMNS, f"(:h, {SEMAPHORE}, :slot, :name, :holder, {now} + :ttl, "
                                                      f":token, 0)", LEASE_KEY)
                           + f"holder = {d.new('holder')}, expires_us = {d.new('expires_us')}, "
                             f"fence = {d.new('fence')}")

        # -- done markers and administration ----------------------------------------------------------------
        self.mark_done = c(d.upsert(D, "name_hash, name, expires_us", f"(:h, :name, {now} + :ttl)", "name_hash")
                           + f"expires_us = {d.new('expires_us')}")
        self.done_page = c(f"SELECT name_hash, name, expires_us - {now} FROM {D} WHERE name_hash > :after "
                           f"AND expires_us > {now} ORDER BY name_hash LIMIT :limit")
        self.set_fence_floor = c(d.upsert(L, LEASE_COLUMNS, "(:h, :kind, :slot, :name, NULL, 0, 0, :token)",
                                          LEASE_KEY)
                                 + f"fence_floor = CASE WHEN {L}.fence_floor < :token THEN :token "
                                   f"ELSE {L}.fence_floor END")

    # -- batches: one statement per size, built on first use -----------------------------------------------
    # ``count`` names, bound as ``h<i>``/``name<i>``; count 0: the array form (``hs``/``names``, one array
    # parameter each; dialects with :attr:`~lockapi_sql.dialects.Dialect.arrays`)
    @lru_cache(maxsize=64)  # noqa: B019 - one Statements per backend, a few sizes each
    def claim_many(self, count: int) -> str:
        """Claim ``count`` lock rows (``h<i>``, ``name<i>``), creating missing ones. RETURNING dialects:
        returns (name_hash, fence) of those taken; others: read them with :meth:`claimed_many`."""
        d, now, L = self.dialect, self.dialect.now, self._L
        if d.returning:
            taken = f"{self._take}, fence = {d.next_fence(L)} WHERE {self._claimable} RETURNING name_hash, fence"
            if not count:  # rows in the order of the arrays (sorted), like the VALUES list
                return d.compile(f"INSERT INTO {L} ({LEASE_COLUMNS}) SELECT t.h, {LOCK}, 0, t.n, :holder, "
                                 f"{now} + :ttl, {d.first_fence()}, 0 FROM unnest(CAST(:hs AS text[]), "
                                 f"CAST(:names AS text[])) AS t(h, n) ON CONFLICT ({LEASE_KEY}) DO UPDATE SET "
                                 + taken)
            rows = ", ".join(f"(:h{i}, {LOCK}, 0, :name{i}, :holder, {now} + :ttl, {d.first_fence()}, 0)"
                             for i in range(count))
            return d.compile(d.upsert(L, LEASE_COLUMNS, rows, LEASE_KEY)
                             + f"{self._take}, fence = {d.next_fence(L)} WHERE {self._claimable} "
                               f"RETURNING name_hash, fence")
        # ON DUPLICATE KEY UPDATE (no WHERE): each assignment is conditional on the claim. Assignments
        # run left to right and see the columns already assigned, so the condition must keep its value
        # throughout: fence first (not in it), then holder (becomes :holder only where it held), then
        # expires_us (last).
        rows = ", ".join(f"(:h{i}, {LOCK}, 0, :name{i}, :holder, {now} + :ttl, {d.first_fence()}, 0)"
                         for i in range(count))
        fence = Dialect.next_fence(d, L)  # the plain expression: no LAST_INSERT_ID for many rows
        return d.compile(d.upsert(L, LEASE_COLUMNS, rows, LEASE_KEY)
                         + f"fence = CASE WHEN {self._claimable} THEN {fence} ELSE {L}.fence END, "
                           f"holder = CASE WHEN {self._claimable} THEN {d.new('holder')} ELSE {L}.holder END, "
                           f"expires_us = CASE WHEN {self._claimable} THEN {d.new('expires_us')} "
                           f"ELSE {L}.expires_us END")

    @lru_cache(maxsize=64)  # noqa: B019
    def claimed_many(self, count: int) -> str:
        """(name_hash, fence) of the rows among ``h<i>`` that ``holder`` holds (after :meth:`claim_many`)."""
        return self.dialect.compile(f"SELECT name_hash, fence FROM {self._L} WHERE name_hash "
                                    f"{_in('h', count)} AND kind = {LOCK} AND slot = 0 AND holder = :holder")

    @lru_cache(maxsize=64)  # noqa: B019
    def free_many(self, count: int) -> str:
        """End ``holder``'s leases on ``h<i>`` (announcing each, with push wake-ups)."""
        announce = (f" RETURNING pg_notify({literal(self._channel)}, {literal(payload(LOCK, ''))} || name_hash)"
                    if self.notify else "")
        return self.dialect.compile(f"UPDATE {self._L} SET expires_us = 0 WHERE name_hash {_in('h', count)} "
                                    f"AND kind = {LOCK} AND slot = 0 AND holder = :holder{announce}")

    @lru_cache(maxsize=64)  # noqa: B019
    def done_among(self, count: int) -> str:
        return self.dialect.compile(f"SELECT name_hash FROM {self._D} WHERE name_hash {_in('h', count)} "
                                    f"AND expires_us > {self.dialect.now}")


def payload(kind: int, digest: str) -> str:
    """The NOTIFY payload announcing that a lock (``l:``) or semaphore (``s:``) may have become free."""
    return f"{'s' if kind == SEMAPHORE else 'l'}:{digest}"


__all__ = ["HEAD_SEPARATOR", "Statements", "payload"]
