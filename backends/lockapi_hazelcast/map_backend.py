"""Map mode (default): leases as IMap entries with a per-entry ttl, moved only by conditional operations.

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

A semaphore token is ``(sequence << SLOT_BITS) | slot``: it increases with the per-name sequence and
tells release/extend which slot entry is the permit's, whichever process calls them.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from hazelcast.client import HazelcastClient
from hazelcast.proxy.map import Map

from lockapi.spi import (
    Attempt,
    BackendConfig,
    Capability,
    LockInfo,
    UnsupportedFeature,
    Wake,
)

from .base import HazelcastBackend
from .client import ClientHolder
from .done import TTL_SLACK, DoneMarkers, seconds_left
from .fair import FairQueues
from .fences import Counters
from .watch import WatchRegistry

SLOT_BITS = 20
MAX_PERMITS = 1 << SLOT_BITS
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
    description = "Hazelcast IMap leases (AP: not exclusive under network partitions)"

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self._holder = ClientHolder(self.settings, self.where, self._set_up)
        self._counters = Counters(self._holder)
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
        now = time.time()
        return min((seconds_left(view, now) for view in views if view is not None), default=0.0)

    def _extend_entry(self, target: Map[str, str], key: str, value: str, ttl: float) -> bool:
        """Set the entry's ttl if it still holds ``value``.

        IMap has no conditional set-ttl (and ``replace`` drops the ttl), so the check and a ``put``
        of the same value with the new ttl run under the key's IMap lock: every other client's write
        to the key waits for it. (``set_ttl`` carries no thread id, so it would wait for our own lock.)
        """
        deadline = self._holder.deadline()
        timeout = self.settings.timeout
        if not self._holder.wait(target.try_lock(key, lease_time=timeout, timeout=timeout / 2),
                                 deadline, "lock entry"):
            return False
        try:
            if self._holder.wait(target.get(key), deadline, "read lease") != value:
                return False
            self._holder.wait(target.put(key, value, ttl + TTL_SLACK), deadline, "set ttl")
            return True
        finally:
            # If this fails, the key's lock lease (``timeout``) frees it.
            self._holder.wait(target.unlock(key), self._holder.deadline(), "unlock entry")

    # -- locks -------------------------------------------------------------------------------------
    def try_acquire(self, name: str, holder: str, ttl: float, *, queue_ttl: float | None = None) -> Attempt:
        maps = self._current()
        deadline = self._holder.deadline()
        if queue_ttl is None:
            return self._take(maps, name, holder, ttl, deadline)
        if not self._queues.join(maps.queues, name, holder, queue_ttl, deadline):
            return Attempt(None)
        attempt = self._take(maps, name, holder, ttl, deadline)
        if attempt.granted:
            self._queues.leave(maps.queues, name, holder, deadline)
        return attempt

    def cancel_wait(self, name: str, holder: str) -> None:
        self._queues.leave(self._current().queues, name, holder, self._holder.deadline())

    def _take(self, maps: _Maps, name: str, holder: str, ttl: float, deadline: float) -> Attempt:
        """Grant the lease if the entry is free: propose the next token, put, confirm the counter."""
        fence_key = f"lock:{name}"
        for _ in range(STALE_RETRIES):
            seen = self._counters.read(maps.fences, fence_key, deadline)
            token = seen + 1
            value = _value(token, holder)
            if self._holder.wait(maps.locks.put_if_absent(name, value, ttl + TTL_SLACK), deadline,
                                 "acquire") is not None:
                return Attempt(None, self._remaining(maps.locks, [name], deadline))
            if self._counters.confirm(maps.fences, fence_key, seen, token, deadline):
                return Attempt(token)
            self._holder.wait(maps.locks.remove_if_same(name, value), deadline, "withdraw stale grant")
        return Attempt(None, 0.0)

    def release(self, name: str, holder: str, token: int) -> bool:
        maps = self._current()
        return bool(self._holder.wait(maps.locks.remove_if_same(name, _value(token, holder)),
                                      self._holder.deadline(), "release"))

    def extend(self, name: str, holder: str, token: int, ttl: float) -> bool:
        return self._extend_entry(self._current().locks, name, _value(token, holder), ttl)

    def inspect(self, name: str) -> LockInfo | None:
        maps = self._current()
        deadline = self._holder.deadline()
        view = self._holder.wait(maps.locks.get_entry_view(name), deadline, "inspect")
        if view is None:
            return None
        token, holder = _parse(view.value)
        # What the holder was promised (ttl), not the member's extra second of slack.
        remaining = min(seconds_left(view, time.time()), view.ttl / 1000 - TTL_SLACK)
        return LockInfo(name, holder, token, max(remaining, 0.0))

    def holds(self, name: str, holder: str, token: int) -> bool:
        maps = self._current()
        current = self._holder.wait(maps.locks.get(name), self._holder.deadline(), "holds")
        return current == _value(token, holder)

    # -- semaphores --------------------------------------------------------------------------------
    def try_acquire_permit(self, name: str, permits: int, holder: str, ttl: float) -> Attempt:
        if permits > MAX_PERMITS:
            raise UnsupportedFeature(f"{self.where}: at most {MAX_PERMITS} permits per semaphore")
        maps = self._current()
        deadline = self._holder.deadline()
        fence_key = f"semaphore:{name}"
        keys = [_permit_key(slot, name) for slot in range(permits)]
        for _ in range(STALE_RETRIES):
            held, fence = self._holder.wait_all(
                [maps.permits.get_all(keys), maps.fences.get(fence_key)], deadline, "read semaphore")
            free = [slot for slot, key in enumerate(keys) if key not in held]
            if not free:
                retry_after = (self._remaining(maps.permits, keys, deadline)
                               if permits <= VIEWS_FOR_RETRY_AFTER else None)
                return Attempt(None, retry_after)
            seen = int(fence) if fence is not None else 0
            sequence = seen + 1
            for slot in random.sample(free, min(len(free), STALE_RETRIES)):
                token = (sequence << SLOT_BITS) | slot
                value = _value(token, holder)
                if self._holder.wait(maps.permits.put_if_absent(keys[slot], value, ttl + TTL_SLACK),
                                     deadline, "acquire permit") is None:
                    break
            else:
                continue
            if self._counters.confirm(maps.fences, fence_key, seen, sequence, deadline):
                return Attempt(token)
            self._holder.wait(maps.permits.remove_if_same(keys[slot], value), deadline,
                              "withdraw stale permit")
        return Attempt(None, 0.0)

    def _permit_entry(self, name: str, holder: str, token: int) -> tuple[str, str]:
        return _permit_key(token & (MAX_PERMITS - 1), name), _value(token, holder)

    def release_permit(self, name: str, holder: str, token: int) -> bool:
        key, value = self._permit_entry(name, holder, token)
        maps = self._current()
        return bool(self._holder.wait(maps.permits.remove_if_same(key, value), self._holder.deadline(),
                                      "release permit"))

    def extend_permit(self, name: str, holder: str, token: int, ttl: float) -> bool:
        key, value = self._permit_entry(name, holder, token)
        return self._extend_entry(self._current().permits, key, value, ttl)

    def holds_permit(self, name: str, holder: str, token: int) -> bool:
        key, value = self._permit_entry(name, holder, token)
        maps = self._current()
        return self._holder.wait(maps.permits.get(key), self._holder.deadline(), "holds permit") == value

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
