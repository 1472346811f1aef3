"""Fair queues for map mode: one IMap entry per lock name listing its fair waiters in arrival order.

The value is one line per waiter, ``"<expiry in ms since the epoch> <holder id>"``, oldest first. It
is only ever replaced by compare-and-set (``put_if_absent`` / ``replace_if_same`` / ``remove_if_same``),
so every client sees one order. A waiter's line is refreshed on each of its attempts; lines whose
expiry has passed are dropped by whoever writes next, so a dead waiter blocks the queue for at most
``queue_ttl``. Expiry stamps use the writers' wall clocks (the queue is advisory: lease expiry stays
the members' business), so clients should be NTP-synchronised. The entry is removed when the queue
empties; one left by waiters that all died is dropped by the next fair waiter of that name.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from hazelcast.proxy.map import Map

from lockapi.spi import BackendUnavailable

from .client import ClientHolder

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


class FairQueues:
    """``join`` (or refresh) a name's queue and learn whether the waiter is at its head; ``leave`` it."""

    def __init__(self, holder: ClientHolder) -> None:
        self._holder = holder

    def join(self, queues: Map[str, str], name: str, waiter: str, queue_ttl: float, deadline: float) -> bool:
        """Put ``waiter`` in the queue (keeping its place) for ``queue_ttl`` more seconds; True if first."""

        def refresh(waiters: Waiters) -> Waiters:
            now = int(time.time() * 1000)
            expiry = now + int(queue_ttl * 1000)
            kept = [(e, h) for e, h in waiters if e > now or h == waiter]
            if any(h == waiter for _, h in kept):
                return [(expiry if h == waiter else e, h) for e, h in kept]
            return [*kept, (expiry, waiter)]

        return self._update(queues, name, refresh, deadline)[0][1] == waiter

    def leave(self, queues: Map[str, str], name: str, waiter: str, deadline: float) -> None:
        self._update(queues, name, lambda waiters: [(e, h) for e, h in waiters if h != waiter], deadline)

    def _update(self, queues: Map[str, str], name: str, change: Callable[[Waiters], Waiters],
                deadline: float) -> Waiters:
        wait = self._holder.wait
        while True:
            current = wait(queues.get(name), deadline, "read fair queue")
            old = _decode(current)
            new = change(old)
            if new == old:
                return new
            if current is None:
                done = wait(queues.put_if_absent(name, _encode(new)), deadline, "join fair queue") is None
            elif not new:
                done = bool(wait(queues.remove_if_same(name, current), deadline, "empty fair queue"))
            else:
                done = bool(wait(queues.replace_if_same(name, current, _encode(new)), deadline,
                                 "update fair queue"))
            if done:
                return new
            if time.monotonic() > deadline:
                raise BackendUnavailable(f"{self._holder.where}: the fair queue of {name!r} stayed too contended")
