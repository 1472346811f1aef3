"""This process's CP-mode leases: who holds what, until when, and a sweeper that ends expired ones.

CP objects (FencedLock, ISemaphore) have no ttl: they are held until unlocked or until the owner's CP
session expires. So the backend that granted a lease records it here and its sweeper thread gives the
lock or permit back ``ttl`` seconds after the grant or last extension (this host's monotonic clock).

A lease stays in the table until the cluster has taken it back: while it is being given back (by
``release`` or the sweeper) it is no longer live (``live`` is None, ``extend`` fails) but still listed
by ``holding``, so the backend never grants the same FencedLock to another local holder meanwhile (a
FencedLock re-enters for its owner). A give-back that fails (the cluster is unreachable) is retried:
``release`` may be called again, and the sweeper tries again every :data:`RETRY_GIVE_BACK` seconds. A
give-back the cluster answered only after the caller stopped waiting is ``settle``d: the next
``claim`` returns that answer instead of asking again.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from lockapi.spi import LockError

__all__ = ["RETRY_GIVE_BACK", "Lease", "LeaseKey", "LeaseTable"]

log = logging.getLogger("lockapi.hazelcast.local_leases")

LeaseKey = tuple[str, str, str, int]
"""(kind ``lock``/``permit``, name, holder id, token)."""
RETRY_GIVE_BACK = 1.0
"""Seconds between the sweeper's attempts to give back a lease the cluster could not take back."""


@dataclass(eq=False)
class Lease:
    """One lock or permit held by this backend."""

    key: LeaseKey
    expires: float
    """``time.monotonic()`` at which the sweeper gives it back."""
    cp_object: str
    """The FencedLock or ISemaphore it is held on."""
    returning: bool = False
    """Being given back (or waiting for the sweeper's next try): not live any more."""
    retry_at: float | None = None
    """When the sweeper tries again to give it back, after a failed try."""
    outcome: bool | None = None
    """Set when the cluster answered a give-back after its caller had stopped waiting."""


class LeaseTable:
    """Leases by key, with a sweeper thread (started lazily) that ends them at ``expires``.

    ``give_back(lease)`` unlocks / releases on the cluster: True if it did, False if the cluster had
    already taken the lease back (its CP session expired); it raises LockError if the cluster could
    not be asked.
    """

    def __init__(self, give_back: Callable[[Lease], bool]) -> None:
        self._give_back = give_back
        self._cond = threading.Condition()
        self._leases: dict[LeaseKey, Lease] = {}
        self._heap: list[tuple[float, int, Lease]] = []
        self._pushed = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- queries -------------------------------------------------------------------------------------
    def live(self, key: LeaseKey) -> Lease | None:
        with self._cond:
            lease = self._leases.get(key)
            return lease if lease is not None and self._is_live(lease, time.monotonic()) else None

    def find(self, kind: str, name: str) -> list[Lease]:
        """Live leases of ``kind`` on ``name`` (few: one lock, or this process's permits)."""
        now = time.monotonic()
        with self._cond:
            return [lease for key, lease in self._leases.items()
                    if key[0] == kind and key[1] == name and self._is_live(lease, now)]

    def holding(self, kind: str, name: str) -> bool:
        """True while any lease of ``kind`` on ``name`` is not yet back with the cluster (live or not)."""
        with self._cond:
            return any(key[0] == kind and key[1] == name and lease.outcome is None
                       for key, lease in self._leases.items())

    @staticmethod
    def _is_live(lease: Lease, now: float) -> bool:
        return not lease.returning and lease.outcome is None and lease.expires > now

    # -- changes -------------------------------------------------------------------------------------
    def add(self, lease: Lease) -> None:
        with self._cond:
            self._leases[lease.key] = lease
            self._schedule(lease, lease.expires)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._sweep, name="lockapi-hazelcast-cp-expiry",
                                                daemon=True)
                self._thread.start()

    def rekey(self, lease: Lease, key: LeaseKey) -> bool:
        """Give a recorded lease its final key (a permit gets its token after its grant); False if it
        is no longer live (the sweeper took it back meanwhile)."""
        with self._cond:
            if self._leases.get(lease.key) is not lease or not self._is_live(lease, time.monotonic()):
                return False
            del self._leases[lease.key]
            lease.key = key
            self._leases[key] = lease
            return True

    def extend(self, key: LeaseKey, expires: float) -> bool:
        with self._cond:
            lease = self._leases.get(key)
            if lease is None or not self._is_live(lease, time.monotonic()):
                return False
            lease.expires = expires
            self._schedule(lease, expires)
            return True

    def claim(self, key: LeaseKey) -> Lease | None:
        """Mark the live lease ``key`` as being given back and return it (the caller gives it back,
        then calls :meth:`returned` or, if that failed, :meth:`unclaim`); None if it is not live.

        A settled lease (see :meth:`settle`) is returned too: its ``outcome`` is the answer."""
        with self._cond:
            lease = self._leases.get(key)
            if lease is None or not (lease.outcome is not None or self._is_live(lease, time.monotonic())):
                return None
            lease.returning = True
            return lease

    def unclaim(self, lease: Lease) -> None:
        """The give-back failed: the lease is live again until it expires (then the sweeper retries)."""
        with self._cond:
            if self._leases.get(lease.key) is lease and lease.outcome is None:
                lease.returning = False
                self._schedule(lease, lease.expires)

    def settle(self, lease: Lease, outcome: bool) -> None:
        """The cluster answered a give-back nobody waited for any more: keep its answer for the next
        :meth:`claim` (or until the lease's ttl has passed)."""
        with self._cond:
            if self._leases.get(lease.key) is lease:
                lease.outcome = outcome
                self._schedule(lease, lease.expires)

    def returned(self, lease: Lease) -> None:
        """The cluster has the lease back (or had already): forget it."""
        with self._cond:
            if self._leases.get(lease.key) is lease:
                del self._leases[lease.key]

    def close(self) -> list[Lease]:
        """Stop the sweeper; return the remaining leases (the caller gives them back)."""
        with self._cond:
            self._closed = True
            leases, self._leases = list(self._leases.values()), {}
            self._cond.notify()
        return leases

    # -- the sweeper ---------------------------------------------------------------------------------
    def _schedule(self, lease: Lease, when: float) -> None:
        self._pushed += 1
        heapq.heappush(self._heap, (when, self._pushed, lease))
        self._cond.notify()

    def _due(self) -> list[Lease]:
        """Wait for leases whose time has come and claim them; empty once closed."""
        with self._cond:
            while True:
                if self._closed:
                    return []
                now = time.monotonic()
                due = []
                while self._heap and self._heap[0][0] <= now:
                    when, _, lease = heapq.heappop(self._heap)
                    if self._leases.get(lease.key) is not lease:
                        continue  # given back meanwhile
                    if lease.outcome is not None and lease.expires <= now:
                        del self._leases[lease.key]  # nobody asked for the late answer
                        continue
                    expired = not lease.returning and lease.expires == when
                    if expired or lease.retry_at == when:
                        lease.returning, lease.retry_at = True, None
                        due.append(lease)
                if due:
                    return due
                self._cond.wait(self._heap[0][0] - now if self._heap else None)

    def _sweep(self) -> None:
        while due := self._due():
            for lease in due:
                try:
                    self._give_back(lease)
                except LockError as exc:
                    log.warning("lockapi: could not give back expired hazelcast lease %s (retrying in %gs): %s",
                                lease.key[:2], RETRY_GIVE_BACK, exc)
                    with self._cond:
                        if self._leases.get(lease.key) is lease:
                            lease.retry_at = time.monotonic() + RETRY_GIVE_BACK
                            self._schedule(lease, lease.retry_at)
                    continue
                self.returned(lease)
