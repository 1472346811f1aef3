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
4. ``unlock(key)``; its answer is not used (a lapsed lock makes it fail harmlessly): the blocking client
   sends it without waiting, the asyncio client awaits it (see below).

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
lease: :func:`settled` reads again after the key lock is released, so ``holds`` and
``inspect`` never report a lease missing because it was being extended.

Both are plans (:mod:`.protocol`). The key lock belongs to the thread (blocking client) or to the asyncio
TASK (``hazelcast.asyncio``: the task's id) that took it: a runner runs each plan on the caller's thread or
in the caller's task, never spreading one over several, and the asyncio runner awaits step 4 in that task
(unlocking from another task would fail, and leave competitors parked until the key lock's lease ends).
"""

from __future__ import annotations

import time
from typing import Any

from lockapi.spi import BackendUnavailable, pause_point

from . import fences
from .done import TTL_SLACK
from .protocol import Call, Plan

__all__ = ["KEY_LOCK_SHARE", "NEVER", "TRUSTED_SHARE", "extend", "settled"]

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


def extend(operation: str, entries: str, key: str, value: str, ttl: float, *, fence_key: str, sequence: int,
           timeout: float, deadline: float, where: str) -> Plan[bool]:
    """Make the entry ``key`` -> ``value`` of map ``entries`` expire ``ttl`` seconds from now; False if it
    is not there.

    ``fence_key``/``sequence``: the fencing counter of the lease and the value it had when the lease
    was granted. ``operation`` names the pause points (``extend``, ``permit_extend``). ``deadline`` is
    the call's (``timeout`` from when it started): the key lock's lease is measured from then.
    """
    key_lock = timeout * KEY_LOCK_SHARE
    started = deadline - timeout
    if not (yield Call(entries, "try_lock", (key,), {"lease_time": key_lock, "timeout": key_lock * LOCK_WAIT_SHARE},
                       what="lock the lease entry")):
        raise BackendUnavailable(
            f"{where}: extend: the lease entry stayed locked by another client for "
            f"{key_lock * LOCK_WAIT_SHARE:g}s; retry, and never lock lockapi's own maps")
    try:
        pause_point(f"{operation}:key-locked")
        if not (yield Call(entries, "remove_if_same", (key, value), what="take the lease out")):
            return False
        pause_point(f"{operation}:removed")
        try:
            other = yield Call(entries, "put_if_absent", (key, value, ttl + TTL_SLACK), what="put the lease back")
        except BackendUnavailable:
            # It may still land: withdraw it (sent after it, so applied after it) and report.
            yield Call(entries, "remove_if_same", (key, value), what="withdraw the lease", needs_answer=False)
            raise
        if other is not None:
            return False
        if time.monotonic() - started < key_lock * TRUSTED_SHARE:
            return True
        if (yield from fences.read(fence_key)) == sequence:
            return True  # nobody was granted while the key lock may have lapsed
        yield Call(entries, "remove_if_same", (key, value), what="withdraw the lease")
        return False
    finally:
        # Sent after the last step on the same connection, so the member applies it after that step. It
        # fails when the key lock's lease ran out first (the caller was slow): then there is nothing to undo.
        yield Call(entries, "unlock", (key,), what="unlock the lease entry", needs_answer=False)


def settled(entries: str, key: str, read: Call) -> Plan[Any]:
    """The answer of ``read`` (of ``key`` in map ``entries``); if it found nothing, read again once no
    extension holds the key (one may have had the entry out). Costs one round trip, two more only when
    nothing was found."""
    found = yield read
    if found is None:
        yield Call(entries, "remove_if_same", (key, NEVER), what=read.what)
        found = yield read
    return found
