"""``memory://`` — a complete in-process backend for unit tests and for developing lockapi itself.

Every ``memory://NAME`` URL in one process shares one store (``memory://`` is the store named ""), so
several managers contend like several nodes. Stores live as long as the process. Option ``clock``
(a callable returning seconds, default ``time.monotonic``) lets tests move time by hand; it is fixed
by the first connection to a store.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from lockapi.aio.spi import SyncBackendAdapter
from lockapi.spi import (
    Attempt,
    Backend,
    BackendConfig,
    Capability,
    ConfigError,
    LockInfo,
    Wake,
    Watchers,
)

Clock = Callable[[], float]


@dataclass
class _Grant:
    holder: str
    token: int
    expires: float


@dataclass
class _Store:
    clock: Clock
    mutex: threading.Lock = field(default_factory=threading.Lock)
    locks: dict[str, _Grant] = field(default_factory=dict)
    fences: dict[tuple[bool, str], int] = field(default_factory=dict)
    permits: dict[str, dict[int, _Grant]] = field(default_factory=dict)
    done: dict[str, float] = field(default_factory=dict)
    queues: dict[str, OrderedDict[str, float]] = field(default_factory=dict)
    watchers: Watchers[tuple[bool, str]] = field(default_factory=Watchers)

    def next_waiter(self, name: str, now: float) -> str | None:
        """The fair waiter to wake when ``name`` is free: the first live queue entry (None: wake all)."""
        queue = self.queues.get(name)
        return next((w for w, expires in queue.items() if expires > now), None) if queue else None

    def next_token(self, name: str, semaphore: bool) -> int:
        token = self.fences.get((semaphore, name), 0) + 1
        self.fences[(semaphore, name)] = token
        return token

    def live_lock(self, name: str, now: float) -> _Grant | None:
        grant = self.locks.get(name)
        if grant is not None and grant.expires <= now:
            del self.locks[name]
            return None
        return grant

    def live_permits(self, name: str, now: float) -> dict[int, _Grant]:
        grants = self.permits.setdefault(name, {})
        for token in [t for t, g in grants.items() if g.expires <= now]:
            del grants[token]
        return grants


_stores: dict[str, _Store] = {}
_stores_mutex = threading.Lock()


def _store(key: str, clock: Clock | None) -> _Store:
    with _stores_mutex:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = _Store(clock or time.monotonic)
        elif clock is not None and clock is not store.clock:
            raise ConfigError(f"memory store {key!r} already exists with another clock; use a new store name")
        return store


class MemoryBackend(Backend):
    """In-process locks with every capability; expiry by the store's clock."""

    capabilities = frozenset({
        Capability.FAIR, Capability.PUSH_WAKEUP, Capability.ATOMIC_BATCH, Capability.ITER_DONE,
        Capability.ADMIN, Capability.BACKEND_EXPIRY,
    })
    description = "in-process store for unit tests (memory://NAME shares a store per process)"

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        clock = config.options.raw("clock")
        if clock is not None and not callable(clock):
            raise ConfigError("option 'clock' must be a callable returning seconds")
        config.options.finish()
        self._s = _store(urlsplit(config.url).netloc, clock)

    def _now(self) -> float:
        return self._s.clock()

    # -- locks -------------------------------------------------------------------------------------
    def try_acquire(self, name: str, holder: str, ttl: float, *, queue_ttl: float | None = None) -> Attempt:
        s = self._s
        with s.mutex:
            now = self._now()
            grant = s.live_lock(name, now)
            if queue_ttl is not None:
                queue = s.queues.setdefault(name, OrderedDict())
                for waiter in [w for w, exp in queue.items() if exp <= now and w != holder]:
                    del queue[waiter]
                queue[holder] = now + queue_ttl
                if grant is not None or next(iter(queue)) != holder:
                    return Attempt(None, None if grant is None else grant.expires - now)
                del queue[holder]
                if not queue:
                    del s.queues[name]
            elif grant is not None:
                return Attempt(None, grant.expires - now)
            token = s.next_token(name, False)
            s.locks[name] = _Grant(holder, token, now + ttl)
            return Attempt(token)

    def _holding(self, name: str, holder: str, token: int, now: float) -> _Grant | None:
        grant = self._s.live_lock(name, now)
        if grant is None or grant.holder != holder or grant.token != token:
            return None
        return grant

    def release(self, name: str, holder: str, token: int) -> bool:
        s = self._s
        with s.mutex:
            now = self._now()
            if self._holding(name, holder, token, now) is None:
                return False
            del s.locks[name]
            head = s.next_waiter(name, now)
        s.watchers.wake((False, name), head)
        return True

    def extend(self, name: str, holder: str, token: int, ttl: float) -> bool:
        with self._s.mutex:
            now = self._now()
            grant = self._holding(name, holder, token, now)
            if grant is None:
                return False
            grant.expires = now + ttl
            return True

    def inspect(self, name: str) -> LockInfo | None:
        with self._s.mutex:
            now = self._now()
            grant = self._s.live_lock(name, now)
            return None if grant is None else LockInfo(name, grant.holder, grant.token, grant.expires - now)

    def cancel_wait(self, name: str, holder: str) -> None:
        s = self._s
        with s.mutex:
            queue = s.queues.get(name)
            if queue is None or holder not in queue:
                return
            del queue[holder]
            now = self._now()
            if s.live_lock(name, now) is not None:
                return
            head = s.next_waiter(name, now)
        s.watchers.wake((False, name), head)

    def try_acquire_many(
        self, names: Sequence[str], holder: str, ttl: float, *, skip_done: bool = False
    ) -> dict[str, int]:
        s = self._s
        granted: dict[str, int] = {}
        with s.mutex:
            now = self._now()
            for name in names:
                if s.live_lock(name, now) is not None:
                    continue
                if skip_done and s.done.get(name, now) > now:
                    continue
                token = s.next_token(name, False)
                s.locks[name] = _Grant(holder, token, now + ttl)
                granted[name] = token
        return granted

    # -- semaphores --------------------------------------------------------------------------------
    def try_acquire_permit(self, name: str, permits: int, holder: str, ttl: float) -> Attempt:
        s = self._s
        with s.mutex:
            now = self._now()
            grants = s.live_permits(name, now)
            if len(grants) >= permits:
                return Attempt(None, min(g.expires for g in grants.values()) - now)
            token = s.next_token(name, True)
            grants[token] = _Grant(holder, token, now + ttl)
            return Attempt(token)

    def _permit(self, name: str, holder: str, token: int, now: float) -> _Grant | None:
        grant = self._s.live_permits(name, now).get(token)
        return grant if grant is not None and grant.holder == holder else None

    def release_permit(self, name: str, holder: str, token: int) -> bool:
        s = self._s
        with s.mutex:
            if self._permit(name, holder, token, self._now()) is None:
                return False
            del s.permits[name][token]
        s.watchers.wake((True, name))
        return True

    def extend_permit(self, name: str, holder: str, token: int, ttl: float) -> bool:
        with self._s.mutex:
            now = self._now()
            grant = self._permit(name, holder, token, now)
            if grant is None:
                return False
            grant.expires = now + ttl
            return True

    def holds_permit(self, name: str, holder: str, token: int) -> bool:
        with self._s.mutex:
            return self._permit(name, holder, token, self._now()) is not None

    # -- done markers ------------------------------------------------------------------------------
    def mark_done(self, name: str, ttl: float) -> None:
        with self._s.mutex:
            self._s.done[name] = self._now() + ttl

    def done(self, names: Sequence[str]) -> set[str]:
        with self._s.mutex:
            now = self._now()
            return {n for n in names if self._s.done.get(n, now) > now}

    def iter_done(self) -> Iterator[tuple[str, float]]:
        with self._s.mutex:
            now = self._now()
            live = [(n, exp - now) for n, exp in self._s.done.items() if exp > now]
        yield from live

    # -- administration ----------------------------------------------------------------------------
    def set_fence_floor(self, name: str, token: int, *, semaphore: bool = False) -> None:
        s = self._s
        with s.mutex:
            key = (semaphore, name)
            s.fences[key] = max(s.fences.get(key, 0), token)

    def force_release(self, name: str) -> bool:
        s = self._s
        with s.mutex:
            now = self._now()
            held = s.live_lock(name, now) is not None
            s.locks.pop(name, None)
            head = s.next_waiter(name, now)
        s.watchers.wake((False, name), head)
        return held

    # -- waiting -----------------------------------------------------------------------------------
    def watch(
        self, name: str, wake: Wake, *, semaphore: bool = False, holder: str | None = None
    ) -> contextlib.AbstractContextManager[None]:
        return self._s.watchers.register((semaphore, name), wake, holder)

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None


class AsyncMemoryBackend(SyncBackendAdapter):
    """``memory://`` for :mod:`lockapi.aio`: the same stores as the sync backend (sync and async managers
    of one process contend), and since no call ever blocks, each runs directly on the event loop."""

    inline = True
    sync_class = MemoryBackend
