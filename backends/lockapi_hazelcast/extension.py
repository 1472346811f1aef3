"""Extending a lease entry (map mode): give the entry a new ttl only if it is still the lease's own.

An IMap has no conditional set-ttl, and what it has does not fit (measured on 5.7):

* ``replace`` and ``replace_if_same`` drop the entry's ttl: the entry would never expire;
* ``put`` and ``set`` are unconditional: a ``put`` that lands after the lease expired and a successor
  was granted overwrites the successor (the bug this module exists for);
* ``set_ttl`` is unconditional too: landing late it gives a successor's entry OUR ttl, which can be
  SHORTER than the successor's, so the successor's lease ends early while it believes it holds
  (mutual exclusion broken); it also carries no thread id, so it waits for our own key lock.

So every write here is conditional on the exact lease value, under the key's IMap lock:

1. ``try_lock(key, lease_time=L)`` with ``L = timeout / 2``: other clients' writes to the key park
   (for at most ``L``) until we unlock;
2. ``remove_if_same(key, value)``: False (not held) unless the entry is still this lease's;
3. ``put_if_absent(key, value, ttl + 1 s)``: puts the lease back with the new ttl, unless somebody
   else's entry is there (then the lease was lost meanwhile: False);
4. ``unlock(key)``, sent without waiting for its answer (a lapsed lock makes it fail harmlessly).

Between 2 and 3 the lease entry is absent. That is safe while the key lock is ours: a competitor's
``put_if_absent`` parks until we unlock and then finds our entry. If the steps took longer than the key
lock can be trusted (the caller was paused, the network was slow), the lock may have lapsed while the
entry was absent and another holder may have been granted and released in between; then the fencing
counter tells (it only moves when a grant is confirmed): unchanged since this lease's grant, the lease
is ours again; moved, our entry is withdrawn and the extension returns False. For a semaphore the
counter moves with every grant of any permit, so a slow extension of a permit on a busy semaphore
may give the permit up (a liveness cost, never a second holder).

The removal fires an entry event: every waiter of the name wakes once per extension, tries, parks
behind the key lock for a few milliseconds and is refused. And a read that lands in the gap sees no
lease: :meth:`EntryExtender.settled` reads again after the key lock is released, so ``holds`` and
``inspect`` never report a lease missing because it was being extended.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from hazelcast.future import Future
from hazelcast.proxy.map import Map

from lockapi.spi import BackendUnavailable, pause_point

from .client import ClientHolder
from .done import TTL_SLACK
from .fences import Counters

__all__ = ["KEY_LOCK_SHARE", "TRUSTED_SHARE", "EntryExtender"]

log = logging.getLogger(__name__)

T = TypeVar("T")

NEVER = ""
"""A value no lease entry has ("<token>:<holder>"): ``remove_if_same(key, NEVER)`` changes nothing and
answers only once the key is unlocked (a write waits for the key lock; a read does not)."""

KEY_LOCK_SHARE = 0.5
"""The key lock's lease, as a share of ``timeout``: competitors' writes park at most this long, which
leaves them time to answer within their own ``timeout``."""
TRUSTED_SHARE = 0.8
"""Steps 1-3 finished within this share of the key lock's lease (measured from before step 1 was
sent, by this host's monotonic clock): the key lock certainly held throughout."""
LOCK_WAIT_SHARE = 0.25
"""How long step 1 waits for a key lock held by someone else (another extension of the same lease,
or a foreign ``IMap.lock`` on lockapi's map), as a share of the key lock's lease."""


class EntryExtender:
    """``extend(...)``: the protocol above, for lock entries and permit entries alike."""

    def __init__(self, holder: ClientHolder, counters: Counters) -> None:
        self._holder = holder
        self._counters = counters

    def extend(self, operation: str, entries: Map[str, str], key: str, value: str, ttl: float, *,
               fences: Map[str, str], fence_key: str, sequence: int) -> bool:
        """Make the entry ``key`` -> ``value`` expire ``ttl`` seconds from now; False if it is not there.

        ``fence_key``/``sequence``: the fencing counter of the lease and the value it had when the lease
        was granted. ``operation`` names the pause points (``extend``, ``permit_extend``).
        """
        wait = self._holder.wait
        timeout = self._holder.settings.timeout
        key_lock = timeout * KEY_LOCK_SHARE
        started = time.monotonic()
        deadline = started + timeout
        if not wait(entries.try_lock(key, lease_time=key_lock, timeout=key_lock * LOCK_WAIT_SHARE),
                    deadline, "lock the lease entry"):
            raise BackendUnavailable(
                f"{self._holder.where}: extend: the lease entry stayed locked by another client for "
                f"{key_lock * LOCK_WAIT_SHARE:g}s; retry, and never lock lockapi's own maps")
        try:
            pause_point(f"{operation}:key-locked")
            if not wait(entries.remove_if_same(key, value), deadline, "take the lease out"):
                return False
            pause_point(f"{operation}:removed")
            try:
                other = wait(entries.put_if_absent(key, value, ttl + TTL_SLACK), deadline, "put the lease back")
            except BackendUnavailable:
                # It may still land: withdraw it (sent after it, so applied after it) and report.
                entries.remove_if_same(key, value)
                raise
            if other is not None:
                return False
            if time.monotonic() - started < key_lock * TRUSTED_SHARE:
                return True
            if self._counters.read(fences, fence_key, deadline) == sequence:
                return True  # nobody was granted while the key lock may have lapsed
            wait(entries.remove_if_same(key, value), deadline, "withdraw the lease")
            return False
        finally:
            _unlock_without_waiting(entries, key)


    def settled(self, entries: Map[str, str], key: str, read: Callable[[], Future[T]],
                deadline: float, what: str) -> T:
        """``read()`` of ``key``; if it found nothing, read again once no extension holds the key (one
        may have had the entry out). Costs one round trip, two more only when nothing was found."""
        found = self._holder.wait(read(), deadline, what)
        if found is None:
            self._holder.wait(entries.remove_if_same(key, NEVER), deadline, what)
            found = self._holder.wait(read(), deadline, what)
        return found


def _unlock_without_waiting(entries: Map[str, str], key: str) -> None:
    # Sent after the last step on the same connection, so the member applies it after that step. It
    # fails when the key lock's lease ran out first (the caller was slow): then there is nothing to undo.
    try:
        entries.unlock(key).add_done_callback(_log_unlock_failure)
    except Exception as exc:  # the client shut down meanwhile: its locks die with its connection
        log.debug("lockapi: could not unlock a hazelcast lease entry after extending it: %s", exc)


def _log_unlock_failure(future: Future[Any]) -> None:
    exc = future.exception()
    if exc is not None:
        log.debug("lockapi: unlocking a hazelcast lease entry after extending it failed: %s", exc)
