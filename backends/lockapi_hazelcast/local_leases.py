"""This process's CP-mode leases: who holds what, until when, and a sweeper that ends expired ones.

CP objects (FencedLock, ISemaphore) have no ttl: they are held until unlocked or until the owner's CP
session expires. So the backend that granted a lease records it here and its sweeper thread gives the
lock or permit back ``ttl`` seconds after the grant or last extension (this host's monotonic clock).
"""

from __future__ import annotations

import contextlib
import heapq
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from lockapi.spi import LockError


@dataclass
class Lease:
    """One lock or permit held by this backend: ``key`` = (kind, name, holder, token)."""

    key: tuple[str, str, str, int]
    expires: float
    """``time.monotonic()`` at which the sweeper gives it back."""
    give_back: Callable[[], None]
    """Unlock / release on the cluster (called once, by release or by the sweeper)."""


class LeaseTable:
    """Leases by key, with a sweeper thread (started lazily) that ends them at ``expires``."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._leases: dict[tuple[str, str, str, int], Lease] = {}
        self._heap: list[tuple[float, tuple[str, str, str, int]]] = []
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(self, lease: Lease) -> None:
        with self._cond:
            self._leases[lease.key] = lease
            heapq.heappush(self._heap, (lease.expires, lease.key))
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._sweep, name="lockapi-hazelcast-cp-expiry",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def live(self, key: tuple[str, str, str, int]) -> Lease | None:
        with self._cond:
            lease = self._leases.get(key)
            return lease if lease is not None and lease.expires > time.monotonic() else None

    def find(self, kind: str, name: str) -> list[Lease]:
        """Live leases of ``kind`` on ``name`` (few: one lock, or this process's permits)."""
        now = time.monotonic()
        with self._cond:
            return [lease for key, lease in self._leases.items()
                    if key[0] == kind and key[1] == name and lease.expires > now]

    def extend(self, key: tuple[str, str, str, int], ttl: float) -> bool:
        with self._cond:
            lease = self._leases.get(key)
            if lease is None or lease.expires <= time.monotonic():
                return False
            lease.expires = time.monotonic() + ttl
            heapq.heappush(self._heap, (lease.expires, key))
            self._cond.notify()
            return True

    def pop(self, key: tuple[str, str, str, int]) -> Lease | None:
        """Remove and return the lease if still live (the caller gives it back)."""
        with self._cond:
            lease = self._leases.pop(key, None)
            if lease is not None and lease.expires <= time.monotonic():
                self._leases[key] = lease  # expired: the sweeper gives it back
                return None
            return lease

    def close(self) -> list[Lease]:
        """Stop the sweeper; return the remaining leases (the caller gives them back)."""
        with self._cond:
            self._closed = True
            leases, self._leases = list(self._leases.values()), {}
            self._cond.notify()
        return leases

    def _sweep(self) -> None:
        while True:
            with self._cond:
                due: list[Lease] = []
                while not due:
                    if self._closed:
                        return
                    now = time.monotonic()
                    while self._heap and self._heap[0][0] <= now:
                        expires, key = heapq.heappop(self._heap)
                        lease = self._leases.get(key)
                        if lease is not None and lease.expires == expires:
                            due.append(self._leases.pop(key))
                    if not due:
                        self._cond.wait(self._heap[0][0] - now if self._heap else None)
            for lease in due:
                with contextlib.suppress(LockError):
                    lease.give_back()
