"""Fair queues for map mode: one IMap entry per lock name listing its fair waiters in arrival order.

The value is one line per waiter, ``"<expiry in ms since the epoch> <holder id>"``, oldest first. It
is only ever replaced by compare-and-set (``put_if_absent`` / ``replace_if_same`` / ``remove_if_same``),
so every client sees one order. A waiter's line is refreshed on each of its attempts; lines whose
expiry has passed are dropped by whoever writes next, so a dead waiter blocks the queue for at most
``queue_ttl``. Expiry stamps use the writers' wall clocks (the queue is advisory: lease expiry stays
the members' business), so clients should be NTP-synchronised. The entry is removed when the queue
empties; one left by waiters that all died is dropped by the next fair waiter of that name.

A pause between reading the entry and writing it only makes the compare-and-set fail and the update
start again: the pause points (``acquire_fair:queue-read``, ``cancel_wait:queue-read``) prove it.
The functions here are plans (:mod:`.protocol`) on the map ``queues``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from lockapi.spi import BackendUnavailable, pause_point

from .protocol import QUEUES, Call, Plan

__all__ = ["Waiters", "join", "leave"]

Waiters = list[tuple[int, str]]


def _decode(value: str | None) -> Waiters:
    if not value:
        return []
    waiters = []
    for line in value.split("\n"):
        expiry, _, holder = line.partition(" ")
        waiters.append((int(expiry), holder))
    return waiters


def _encode(waiters: Waiters) -> str:
    return "\n".join(f"{expiry} {holder}" for expiry, holder in waiters)


def join(name: str, waiter: str, queue_ttl: float, deadline: float, where: str) -> Plan[tuple[bool, str | None]]:
    """Put ``waiter`` in the queue of ``name`` (keeping its place) for ``queue_ttl`` more seconds.

    Returns (is ``waiter`` first, the entry's value as written): pass the value to :func:`leave`.
    """

    def refresh(waiters: Waiters) -> Waiters:
        now = int(time.time() * 1000)
        expiry = now + int(queue_ttl * 1000)
        kept = [(e, h) for e, h in waiters if e > now or h == waiter]
        if any(h == waiter for _, h in kept):
            return [(expiry if h == waiter else e, h) for e, h in kept]
        return [*kept, (expiry, waiter)]

    waiters, value = yield from _update(name, refresh, deadline, where, "acquire_fair:queue-read")
    return waiters[0][1] == waiter, value


def leave(name: str, waiter: str, deadline: float, where: str, *, written: str | None = None,
          point: str = "cancel_wait:queue-read") -> Plan[None]:
    """Take ``waiter`` out of the queue of ``name``. ``written``: the value :func:`join` wrote; while
    nobody changed the entry since, one compare-and-set does it (no read)."""

    def without(waiters: Waiters) -> Waiters:
        return [(e, h) for e, h in waiters if h != waiter]

    if written is not None and (yield from _write(name, written, without(_decode(written)))):
        return
    yield from _update(name, without, deadline, where, point)


def _update(name: str, change: Callable[[Waiters], Waiters], deadline: float, where: str, point: str
            ) -> Plan[tuple[Waiters, str | None]]:
    """Read, change and compare-and-set the entry until the write wins; (new waiters, new value)."""
    while True:
        current = yield Call(QUEUES, "get", (name,), what="read fair queue")
        pause_point(point)
        old = _decode(current)
        new = change(old)
        if new == old:
            return new, current
        if (yield from _write(name, current, new)):
            return new, _encode(new) if new else None
        if time.monotonic() > deadline:
            raise BackendUnavailable(f"{where}: the fair queue of {name!r} stayed too contended; retry")


def _write(name: str, current: str | None, new: Waiters) -> Plan[bool]:
    """Replace the entry's value ``current`` (None: absent) by ``new``; False if it was not ``current``."""
    if current is None:
        return not new or (yield Call(QUEUES, "put_if_absent", (name, _encode(new)), what="join fair queue")) is None
    if not new:
        return bool((yield Call(QUEUES, "remove_if_same", (name, current), what="empty fair queue")))
    return bool((yield Call(QUEUES, "replace_if_same", (name, current, _encode(new)), what="update fair queue")))
