"""Fencing counters on an IMap: one entry per name that is never deleted, moved only by compare-and-set.

The entry holds the LAST CONFIRMED token (as a decimal string: no int-width surprises). A grant works
in three steps (IMap has no atomic increment for Python clients; entry processors are Java-only):

1. read the counter ``g`` and propose ``t = g + 1``;
2. take the lease entry with ``t`` in its value (``put_if_absent`` with the ttl);
3. confirm: raise the counter from its current value to ``t`` by compare-and-set. If the counter is
   already ``>= t``, a grant with a token ``>= t`` was confirmed meanwhile (our read was stale), so the
   lease entry from step 2 is withdrawn and the attempt restarts.

Confirmed tokens therefore strictly increase per counter and are never reused, whatever the
interleaving, and they survive release, expiry and client restarts (the counter entry has no ttl).
"""

from __future__ import annotations

import time

from hazelcast.proxy.map import Map

from lockapi.spi import BackendUnavailable

from .client import ClientHolder

__all__ = ["Counters"]


class Counters:
    """The fence map: ``read`` a counter, ``confirm`` a proposed token, ``raise_floor`` for migration."""

    def __init__(self, holder: ClientHolder) -> None:
        self._holder = holder

    def read(self, fences: Map[str, str], key: str, deadline: float) -> int:
        value = self._holder.wait(fences.get(key), deadline, "read fence")
        return int(value) if value is not None else 0

    def confirm(self, fences: Map[str, str], key: str, seen: int, token: int, deadline: float) -> bool:
        """Move the counter from ``seen`` up to ``token``; False if it already reached ``token``."""
        while True:
            if seen == 0:
                previous = self._holder.wait(fences.put_if_absent(key, str(token)), deadline, "fence")
                if previous is None:
                    return True
                seen = int(previous)
            elif self._holder.wait(fences.replace_if_same(key, str(seen), str(token)), deadline, "fence"):
                return True
            else:
                seen = self.read(fences, key, deadline)
            if seen >= token:
                return False
            if time.monotonic() > deadline:
                raise BackendUnavailable(f"{self._holder.where}: a fence counter stayed too contended")

    def raise_floor(self, fences: Map[str, str], key: str, floor: int, deadline: float) -> None:
        """Make the counter at least ``floor`` (so the next token is greater than ``floor``)."""
        seen = self.read(fences, key, deadline)
        if seen < floor:
            self.confirm(fences, key, seen, floor, deadline)
