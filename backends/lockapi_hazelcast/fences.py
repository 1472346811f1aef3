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
Where the proposal ``g`` of step 1 came from does not matter to that argument: step 3 alone decides,
on the member, whether ``t`` is above every token confirmed so far. So a lock attempt may skip the
read and propose from :class:`KnownCounters` (what this process last learnt of the counter); a stale
value there fails the confirm like a stale read and costs a withdrawal and a retry, never a repeated
or lower token. The functions here are plans (:mod:`.protocol`) on the map ``fences``.
"""

from __future__ import annotations

import threading
import time

from lockapi.spi import BackendUnavailable

from .protocol import FENCES, Call, Plan

__all__ = ["KNOWN_COUNTERS", "KnownCounters", "confirm", "raise_floor", "read", "read_call", "value_of"]

KNOWN_COUNTERS = 4096
"""Counters a :class:`KnownCounters` remembers at most (the oldest learnt is forgotten first)."""


class KnownCounters:
    """What this process last learnt of some fencing counters: a proposal for the next grant, not a fact.

    :meth:`proposal` is the value to propose ``+ 1`` from without reading the counter, or None: read
    it first. A counter is known after a grant through this object confirmed a token (``learn``); it
    is forgotten after a refused attempt (the name is busy: reading first refuses in one round trip),
    and it is never proposed from again (``distrust``) once a confirm found the counter moved by
    someone else: the name is shared with other processes, whose grants would make every cached
    proposal fail its confirm. At most ``size`` counters are kept. Thread-safe; no I/O.
    """

    def __init__(self, size: int = KNOWN_COUNTERS) -> None:
        self._size = size
        self._values: dict[str, int | None] = {}  # None: distrusted
        self._lock = threading.Lock()

    def proposal(self, key: str) -> int | None:
        with self._lock:
            return self._values.get(key)

    def learn(self, key: str, confirmed: int) -> None:
        """``confirmed`` was just confirmed on counter ``key`` (ignored for a distrusted counter)."""
        with self._lock:
            if key in self._values:
                known = self._values[key]
                if known is not None:  # max: threads of this process may learn out of order
                    self._values[key] = max(known, confirmed)
                return
            if len(self._values) >= self._size:
                del self._values[next(iter(self._values))]
            self._values[key] = confirmed

    def forget(self, key: str) -> None:
        """Read counter ``key`` before the next proposal (kept distrusted if it was)."""
        with self._lock:
            if self._values.get(key) is not None:
                del self._values[key]

    def distrust(self, key: str) -> None:
        """Always read counter ``key`` before proposing (until :data:`KNOWN_COUNTERS` others push it out)."""
        with self._lock:
            if key not in self._values and len(self._values) >= self._size:
                del self._values[next(iter(self._values))]
            self._values[key] = None


def read_call(key: str) -> Call:
    """The request that reads counter ``key`` (for plans that send it together with others)."""
    return Call(FENCES, "get", (key,), what="read fence")


def value_of(answer: str | None) -> int:
    """The counter's value from the answer of :func:`read_call` (0: never confirmed)."""
    return int(answer) if answer is not None else 0


def read(key: str) -> Plan[int]:
    return value_of((yield read_call(key)))


def confirm(key: str, seen: int, token: int, deadline: float, where: str) -> Plan[bool]:
    """Move the counter from ``seen`` up to ``token``; False if it already reached ``token``.

    ``seen`` is only the first guess of the counter's value (a read, or :class:`KnownCounters`): a
    wrong guess costs a read and another compare-and-set, and the answer is the same."""
    while True:
        if seen == 0:
            previous = yield Call(FENCES, "put_if_absent", (key, str(token)), what="fence")
            if previous is None:
                return True
            seen = int(previous)
        elif (yield Call(FENCES, "replace_if_same", (key, str(seen), str(token)), what="fence")):
            return True
        else:
            seen = yield from read(key)
        if seen >= token:
            return False
        if time.monotonic() > deadline:
            raise BackendUnavailable(f"{where}: a fence counter stayed too contended")


def raise_floor(key: str, floor: int, deadline: float, where: str) -> Plan[None]:
    """Make the counter at least ``floor`` (so the next token is greater than ``floor``)."""
    seen = yield from read(key)
    if seen < floor:
        yield from confirm(key, seen, floor, deadline, where)
