"""Map mode (``hazelcast://``): leases as IMap entries with a per-entry ttl, moved only by conditional
operations.

Works on every Hazelcast edition, including community 5.5+ without the CP subsystem. Data layout
(``P`` = the ``prefix`` option, default ``lockapi``):

* ``P.locks``:   ``name -> "<token>:<holder>"``, entry ttl = lease ttl + :data:`TTL_SLACK`;
* ``P.permits``: ``"<slot>:<name>" -> "<token>:<holder>"``, one entry per held permit, slot < permits;
* ``P.fences``:  ``"lock:<name>"`` / ``"semaphore:<name>"`` -> last confirmed token (never deleted);
* ``P.done``:    ``name -> "1"``, entry ttl = marker ttl + :data:`TTL_SLACK`;
* ``P.queues``:  ``name -> fair waiters in arrival order`` (see :mod:`.fair`).

Expiry is the members' business (entry ttl, the partition owner's clock). Members keep entry times
with ONE-SECOND resolution, so every ttl is sent as ``ttl + 1 s`` (:data:`TTL_SLACK`): a lease never
ends before ``ttl``, and at most one second after it.

A grant is three round trips: read the fencing counter (and the entry: a held name is refused right
there), ``put_if_absent`` the lease entry with the proposed token, confirm the token on the counter
(:mod:`.fences`); extension is :mod:`.extension`.
Every write is conditional on what was read, so a holder stopped between two round trips (the pause
points in :attr:`MapBackend.pause_points`) never overwrites another holder's lease.

A semaphore token is ``(sequence << SLOT_BITS) | slot``: it increases with the per-name sequence and
tells release/extend which slot entry is the permit's, whichever process calls them. An attempt reads
:data:`WINDOW` random slots; only when they are all taken does it read every slot before refusing, so
its cost grows with ``permits`` only on a (nearly) full semaphore, and ``permits`` is at most
:data:`MAX_PERMITS`.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from hazelcast.client import HazelcastClient
from hazelcast.core import SimpleEntryView
from hazelcast.proxy.map import Map

from lockapi.spi import (
    Attempt,
    BackendConfig,
    Capability,
    LockInfo,
    Wake,
    pause_point,
)

from .base import HazelcastBackend
from .client import ClientHolder
from .done import TTL_SLACK, DoneMarkers, seconds_left
from .extension import EntryExtender
from .fair import FairQueues
from .fences import Counters
from .watch import WatchRegistry

__all__ = ["MAX_PERMITS", "SLOT_BITS", "MapBackend"]

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


@dataclass
class _Maps:
    """The map proxies of one client, and which of them have the wake-up listener registered."""

    locks: Map[str, str]
    permits: Map[str, str]
    fences: Map[str, str]
    done: Map[str, str]
    queues: Map[str, str]
    listening: set[str] = field(default_factory=set)


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


def _name_of_permit_key(key: str) -> str | None:
    slot, sep, name = key.partition(":")
    return name if sep and slot.isdigit() else None


class MapBackend(HazelcastBackend):
    """IMap leases, fencing counters and done markers; push wake-ups from one entry listener per map."""

    mode = "map"
    capabilities = frozenset({
        Capability.PUSH_WAKEUP, Capability.MULTI_PROCESS, Capability.MULTI_HOST, Capability.FAIR,
        Capability.ITER_DONE, Capability.ADMIN, Capability.BACKEND_EXPIRY,
    })
    description = "Hazelcast IMap leases, any edition (AP: not exclusive under network partitions)"
    pause_points = frozenset({
        "acquire:fence-read", "acquire:placed",
        "acquire_fair:queue-read", "acquire_fair:joined", "acquire_fair:fence-read", "acquire_fair:placed",
        "acquire_fair:granted", "cancel_wait:queue-read",
        "extend:key-locked", "extend:removed",
        "permit_acquire:read", "permit_acquire:placed",
        "permit_extend:key-locked", "permit_extend:removed",
    })
    max_permits = MAX_PERMITS

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self._holder = ClientHolder(self.settings, self.where, self._set_up)
        self._counters = Counters(self._holder)
        self._extender = EntryExtender(self._holder, self._counters)
        self._done = DoneMarkers(self._holder, lambda: self._current().done)
        self._queues = FairQueues(self._holder)
        self._maps: _Maps | None = None
        self._listen_lock = threading.Lock()
        self._watches = {
            "locks": WatchRegistry(lambda key: key),
            "permits": WatchRegistry(_name_of_permit_key),
        }

    # -- connection --------------------------------------------------------------------------------
    def _set_up(self, client: HazelcastClient) -> None:
        prefix = self.settings.prefix
        maps = _Maps(locks=client.get_map(f"{prefix}.locks"), permits=client.get_map(f"{prefix}.permits"),
                     fences=client.get_map(f"{prefix}.fences"), done=client.get_map(f"{prefix}.done"),
                     queues=client.get_map(f"{prefix}.queues"))
        previous = self._maps
        self._maps = maps
        for kind in previous.listening if previous else ():
            self._listen(maps, kind)

    def _current(self) -> _Maps:
        self._holder.client()
        assert self._maps is not None
        return self._maps

    def _listen(self, maps: _Maps, kind: str) -> None:
        registry = self._watches[kind]
        target: Map[str, str] = getattr(maps, kind)
        future = target.add_entry_listener(
            include_value=False, removed_func=registry.on_event, expired_func=registry.on_event,
            evicted_func=registry.on_event)
        self._holder.wait(future, self._holder.deadline(), "register entry listener")
        maps.listening.add(kind)

    def _ensure_listener(self, kind: str) -> None:
        maps = self._current()
        with self._listen_lock:
            if kind not in maps.listening:
                self._listen(maps, kind)

    def close(self) -> None:
        self._holder.close()

    # -- shared lease mechanics ---------------------------------------------------------------------
    def _remaining(self, target: Map[str, str], keys: Sequence[str], deadline: float) -> float:
        """Seconds until the soonest of ``keys`` expires, from the entries' expiration times.

        The members decide expiry; this estimate compares their expiration time (1 s resolution) with
        this host's wall clock, so it assumes clocks synchronised by NTP. It only bounds how long a
        waiter sleeps, and is clamped to the entry's own ttl so a skewed clock cannot stretch it.
        """
        views = self._holder.wait_all([target.get_entry_view(k) for k in keys], deadline, "entry view")
        return _soonest(views)

    # -- locks -------------------------------------------------------------------------------------
    def try_acquire(self, name: str, holder: str, ttl: float, *, queue_ttl: float | None = None) -> Attempt:
        maps = self._current()
        deadline = self._holder.deadline()
        if queue_ttl is None:
            return self._take(maps, name, holder, ttl, deadline, "acquire")
        first, written = self._queues.join(maps.queues, name, holder, queue_ttl, deadline)
        pause_point("acquire_fair:joined")
        if not first:
            return Attempt(None)
        attempt = self._take(maps, name, holder, ttl, deadline, "acquire_fair")
        if attempt.granted:
            pause_point("acquire_fair:granted")
            self._queues.leave(maps.queues, name, holder, deadline, written=written)
        return attempt

    def cancel_wait(self, name: str, holder: str) -> None:
        self._queues.leave(self._current().queues, name, holder, self._holder.deadline())

    def _take(self, maps: _Maps, name: str, holder: str, ttl: float, deadline: float, operation: str
              ) -> Attempt:
        """Grant the lease if the entry is free: propose the next token, put, confirm the counter.

        The counter is read together with the entry: a held name is refused at once (one round trip),
        without writing anything. (Sending the put and the confirm together would save a round trip,
        but a put delayed past another grant could then land with a lower token than that grant's.)
        """
        fence_key = f"lock:{name}"
        for _ in range(STALE_RETRIES):
            fence, view = self._holder.wait_all(
                [maps.fences.get(fence_key), maps.locks.get_entry_view(name)], deadline, "read lock")
            if view is not None:
                return Attempt(None, _soonest([view]))
            seen = int(fence) if fence is not None else 0
            pause_point(f"{operation}:fence-read")
            token = seen + 1
            value = _value(token, holder)
            if self._holder.wait(maps.locks.put_if_absent(name, value, ttl + TTL_SLACK), deadline,
                                 "acquire") is not None:
                return Attempt(None, self._remaining(maps.locks, [name], deadline))
            pause_point(f"{operation}:placed")
            if self._counters.confirm(maps.fences, fence_key, seen, token, deadline):
                return Attempt(token)
            # Our read was stale: a grant with a token >= ours was confirmed meanwhile. Withdraw ours.
            self._holder.wait(maps.locks.remove_if_same(name, value), deadline, "withdraw a stale grant")
        return Attempt(None, 0.0)

    def release(self, name: str, holder: str, token: int) -> bool:
        maps = self._current()
        return bool(self._holder.wait(maps.locks.remove_if_same(name, _value(token, holder)),
                                      self._holder.deadline(), "release"))

    def extend(self, name: str, holder: str, token: int, ttl: float) -> bool:
        maps = self._current()
        return self._extender.extend("extend", maps.locks, name, _value(token, holder), ttl,
                                     fences=maps.fences, fence_key=f"lock:{name}", sequence=token)

    def inspect(self, name: str) -> LockInfo | None:
        maps = self._current()
        deadline = self._holder.deadline()
        view = self._extender.settled(maps.locks, name, lambda: maps.locks.get_entry_view(name), deadline,
                                      "inspect")
        if view is None:
            return None
        token, holder = _parse(view.value)
        # What the holder was promised (ttl), not the member's extra second of slack.
        remaining = min(seconds_left(view, time.time()), view.ttl / 1000 - TTL_SLACK)
        return LockInfo(name, holder, token, max(remaining, 0.0))

    def holds(self, name: str, holder: str, token: int) -> bool:
        maps = self._current()
        current = self._extender.settled(maps.locks, name, lambda: maps.locks.get(name), self._holder.deadline(),
                                         "holds")
        return current == _value(token, holder)

    # -- semaphores --------------------------------------------------------------------------------
    def try_acquire_permit(self, name: str, permits: int, holder: str, ttl: float) -> Attempt:
        maps = self._current()
        deadline = self._holder.deadline()
        fence_key = f"semaphore:{name}"
        for _ in range(STALE_RETRIES):
            free, seen = self._free_slots(maps, name, permits, fence_key, deadline)
            if not free:
                return Attempt(None, self._permits_retry_after(maps, name, permits, deadline))
            pause_point("permit_acquire:read")
            sequence = seen + 1
            for slot in free[:STALE_RETRIES]:
                token = (sequence << SLOT_BITS) | slot
                key, value = _permit_key(slot, name), _value(token, holder)
                if self._holder.wait(maps.permits.put_if_absent(key, value, ttl + TTL_SLACK), deadline,
                                     "acquire permit") is None:
                    break
            else:
                continue  # every slot tried was taken meanwhile: look again
            pause_point("permit_acquire:placed")
            if self._counters.confirm(maps.fences, fence_key, seen, sequence, deadline):
                return Attempt(token)
            self._holder.wait(maps.permits.remove_if_same(key, value), deadline, "withdraw a stale permit")
        return Attempt(None, 0.0)

    def _free_slots(self, maps: _Maps, name: str, permits: int, fence_key: str, deadline: float
                    ) -> tuple[list[int], int]:
        """(some free slots in random order, the semaphore's fencing counter): WINDOW random slots are
        read with the counter; every slot only if those are all taken."""
        window = random.sample(range(permits), min(permits, WINDOW))
        held, fence = self._holder.wait_all(
            [maps.permits.get_all([_permit_key(s, name) for s in window]), maps.fences.get(fence_key)],
            deadline, "read semaphore")
        free = [slot for slot in window if _permit_key(slot, name) not in held]
        if not free and permits > WINDOW:
            everything = list(range(permits))
            held = self._holder.wait(maps.permits.get_all([_permit_key(s, name) for s in everything]),
                                     deadline, "read semaphore")
            free = [slot for slot in everything if _permit_key(slot, name) not in held]
            random.shuffle(free)
        return free, int(fence) if fence is not None else 0

    def _permits_retry_after(self, maps: _Maps, name: str, permits: int, deadline: float) -> float | None:
        if permits > VIEWS_FOR_RETRY_AFTER:
            return None
        return self._remaining(maps.permits, [_permit_key(s, name) for s in range(permits)], deadline)

    def _permit_entry(self, name: str, holder: str, token: int) -> tuple[str, str]:
        return _permit_key(token & ((1 << SLOT_BITS) - 1), name), _value(token, holder)

    def release_permit(self, name: str, holder: str, token: int) -> bool:
        key, value = self._permit_entry(name, holder, token)
        maps = self._current()
        return bool(self._holder.wait(maps.permits.remove_if_same(key, value), self._holder.deadline(),
                                      "release permit"))

    def extend_permit(self, name: str, holder: str, token: int, ttl: float) -> bool:
        key, value = self._permit_entry(name, holder, token)
        maps = self._current()
        return self._extender.extend("permit_extend", maps.permits, key, value, ttl, fences=maps.fences,
                                     fence_key=f"semaphore:{name}", sequence=token >> SLOT_BITS)

    def holds_permit(self, name: str, holder: str, token: int) -> bool:
        key, value = self._permit_entry(name, holder, token)
        maps = self._current()
        current = self._extender.settled(maps.permits, key, lambda: maps.permits.get(key),
                                         self._holder.deadline(), "holds permit")
        return current == value

    # -- administration ----------------------------------------------------------------------------
    def set_fence_floor(self, name: str, token: int, *, semaphore: bool = False) -> None:
        maps = self._current()
        key, floor = (f"semaphore:{name}", token >> SLOT_BITS) if semaphore else (f"lock:{name}", token)
        self._counters.raise_floor(maps.fences, key, floor, self._holder.deadline())

    def force_release(self, name: str) -> bool:
        maps = self._current()
        previous = self._holder.wait(maps.locks.remove(name), self._holder.deadline(), "force release")
        return previous is not None

    # -- waiting -----------------------------------------------------------------------------------
    def watch(self, name: str, wake: Wake, *, semaphore: bool = False, holder: str | None = None
              ) -> contextlib.AbstractContextManager[None]:
        """A release wakes every watcher of the name, fair waiters included (``holder`` is not used)."""
        kind = "permits" if semaphore else "locks"
        return self._watches[kind].watching(name, wake, lambda: self._ensure_listener(kind))
