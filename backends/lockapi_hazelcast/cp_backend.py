"""CP mode (``hazelcast+cp://``): FencedLock and ISemaphore of the CP subsystem (Raft: linearizable,
exclusive under partitions).

Needs a cluster with the CP subsystem (community 5.4 and older, or Enterprise). How the SPI maps on:

* lock ``name`` -> FencedLock ``<prefix>/<name>`` (escaped by :mod:`.names`: ``%``, ``@`` and trailing
  whitespace, which the CP subsystem would otherwise strip); its fence is the token. FencedLock is
  reentrant and owned by (CP session, thread): this backend makes every CP call from ONE worker thread,
  and that thread grants a name only if this process holds no lease on it (the lease table, consulted
  on the worker itself, lists every FencedLock the worker holds, including one being given back). So
  leases are not reentrant, and any application thread can release them.
* semaphore ``name`` with ``permits`` -> ISemaphore ``<prefix>/<name>#<permits>`` initialised with
  ``permits``; tokens come from the CP AtomicLong ``<prefix>/<name>#fence``, incremented after the grant.
* ttl: CP objects have none. The backend that granted a lease gives it back ``ttl`` seconds after the
  grant or last extension (its sweeper thread, this host's monotonic clock, counted from the cluster's
  answer; the holder's own deadline counts from before the request, so it learns first). If that
  process dies or is paused, its CP session expires after the cluster's ``session-time-to-live-seconds``
  (default 300 s) and the CP subsystem frees its locks and permits then: NOT after ``ttl`` (rule 2
  holds only while the holder's process runs).
* only the backend that granted a lease can release, extend or inspect it with its holder id (another
  process sees a held lock through ``inspect`` as held by ``"?"`` with token 0).
* a call that gets no answer within ``timeout`` raises BackendUnavailable; if it completes later, its
  effect is undone on the worker before the worker runs anything else (a late grant is unlocked).
* release is retryable: a give-back the cluster did not answer leaves the lease held and listed, so
  ``release`` may be called again (and the sweeper retries an expired one); once the CP session that
  held it has expired, release returns False.
* done markers live in the IMap ``<prefix>.done`` (AP), as in map mode.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from hazelcast.client import HazelcastClient
from hazelcast.errors import IllegalMonitorStateError, IllegalStateError, LockOwnershipLostError

from lockapi.spi import (
    Attempt,
    BackendConfig,
    Capability,
    LockError,
    LockInfo,
    UnsupportedFeature,
    pause_point,
)

from .base import HazelcastBackend
from .client import ClientHolder
from .errors import no_answer
from .local_leases import Lease, LeaseKey, LeaseTable
from .names import object_name
from .protocol import DONE

__all__ = ["CPBackend"]

log = logging.getLogger("lockapi.hazelcast.cp_backend")

T = TypeVar("T")

_NOT_HELD = (IllegalMonitorStateError, LockOwnershipLostError, IllegalStateError)
"""What the client raises giving back a lock the worker does not hold (any more), or a permit whose CP
session expired (IllegalStateError): the cluster already took it back, not an outage."""


class _Handoff:
    """Hands a worker job's result to the caller, or, once the caller stopped waiting, to ``undo``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._abandoned = False
        self._delivered = False

    def deliver(self) -> bool:
        """Worker: True if the caller still takes the result (False: undo it)."""
        with self._lock:
            self._delivered = not self._abandoned
            return self._delivered

    def abandon(self) -> bool:
        """Caller: True if the result will not be delivered (the worker undoes it instead)."""
        with self._lock:
            self._abandoned = not self._delivered
            return self._abandoned

    @property
    def abandoned(self) -> bool:
        return self._abandoned


class CPBackend(HazelcastBackend):
    """FencedLock / ISemaphore leases with local ttl enforcement (see the module docstring)."""

    mode = "cp"
    capabilities = frozenset({Capability.MULTI_PROCESS, Capability.MULTI_HOST, Capability.ITER_DONE})
    description = "Hazelcast CP subsystem FencedLock/ISemaphore (Raft; ttl enforced by the holder's process)"
    pause_points = frozenset({"permit_acquire:initialised", "permit_acquire:taken"})

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self._holder = ClientHolder(self.settings, self.where, (DONE,))
        self._leases = LeaseTable(self._return)
        self._initialised: set[str] = set()
        """ISemaphores this backend saw initialised (``init`` is idempotent: one round trip saved)."""
        # FencedLock ownership is per thread: every CP call runs on this one thread.
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lockapi-hazelcast-cp")

    def _object(self, name: str, suffix: str = "") -> str:
        return object_name(self.settings.prefix, name, suffix)

    def _run(self, call: Callable[[HazelcastClient], T], what: str, *,
             keep: Callable[[T], None] | None = None,
             undo: Callable[[HazelcastClient, T], None] | None = None) -> T:
        """Run ``call(client)`` on the worker within ``timeout``.

        Then, still on the worker (so before any later call): ``keep(result)`` if the caller takes the
        result, else ``undo(client, result)`` (the caller gave up waiting: e.g. unlock a late grant).
        """
        handoff = _Handoff()

        def job() -> T:
            if handoff.abandoned:
                raise concurrent.futures.CancelledError  # nobody waits: do nothing at all
            client = self._holder.client()
            result = call(client)
            if handoff.deliver():
                if keep is not None:
                    keep(result)
            elif undo is not None:
                try:
                    undo(client, result)
                except Exception:
                    log.exception("lockapi: undoing a hazelcast CP %s that completed too late failed", what)
            return result

        future = self._worker.submit(job)
        with self._holder.translate(what):
            try:
                return future.result(timeout=self.settings.timeout)
            except concurrent.futures.TimeoutError:
                if handoff.abandon():
                    raise no_answer(self.where, what, self.settings.timeout) from None
                return future.result()  # delivered just as we gave up

    def close(self) -> None:
        for lease in self._leases.close():
            if lease.outcome is None:
                with contextlib.suppress(LockError):
                    self._return(lease)
        self._worker.shutdown(wait=True, cancel_futures=False)
        self._holder.close()

    # -- leases --------------------------------------------------------------------------------------
    def _give_back(self, key: LeaseKey) -> bool:
        """Return the live lease ``key`` to the cluster: True if it was held; False if it was not live
        or the CP session had already lost it. BackendUnavailable leaves it held (retry later)."""
        lease = self._leases.claim(key)
        if lease is None:
            return False
        try:
            given = self._return(lease)
        except LockError:
            self._leases.unclaim(lease)
            raise
        self._leases.returned(lease)
        return given

    def _return(self, lease: Lease) -> bool:
        """Unlock the FencedLock or release the permit of ``lease`` on the cluster: True if it did, False
        if the cluster had already freed it (the CP session expired)."""
        kind = lease.key[0]

        def give_back(client: HazelcastClient) -> bool:
            if lease.outcome is not None:
                return lease.outcome  # an earlier try, answered after its caller gave up
            try:
                if kind == "lock":
                    client.cp_subsystem.get_lock(lease.cp_object).blocking().unlock()
                else:
                    client.cp_subsystem.get_semaphore(lease.cp_object).blocking().release(1)
            except _NOT_HELD:
                return False
            return True

        return self._run(give_back, "release" if kind == "lock" else "release permit",
                         undo=lambda _client, given: self._leases.settle(lease, given))

    # -- locks -------------------------------------------------------------------------------------
    def try_acquire(self, name: str, holder: str, ttl: float, *, queue_ttl: float | None = None) -> Attempt:
        if queue_ttl is not None:
            raise UnsupportedFeature(f"{self.where}: cp mode has no fair queue; use hazelcast:// for fair=True")
        held = self._leases.find("lock", name)
        if held:
            return Attempt(None, max(0.0, held[0].expires - time.monotonic()))
        lock_name = self._object(name)

        def try_lock(client: HazelcastClient) -> int:
            # The worker runs one call at a time and records grants before the next: a name this
            # process holds (or is giving back) is never re-entered for another holder.
            if self._leases.holding("lock", name):
                return 0
            return int(client.cp_subsystem.get_lock(lock_name).blocking().try_lock(timeout=0))

        def record(fence: int) -> None:
            if fence:
                # Counted from the grant's answer, so the lease never ends before ttl (the holder's
                # own deadline counts from before the request: it never outlives this one).
                self._leases.add(Lease(("lock", name, holder, fence), time.monotonic() + ttl, lock_name))

        def unlock_late(client: HazelcastClient, fence: int) -> None:
            if fence:
                client.cp_subsystem.get_lock(lock_name).blocking().unlock()

        fence = self._run(try_lock, "acquire", keep=record, undo=unlock_late)
        return Attempt(fence) if fence else Attempt(None, None)

    def _owned(self, lock_name: str) -> bool:
        """True if the worker's CP session still owns the lock (False after the session expired)."""
        def owned(client: HazelcastClient) -> bool:
            try:
                return bool(client.cp_subsystem.get_lock(lock_name).blocking().is_locked_by_current_thread())
            except LockOwnershipLostError:
                return False

        return self._run(owned, "check lock")

    def release(self, name: str, holder: str, token: int) -> bool:
        return self._give_back(("lock", name, holder, token))

    def extend(self, name: str, holder: str, token: int, ttl: float) -> bool:
        key = ("lock", name, holder, token)
        if self._leases.live(key) is None or not self._owned(self._object(name)):
            return False
        return self._leases.extend(key, time.monotonic() + ttl)

    def holds(self, name: str, holder: str, token: int) -> bool:
        return self._leases.live(("lock", name, holder, token)) is not None and self._owned(self._object(name))

    def inspect(self, name: str) -> LockInfo | None:
        held = self._leases.find("lock", name)
        if held:
            _, _, holder, token = held[0].key
            return LockInfo(name, holder, token, max(0.0, held[0].expires - time.monotonic()))
        lock_name = self._object(name)

        def locked(client: HazelcastClient) -> bool:
            lock = client.cp_subsystem.get_lock(lock_name).blocking()
            try:
                return bool(lock.is_locked())
            except LockOwnershipLostError:  # the worker held it under an expired session: ask again
                return bool(lock.is_locked())

        if self._run(locked, "inspect"):
            return LockInfo(name, "?", 0, 0.0)
        return None

    # -- semaphores --------------------------------------------------------------------------------
    def try_acquire_permit(self, name: str, permits: int, holder: str, ttl: float) -> Attempt:
        semaphore_name = self._object(name, f"#{permits}")
        counter_name = self._object(name, "#fence")
        if semaphore_name not in self._initialised:
            self._run(lambda c: c.cp_subsystem.get_semaphore(semaphore_name).blocking().init(permits),
                      "initialise semaphore")
            self._initialised.add(semaphore_name)
            pause_point("permit_acquire:initialised")
        # Recorded (under a provisional key: the holder id is unique) as soon as the worker has the
        # permit, so the sweeper gives it back after ttl even if this thread stops before the token.
        provisional = Lease(("permit", name, holder, 0), 0.0, semaphore_name)

        def take(client: HazelcastClient) -> bool:
            return bool(client.cp_subsystem.get_semaphore(semaphore_name).blocking().try_acquire(1, timeout=0))

        def record(taken: bool) -> None:
            if taken:
                provisional.expires = time.monotonic() + ttl
                self._leases.add(provisional)

        def release_late(client: HazelcastClient, taken: bool) -> None:
            if taken:
                client.cp_subsystem.get_semaphore(semaphore_name).blocking().release(1)

        if not self._run(take, "acquire permit", keep=record, undo=release_late):
            soonest = min((lease.expires for lease in self._leases.find("permit", name)), default=None)
            return Attempt(None, None if soonest is None else max(0.0, soonest - time.monotonic()))
        pause_point("permit_acquire:taken")
        try:
            token = int(self._run(lambda c: c.cp_subsystem.get_atomic_long(counter_name).blocking()
                                  .increment_and_get(), "draw a permit token"))
        except LockError:
            with contextlib.suppress(LockError):
                self._give_back(provisional.key)
            raise
        if not self._leases.rekey(provisional, ("permit", name, holder, token)):
            return Attempt(None, 0.0)  # stopped past ttl: the sweeper gave the permit back already
        return Attempt(token)

    def release_permit(self, name: str, holder: str, token: int) -> bool:
        return self._give_back(("permit", name, holder, token))

    def extend_permit(self, name: str, holder: str, token: int, ttl: float) -> bool:
        return self._leases.extend(("permit", name, holder, token), time.monotonic() + ttl)

    def holds_permit(self, name: str, holder: str, token: int) -> bool:
        return self._leases.live(("permit", name, holder, token)) is not None
