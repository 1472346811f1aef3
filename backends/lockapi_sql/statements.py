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
  addressed to the head of the name's fair queue, if any; a lock's release does so only while its row
  is *marked* (``waited_us`` in the future: someone may wait on it, see :attr:`Statements.mark`),
  unless the backend's ``notify`` option is ``always``. Almost always nobody waits, and the
  announcement (``pg_notify`` and the head's sub-select) was a third of a release's server time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache

from lockapi_sql.dialects import Dialect
from lockapi_sql.schema import COUNTER_SLOT, HEAD_SEPARATOR, LOCK, SEMAPHORE, Tables

LEASE_COLUMNS = "name_hash, kind, slot, name, holder, expires_us, fence, fence_floor"
"""The columns every insert lists (``waited_us`` keeps its default 0, so processes of the previous
version, which do not know it, insert rows as before)."""
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

    def __init__(self, dialect: Dialect, tables: Tables, *, notify: bool, always: bool = False) -> None:
        self.dialect = dialect
        self.notify = notify and dialect.notifies
        """Releases announce themselves (PostgreSQL with ``listen`` on); waiters then mark rows."""
        self.always = always
        """A lock's release announces itself even when its row is not marked (``notify=always``: the
        upgrade window, while processes of the previous version, which do not mark, still wait)."""
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
        self.claim = d.prepared("lockapi_claim", claim + returning)
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

        def mine(kind: int | str, slot: str = "slot >= 0") -> str:
            return f"name_hash = :h AND kind = {kind} AND {slot} AND holder = :holder AND fence = :token"

        channel = literal(tables.notify_channel)

        def announce(kind: int, leaving: str | None, *, marked: bool = False) -> str:
            """A releasing statement's announcement (push wake-ups): the kind's payload for the name,
            addressed (locks) to the head of its fair queue other than ``leaving`` (SQL), if any;
            ``marked``: only while the row is marked (unless ``always``)."""
            if not self.notify:
                return ""
            if leaving is None:
                return f" RETURNING pg_notify({channel}, {literal(payload(kind, ''))} || :h)"
            head = (f"(SELECT q.holder FROM {W} q WHERE q.name_hash = :h AND q.expires_us > {now} "
                    f"AND q.holder <> {leaving} ORDER BY q.seq LIMIT 1)")
            notify = (f"pg_notify({channel}, {literal(payload(kind, ''))} || :h "
                      f"|| COALESCE({literal(HEAD_SEPARATOR)} || {head}, ''))")
            if marked and not always:
                # ``waited_us`` is read from the row version the UPDATE writes (RETURNING sees the new
                # row; under READ COMMITTED an UPDATE that meets a concurrently updated row re-reads its
                # newest committed version, EvalPlanQual), so a mark that committed before the release
                # took the row is seen, even after the release's snapshot (see :attr:`mark`); the head's
                # sub-select runs only when the CASE takes its branch.
                return f" RETURNING CASE WHEN {L}.waited_us > {now} THEN {notify} END"
            return f" RETURNING {notify}"

        def release(kind: int, slot: str = "slot >= 0") -> str:
            """A lease's release (a lock's row has slot 0: an equality on the whole key, not a range)."""
            return (f"UPDATE {L} SET expires_us = 0 WHERE {mine(kind, slot)} "
                    f"AND (expires_us > {now} OR expires_us = 0)")

        self.release_lock = d.prepared("lockapi_release", release(LOCK, "slot = 0")
                                       + announce(LOCK, ":holder", marked=True))
        self.release_permit = c(release(SEMAPHORE) + announce(SEMAPHORE, None))
        self.extend = c(f"UPDATE {L} SET expires_us = {now} + :ttl WHERE {mine(':kind')} AND expires_us > {now}")
        self.holds = c(f"SELECT 1 FROM {L} WHERE {mine(':kind')} AND expires_us > {now}")
        self.inspect = c(f"SELECT holder, fence, expires_us - {now} FROM {L} WHERE name_hash = :h "
                         f"AND kind = {LOCK} AND slot = 0 AND expires_us > {now}")
        self.force_release = c(f"UPDATE {L} SET expires_us = 0, holder = NULL WHERE name_hash = :h "
                               f"AND kind = {LOCK} AND slot = 0 AND expires_us > {now}" + announce(LOCK, "''"))

        # -- waiters' marks (push wake-ups) ---------------------------------------------------------------
        marking = f"waited_us = GREATEST(waited_us, {now} + :horizon)"
        lock_row = f"name_hash = :h AND kind = {LOCK} AND slot = 0"
        self.mark = self.remaining
        """A waiter's mark on a lock row (``:h``, ``:name``), ``:horizon`` microseconds past the server's
        now (never lowering another waiter's; the row is created, free, if it does not exist yet, so that
        its first lease's release is announced too), returning the lease's time left like
        :attr:`remaining` (<= 0: free now). Without push wake-ups: :attr:`remaining`.

        Why a waiter that subscribed first and then marks misses no release (READ COMMITTED, autocommit):
        the mark and a release both write the one lease row, so one of them takes the row lock first.

        * The release first (committed before the mark started, or still running when the mark reached the
          row: the mark waits for its row lock, then, the row having been updated by a transaction that
          committed meanwhile, updates its newest version: ``ON CONFLICT DO UPDATE`` locks and updates
          the newest committed version even if the statement's snapshot does not see it): the mark
          writes on top of the released version, so what it RETURNs says free (``<= 0``). The caller
          wakes its waiter, which re-checks at once.
        * The mark first (committed before the release's snapshot, or the release reached the row while
          the mark held it or after it committed): the release's UPDATE acts on the marked version (the
          same re-read, its WHERE still holding since a mark changes only ``waited_us``), its RETURNING
          sees ``waited_us`` in the future and it notifies; the waiter's LISTEN was in effect before the
          mark (or its listener wakes everyone once LISTEN takes effect).

        A mark lapses by itself (a waiter that gave up costs needless notifications until then); a waiter
        re-marks before it does (:class:`lockapi_sql.plans.Plans`). Semaphores keep announcing every
        release (a permit release is rarer and a slot row would need marks per slot)."""
        if self.notify:
            self.mark = c(d.upsert(L, f"{LEASE_COLUMNS}, waited_us",
                                   f"(:h, {LOCK}, 0, :name, NULL, 0, 0, 0, {now} + :horizon)", LEASE_KEY)
                          + f"waited_us = GREATEST({L}.waited_us, {d.new('waited_us')}) "
                            f"RETURNING expires_us - {now}")

        # -- the fair queue (one transaction that row-locks the name's lease row first) -------------------
        # With push wake-ups the row lock is a mark (an UPDATE locks the row as FOR UPDATE did), so a fair
        # waiter's place keeps the releases of the name announcing to the head of the queue.
        self.lock_name = (c(f"UPDATE {L} SET {marking} WHERE {lock_row}") if self.notify else
                          c(f"SELECT fence FROM {L} WHERE {lock_row}{d.for_update}"))
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


WatchedKey = tuple[int, str]
"""(kind, name hash) of a watched name: its lock row, or its semaphore's slot rows."""
RowKey = tuple[str, int, int]
"""(name_hash, kind, slot) of one lease row."""


class WaitStatements:
    """MariaDB's server-side wait for :mod:`lockapi_sql.waitloop`: read-only, no parameters (every
    value is a name hash in hex or an integer, written into the text: the watched set changes only
    on the contended path, and a compound statement is parsed on each run anyway)."""

    def __init__(self, dialect: Dialect, tables: Tables) -> None:
        self._L = tables.leases.name
        self._now = dialect.now

    def rows(self, keys: Iterable[WatchedKey]) -> str:
        """The watched rows now, one consistent read: (name_hash, kind, slot, fence, live)."""
        return self._rows(keys)

    def _rows(self, keys: Iterable[WatchedKey]) -> str:
        return (f"SELECT name_hash, kind, slot, fence, expires_us > {self._now} FROM {self._L} "
                f"WHERE {self._watched(keys)}")

    def wait(self, keys: Iterable[WatchedKey], snapshot: Mapping[RowKey, tuple[int, bool]], guard: str,
             interval: float, longest: float, slowest: float = 0.02) -> str:
        """An anonymous block (MariaDB >= 10.1) that sleeps (``interval`` seconds at first, then an eighth
        of the time waited so far, at most ``slowest``) until a watched row differs from ``snapshot`` in
        a way that may free it (see :func:`fired`), the user lock ``guard`` is free (the watched set
        grew) or ``longest`` seconds passed; then :meth:`rows`."""
        keys = list(keys)
        free = _strings(f"{h},{k},{s},{f}" for (h, k, s), (f, live) in snapshot.items() if not live)
        held = _strings(f"{h},{k},{s},{f}" for (h, k, s), (f, live) in snapshot.items() if live)
        held_keys = _strings(f"{h},{k},{s}" for (h, k, s), (f, live) in snapshot.items() if live)
        now, key = self._now, "CONCAT_WS(',', name_hash, kind, slot)"
        row = "CONCAT_WS(',', name_hash, kind, slot, fence)"
        # a row not live now that the snapshot did not have free with this token (released, expired,
        # or taken and freed again), or a row held now under another token than the snapshot's holder
        changed = (f"(expires_us <= {now} AND {row} NOT IN ({free})) OR "
                   f"(expires_us > {now} AND {key} IN ({held_keys}) AND {row} NOT IN ({held}))")
        # the pause grows with the time waited (an eighth of it, from ``interval`` up to ``slowest``): a
        # short hold is noticed within about ``interval``, a long one costs the server few looks
        pause = f"GREATEST({interval:.6f}, LEAST({slowest:.6f}, ({now} - started) / {8 * 1_000_000}))"
        return (f"BEGIN NOT ATOMIC DECLARE started BIGINT DEFAULT {now}; "
                f"DECLARE ends BIGINT DEFAULT started + {round(longest * 1e6)}; "
                f"WHILE IS_FREE_LOCK('{_guard_name(guard)}') = 0 AND {now} < ends AND NOT EXISTS "
                f"(SELECT 1 FROM {self._L} WHERE ({self._watched(keys)}) AND ({changed})) DO "
                f"DO SLEEP({pause}); END WHILE; {self._rows(keys)}; END")

    def _watched(self, keys: Iterable[WatchedKey]) -> str:
        locks = _strings(h for k, h in keys if k == LOCK and _HEX.fullmatch(h))
        slots = _strings(h for k, h in keys if k == SEMAPHORE and _HEX.fullmatch(h))
        return (f"(kind = {LOCK} AND slot = 0 AND name_hash IN ({locks})) OR "
                f"(kind = {SEMAPHORE} AND slot >= 0 AND name_hash IN ({slots}))")


_HEX = re.compile(r"[0-9a-f]{64}")
_GUARD = re.compile(r"[A-Za-z0-9_]{1,64}")


def _strings(values: Iterable[str]) -> str:
    """A SQL list of string literals (values are hex digits, digits and commas only); ``''`` if empty,
    so that ``IN (..)`` stays valid and matches nothing."""
    return ", ".join(f"'{v}'" for v in values) or "''"


def _guard_name(guard: str) -> str:
    if not _GUARD.fullmatch(guard):
        raise ValueError(f"bad user lock name {guard!r}")
    return guard


def fired(snapshot: Mapping[RowKey, tuple[int, bool]], rows: Iterable[tuple[str, int, int, int, int]]
          ) -> set[WatchedKey]:
    """The watched names whose rows changed since ``snapshot`` in a way that may have freed them, by the
    rule of :meth:`WaitStatements.wait`: a row not live now that was not free with the same token, or a
    row live now under another token than the one the snapshot saw live."""
    out: set[WatchedKey] = set()
    for h, kind, slot, fence, live in rows:
        then = snapshot.get((h, int(kind), int(slot)))
        if (not live and then != (int(fence), False)) or (live and then is not None and then[1]
                                                           and then[0] != int(fence)):
            out.add((int(kind), h))
    return out


def payload(kind: int, digest: str) -> str:
    """The NOTIFY payload announcing that a lock (``l:``) or semaphore (``s:``) may have become free."""
    return f"{'s' if kind == SEMAPHORE else 'l'}:{digest}"


__all__ = ["HEAD_SEPARATOR", "Statements", "payload"]
