"""A bounded, expiring map from (kind, name, holder) to the other backend's token of that lease.

Entries expire ``ttl + GRACE`` seconds after they were put or refreshed (a lease that was never released
is gone by then on both backends). At most ``capacity`` entries: the oldest are evicted first.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

GRACE = 5.0

Key = tuple[str, str, str]


class TokenMap:
    """The other backend's token of each live lease, by (kind, name, holder); bounded, entries expire."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._items: OrderedDict[Key, tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: Key, token: int, ttl: float) -> None:
        now = time.monotonic()
        with self._lock:
            self._items[key] = (token, now + ttl + GRACE)
            self._items.move_to_end(key)
            while self._items:
                oldest, (_, expires) = next(iter(self._items.items()))
                if expires > now and len(self._items) <= self._capacity:
                    break
                del self._items[oldest]

    def get(self, key: Key) -> int | None:
        with self._lock:
            item = self._items.get(key)
        return item[0] if item is not None and item[1] > time.monotonic() else None

    def pop(self, key: Key) -> int | None:
        with self._lock:
            item = self._items.pop(key, None)
        return item[0] if item is not None and item[1] > time.monotonic() else None
