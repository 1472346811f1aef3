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
The functions here are plans (:mod:`.protocol`) on the map ``fences``.
"""

from __future__ import annotations

import time

from lockapi.spi import BackendUnavailable

from .protocol import FENCES, Call, Plan

__all__ = ["confirm", "raise_floor", "read", "read_call", "value_of"]


def read_call(key: str) -> Call:
    """The request that reads counter ``key`` (for plans that send it together with others)."""
    return Call(FENCES, "get", (key,), what="read fence")


def value_of(answer: str | None) -> int:
    """The counter's value from the answer of :func:`read_call` (0: never confirmed)."""
    return int(answer) if answer is not None else 0


def read(key: str) -> Plan[int]:
    return value_of((yield read_call(key)))


def confirm(key: str, seen: int, token: int, deadline: float, where: str) -> Plan[bool]:
    """Move the counter from ``seen`` up to ``token``; False if it already reached ``token``."""
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
