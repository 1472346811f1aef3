"""Map mode's operations as plans (:mod:`.protocol`): what :class:`~lockapi_hazelcast.MapBackend` and
:class:`~lockapi_hazelcast.AsyncMapBackend` both run. See :mod:`.map_backend` for the data layout.

A grant is three round trips: read the fencing counter (and the entry: a held name is refused right
there), ``put_if_absent`` the lease entry with the proposed token, confirm the token on the counter
(:mod:`.fences`); two when this process confirmed the name's last token (the read is skipped, see
:meth:`MapProtocol._take`); extension is :mod:`.extension`, fair queues :mod:`.fair`. Every write is conditional
on what was read, so a holder stopped between two round trips (:data:`PAUSE_POINTS`) never overwrites
another holder's lease.

A semaphore token is ``(sequence << SLOT_BITS) | slot``: it increases with the per-name sequence and
tells release/extend which slot entry is the permit's, whichever process calls them. An attempt reads
:data:`WINDOW` random slots; only when they are all taken does it read every slot before refusing, so
its cost grows with ``permits`` only on a (nearly) full semaphore, and ``permits`` is at most
:data:`MAX_PERMITS`.

Each operation takes ``deadline`` (``time.monotonic()`` by which the call answers; the runner bounds
every step by it too) where it loops or measures time.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from hazelcast.core import SimpleEntryView

from lockapi.spi import Attempt, Capability, LockInfo, pause_point

from . import extension, fair, fences
from .done import TTL_SLACK, seconds_left
from .protocol import LOCKS, PERMITS, Call, Plan, Together
from .settings import Settings

__all__ = [
    "CAPABILITIES", "DESCRIPTION", "MAX_PERMITS", "PAUSE_POINTS", "SLOT_BITS", "MapProtocol",
    "name_of_permit_key",
]

SLOT_BITS = 20
"""Low bits of a semaphore token that hold the slot (fixed: tokens already issued decode with it)."""
MAX_PERMITS = 1024
"""The most permits a map-mode semaphore may have (``Backend.max_permits``: more is InvalidArgument)."""
WINDOW = 16
"""Slots an attempt reads first; all of them only if these are all taken."""
STALE_RETRIES = 3
"""Attempts when a proposed token turned out stale (another grant was confirmed meanwhile)."""
VIEWS_FOR_RETRY_AFTER = 64
"""Above this many permits, a denied semaphore attempt reports no ``retry_after`` (too many reads)."""

CAPABILITIES = frozenset({
    Capability.PUSH_WAKEUP, Capability.MULTI_PROCESS, Capability.MULTI_HOST, Capability.FAIR,
    Capability.ITER_DONE, Capability.ADMIN, Capability.BACKEND_EXPIRY,
})
"""Map mode's capabilities, sync and asyncio alike (``iter_done`` is in the sync SPI only)."""
DESCRIPTION = "Hazelcast IMap leases, any edition (AP: not exclusive under network partitions)"
PAUSE_POINTS = frozenset({
    "acquire:fence-read", "acquire:placed",
    "acquire_fair:queue-read", "acquire_fair:joined", "acquire_fair:fence-read", "acquire_fair:placed",
    "acquire_fair:granted", "cancel_wait:queue-read",
    "extend:key-locked", "extend:removed",
    "permit_acquire:read", "permit_acquire:placed",
    "permit_extend:key-locked", "permit_extend:removed",
})
"""Every pause point the plans below call (the same for both runners: the plans call them)."""


def _value(token: int, holder: str) -> str:
    return f"{token}:{holder}"


def _parse(value: str) -> tuple[int, str]:
    token, _, holder = value.partition(":")
    return int(token), holder


def _soonest(views: Sequence[SimpleEntryView[str, str] | None]) -> float:
    now = time.time()
    return min((seconds_left(view, now) for view in views if view is not None), default=0.0)


def _permit_key(slot: int, name: str) -> str:
    return f"{slot}:{name}"


def name_of_permit_key(key: str) -> str | None:
    """The semaphore name of a ``P.permits`` key (None for a key that is not a permit's)."""
    slot, sep, name = key.partition(":")
    return name if sep and slot.isdigit() else None


def _permit_entry(name: str, holder: str, token: int) -> tuple[str, str]:
    return _permit_key(token & ((1 << SLOT_BITS) - 1), name), _value(token, holder)


class MapProtocol:
    """The plans of map mode's SPI methods, for one backend's settings (``where`` names it in errors)."""

    def __init__(self, settings: Settings, where: str) -> None:
        self.timeout = settings.timeout
        self.where = where
        self.known = fences.KnownCounters()
        """Lock fence counters this backend instance confirmed last (proposals that skip a read)."""

    # -- locks -------------------------------------------------------------------------------------
    def try_acquire(self, name: str, holder: str, ttl: float, queue_ttl: float | None, deadline: float
                    ) -> Plan[Attempt]:
        if queue_ttl is None:
            return (yield from self._take(name, holder, ttl, deadline, "acquire"))
        first, written = yield from fair.join(name, holder, queue_ttl, deadline, self.where)
        pause_point("acquire_fair:joined")
        if not first:
            return Attempt(None)
        attempt = yield from self._take(name, holder, ttl, deadline, "acquire_fair")
        if attempt.granted:
            pause_point("acquire_fair:granted")
            yield from fair.leave(name, holder, deadline, self.where, written=written)
        return attempt

    def cancel_wait(self, name: str, holder: str, deadline: float) -> Plan[None]:
        yield from fair.leave(name, holder, deadline, self.where)

    def _take(self, name: str, holder: str, ttl: float, deadline: float, operation: str) -> Plan[Attempt]:
        """Grant the lease if the entry is free: propose the next token, put, confirm the counter.

        The proposal comes from :attr:`known` when this process confirmed the name's last token itself
        (two round trips: put, confirm; the confirm alone decides whether the token is above every
        confirmed one, see :mod:`.fences`). Otherwise the counter is read first, together with the
        entry: a held name is refused at once (one round trip), without writing anything; a grant then
        takes three. A confirm that finds the proposal stale withdraws the entry, and the name is read
        first from then on (another process takes it too). (Sending the put and the confirm together
        would save a round trip, but a put delayed past another grant could then land with a lower
        token than that grant's.)
        """
        fence_key = f"lock:{name}"
        seen = self.known.proposal(fence_key)
        for _ in range(STALE_RETRIES):
            if seen is None:
                fence, view = yield Together(
                    (fences.read_call(fence_key), Call(LOCKS, "get_entry_view", (name,))), "read lock")
                if view is not None:
                    return Attempt(None, _soonest([view]))
                seen = fences.value_of(fence)
                pause_point(f"{operation}:fence-read")
            token = seen + 1
            value = _value(token, holder)
            if (yield Call(LOCKS, "put_if_absent", (name, value, ttl + TTL_SLACK), what="acquire")) is not None:
                self.known.forget(fence_key)
                return Attempt(None, (yield from self._remaining(LOCKS, [name])))
            pause_point(f"{operation}:placed")
            if (yield from fences.confirm(fence_key, seen, token, deadline, self.where)):
                self.known.learn(fence_key, token)
                return Attempt(token)
            # Our proposal was stale: a grant with a token >= ours was confirmed meanwhile. Withdraw ours.
            self.known.distrust(fence_key)
            seen = None
            yield Call(LOCKS, "remove_if_same", (name, value), what="withdraw a stale grant")
        return Attempt(None, 0.0)

    def _remaining(self, entries: str, keys: Sequence[str]) -> Plan[float]:
        """Seconds until the soonest of ``keys`` expires, from the entries' expiration times.

        The members decide expiry; this estimate compares their expiration time (1 s resolution) with
        this host's wall clock, so it assumes clocks synchronised by NTP. It only bounds how long a
        waiter sleeps, and is clamped to the entry's own ttl so a skewed clock cannot stretch it.
        """
        views = yield Together(tuple(Call(entries, "get_entry_view", (k,)) for k in keys), "entry view")
        return _soonest(views)

    def release(self, name: str, holder: str, token: int) -> Plan[bool]:
        return bool((yield Call(LOCKS, "remove_if_same", (name, _value(token, holder)), what="release")))

    def extend(self, name: str, holder: str, token: int, ttl: float, deadline: float) -> Plan[bool]:
        return (yield from extension.extend("extend", LOCKS, name, _value(token, holder), ttl,
                                            fence_key=f"lock:{name}", sequence=token, timeout=self.timeout,
                                            deadline=deadline, where=self.where))

    def inspect(self, name: str) -> Plan[LockInfo | None]:
        view = yield from extension.settled(LOCKS, name, Call(LOCKS, "get_entry_view", (name,), what="inspect"))
        if view is None:
            return None
        token, holder = _parse(view.value)
        # What the holder was promised (ttl), not the member's extra second of slack.
        remaining = min(seconds_left(view, time.time()), view.ttl / 1000 - TTL_SLACK)
        return LockInfo(name, holder, token, max(remaining, 0.0))

    def holds(self, name: str, holder: str, token: int) -> Plan[bool]:
        current = yield from extension.settled(LOCKS, name, Call(LOCKS, "get", (name,), what="holds"))
        return bool(current == _value(token, holder))

    # -- semaphores --------------------------------------------------------------------------------
    def try_acquire_permit(self, name: str, permits: int, holder: str, ttl: float, deadline: float
                           ) -> Plan[Attempt]:
        fence_key = f"semaphore:{name}"
        for _ in range(STALE_RETRIES):
            free, seen = yield from self._free_slots(name, permits, fence_key)
            if not free:
                return Attempt(None, (yield from self._permits_retry_after(name, permits)))
            pause_point("permit_acquire:read")
            sequence = seen + 1
            for slot in free[:STALE_RETRIES]:
                token = (sequence << SLOT_BITS) | slot
                key, value = _permit_key(slot, name), _value(token, holder)
                if (yield Call(PERMITS, "put_if_absent", (key, value, ttl + TTL_SLACK),
                               what="acquire permit")) is None:
                    break
            else:
                continue  # every slot tried was taken meanwhile: look again
            pause_point("permit_acquire:placed")
            if (yield from fences.confirm(fence_key, seen, sequence, deadline, self.where)):
                return Attempt(token)
            yield Call(PERMITS, "remove_if_same", (key, value), what="withdraw a stale permit")
        return Attempt(None, 0.0)

    def _free_slots(self, name: str, permits: int, fence_key: str) -> Plan[tuple[list[int], int]]:
        """(some free slots in random order, the semaphore's fencing counter): WINDOW random slots are
        read with the counter; every slot only if those are all taken."""
        window = random.sample(range(permits), min(permits, WINDOW))
        held, fence = yield Together(
            (Call(PERMITS, "get_all", ([_permit_key(s, name) for s in window],)), fences.read_call(fence_key)),
            "read semaphore")
        free = [slot for slot in window if _permit_key(slot, name) not in held]
        if not free and permits > WINDOW:
            everything = list(range(permits))
            held = yield Call(PERMITS, "get_all", ([_permit_key(s, name) for s in everything],),
                              what="read semaphore")
            free = [slot for slot in everything if _permit_key(slot, name) not in held]
            random.shuffle(free)
        return free, fences.value_of(fence)

    def _permits_retry_after(self, name: str, permits: int) -> Plan[float | None]:
        if permits > VIEWS_FOR_RETRY_AFTER:
            return None
        return (yield from self._remaining(PERMITS, [_permit_key(s, name) for s in range(permits)]))

    def release_permit(self, name: str, holder: str, token: int) -> Plan[bool]:
        key, value = _permit_entry(name, holder, token)
        return bool((yield Call(PERMITS, "remove_if_same", (key, value), what="release permit")))

    def extend_permit(self, name: str, holder: str, token: int, ttl: float, deadline: float) -> Plan[bool]:
        key, value = _permit_entry(name, holder, token)
        return (yield from extension.extend("permit_extend", PERMITS, key, value, ttl,
                                            fence_key=f"semaphore:{name}", sequence=token >> SLOT_BITS,
                                            timeout=self.timeout, deadline=deadline, where=self.where))

    def holds_permit(self, name: str, holder: str, token: int) -> Plan[bool]:
        key, value = _permit_entry(name, holder, token)
        current = yield from extension.settled(PERMITS, key, Call(PERMITS, "get", (key,), what="holds permit"))
        return bool(current == value)

    # -- administration ----------------------------------------------------------------------------
    def set_fence_floor(self, name: str, token: int, semaphore: bool, deadline: float) -> Plan[None]:
        key, floor = (f"semaphore:{name}", token >> SLOT_BITS) if semaphore else (f"lock:{name}", token)
        self.known.forget(key)
        yield from fences.raise_floor(key, floor, deadline, self.where)

    def force_release(self, name: str) -> Plan[bool]:
        return (yield Call(LOCKS, "remove", (name,), what="force release")) is not None

    # -- waiting -----------------------------------------------------------------------------------
    @staticmethod
    def listen(kind: str, on_event: Callable[[Any], None]) -> Plan[str]:
        """Register ``on_event`` for removed, expired and evicted entries of map ``kind`` (keys only);
        the registration id. The client re-registers it on every member it connects to later."""
        registration: str = yield Call(kind, "add_entry_listener", kwargs={
            "include_value": False, "removed_func": on_event, "expired_func": on_event, "evicted_func": on_event,
        }, what="register entry listener")
        return registration

