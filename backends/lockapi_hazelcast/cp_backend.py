"""CP mode: FencedLock and ISemaphore of the CP subsystem (Raft: linearizable, exclusive under partitions).

Needs a cluster with the CP subsystem (community 5.4 and older, or Enterprise). How the SPI maps on:

* lock ``name`` -> FencedLock ``<prefix>/<name>`` (``%`` and ``@`` percent-escaped: ``@`` would name a
  CP group); its fence is the token. FencedLock is reentrant and owned by (CP session, thread): this
  backend makes every call from ONE worker thread and refuses a name it already holds to any other
  holder id itself, so leases are not reentrant and any application thread can release them.
* semaphore ``name`` with ``permits`` -> ISemaphore ``<prefix>/<name>#<permits>`` initialised with
  ``permits``; tokens come from the CP AtomicLong ``<prefix>/<name>#fence``, incremented after the grant.
* ttl: CP objects have none. The backend that granted a lease gives it back ``ttl`` seconds after the
  grant or last extension (its sweeper thread, this host's monotonic clock). If that process dies or is
  paused, its CP session expires after the cluster's ``session-time-to-live-seconds`` (default 300 s)
  and the CP subsystem frees its locks and permits then: NOT after ``ttl`` (rule 2 holds only while the
  holder's process runs).
* only the backend that granted a lease can release, extend or inspect it with its holder id (another
  process sees a held lock through ``inspect`` as held by ``"?"`` with token 0).
* done markers live in the IMap ``<prefix>.done`` (AP), as in map mode.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
from collections.abc import Callable
from typing import TypeVar

from hazelcast.client import HazelcastClient
from hazelcast.errors import HazelcastError, LockOwnershipLostError

from lockapi.spi import (
    Attempt,
    BackendConfig,
    BackendUnavailable,
    Capability,
    LockInfo,
    UnsupportedFeature,
)

from .base import HazelcastBackend
from .client import ClientHolder
from .done import DoneMarkers
from .local_leases import Lease, LeaseTable

T = TypeVar("T")


def _escape(name: str) -> str:
    return name.replace("%", "%25").replace("@", "%40")


def _owned_by_worker(client: HazelcastClient, lock_name: str) -> bool:
    """Does the calling (worker) thread hold the lock? False if its CP session was lost."""
    try:
        return bool(client.cp_subsystem.get_lock(lock_name).blocking().is_locked_by_current_thread())
    except LockOwnershipLostError:
        return False


class CPBackend(HazelcastBackend):
    """FencedLock / ISemaphore leases with local ttl enforcement (see the module docstring)."""

    mode = "cp"
    capabilities = frozenset({Capability.MULTI_PROCESS, Capability.MULTI_HOST, Capability.ITER_DONE})
    description = "Hazelcast CP subsystem FencedLock/ISemaphore (Raft; ttl enforced by the holder)"

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self._holder = ClientHolder(self.settings, self.where)
        self._done = DoneMarkers(self._holder,
                                 lambda: self._holder.client().get_map(f"{self.settings.prefix}.done"))
        self._leases = LeaseTable()
        # FencedLock ownership is per thread: every CP call runs on this one thread.
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lockapi-hazelcast-cp")

    def _object(self, name: str, suffix: str = "") -> str:
        return f"{self.settings.prefix}/{_escape(name)}{suffix}"

    def _run(self, call: Callable[[HazelcastClient], T], what: str,
             undo: Callable[[HazelcastClient, T], None] | None = None) -> T:
        """Run ``call(client)`` on the worker within ``timeout``. If it completes only after we gave
        up, ``undo(client, result)`` runs on the worker (e.g. unlock a lock granted too late)."""
        future = self._worker.submit(lambda: call(self._holder.client()))
        with self._holder.translate(what):
            try:
                return future.result(timeout=self.settings.timeout)
            except TimeoutError:
                if undo is not None:
                    future.add_done_callback(lambda f: self._undo_late(f, undo))
                raise BackendUnavailable(
                    f"{self.where}: {what}: no answer within {self.settings.timeout:g}s") from None

    def _undo_late(self, future: concurrent.futures.Future[T],
                   undo: Callable[[HazelcastClient, T], None]) -> None:
        if not future.cancelled() and future.exception() is None:
            result = future.result()
            with contextlib.suppress(RuntimeError):  # worker already shut down
                self._worker.submit(lambda: undo(self._holder.client(), result))

    def close(self) -> None:
        for lease in self._leases.close():
            with contextlib.suppress(Exception):
                lease.give_back()
        self._worker.shutdown(wait=True, cancel_futures=False)
        self._holder.close()

    # -- locks -------------------------------------------------------------------------------------
    def try_acquire(self, name: str, holder: str, ttl: float, *, queue_ttl: float | None = None) -> Attempt:
        if queue_ttl is not None:
            raise UnsupportedFeature(f"{self.where}: cp mode has no fair queue")
        held = self._leases.find("lock", name)
        if held:
            return Attempt(None, max(0.0, held[0].expires - time.monotonic()))
        lock_name = self._object(name)

        def try_lock(client: HazelcastClient) -> int:
            lock = client.cp_subsystem.get_lock(lock_name).blocking()
            # FencedLock re-enters for the thread that holds it, and every call of this backend runs
            # on the worker thread: refuse a lock the worker holds (another local holder's, or one
            # being given back). The worker runs one call at a time, so nothing slips in between.
            if _owned_by_worker(client, lock_name):
                return 0
            return int(lock.try_lock(timeout=0))

        def unlock_late(client: HazelcastClient, fence: int) -> None:
            if fence:
                client.cp_subsystem.get_lock(lock_name).blocking().unlock()

        fence = self._run(try_lock, "acquire", undo=unlock_late)
        if not fence:
            return Attempt(None, None)
        self._leases.add(Lease(("lock", name, holder, fence), time.monotonic() + ttl,
                               lambda: self._unlock(lock_name)))
        return Attempt(fence)

    def _unlock(self, lock_name: str) -> None:
        self._run(lambda c: c.cp_subsystem.get_lock(lock_name).blocking().unlock(), "release")

    def _owned(self, lock_name: str) -> bool:
        """True if the worker's CP session still owns the lock (False after the session expired)."""
        return self._run(lambda c: _owned_by_worker(c, lock_name), "check lock")

    def _give_back(self, key: tuple[str, str, str, int]) -> bool:
        """Return the local lease ``key`` to the cluster; False if it was not live (or the cluster refused)."""
        lease = self._leases.pop(key)
        if lease is None:
            return False
        try:
            lease.give_back()
        except HazelcastError:
            return False
        return True

    def release(self, name: str, holder: str, token: int) -> bool:
        return self._give_back(("lock", name, holder, token))

    def extend(self, name: str, holder: str, token: int, ttl: float) -> bool:
        key = ("lock", name, holder, token)
        if self._leases.live(key) is None or not self._owned(self._object(name)):
            return False
        return self._leases.extend(key, ttl)

    def holds(self, name: str, holder: str, token: int) -> bool:
        return self._leases.live(("lock", name, holder, token)) is not None and self._owned(self._object(name))

    def inspect(self, name: str) -> LockInfo | None:
        held = self._leases.find("lock", name)
        if held:
            _, _, holder, token = held[0].key
            return LockInfo(name, holder, token, max(0.0, held[0].expires - time.monotonic()))
        lock_name = self._object(name)
        if self._run(lambda c: bool(c.cp_subsystem.get_lock(lock_name).blocking().is_locked()), "inspect"):
            return LockInfo(name, "?", 0, 0.0)
        return None

    # -- semaphores --------------------------------------------------------------------------------
    def try_acquire_permit(self, name: str, permits: int, holder: str, ttl: float) -> Attempt:
        semaphore_name = self._object(name, f"#{permits}")
        counter_name = self._object(name, "#fence")

        def acquire(client: HazelcastClient) -> int:
            semaphore = client.cp_subsystem.get_semaphore(semaphore_name).blocking()
            semaphore.init(permits)
            if not semaphore.try_acquire(1, timeout=0):
                return 0
            try:
                return int(client.cp_subsystem.get_atomic_long(counter_name).blocking().increment_and_get())
            except BaseException:
                semaphore.release(1)
                raise

        def release_late(client: HazelcastClient, token: int) -> None:
            if token:
                client.cp_subsystem.get_semaphore(semaphore_name).blocking().release(1)

        token = self._run(acquire, "acquire permit", undo=release_late)
        if not token:
            soonest = min((lease.expires for lease in self._leases.find("permit", name)), default=None)
            return Attempt(None, None if soonest is None else max(0.0, soonest - time.monotonic()))
        self._leases.add(Lease(("permit", name, holder, token), time.monotonic() + ttl,
                               lambda: self._release_permit(semaphore_name)))
        return Attempt(token)

    def _release_permit(self, semaphore_name: str) -> None:
        self._run(lambda c: c.cp_subsystem.get_semaphore(semaphore_name).blocking().release(1),
                  "release permit")

    def release_permit(self, name: str, holder: str, token: int) -> bool:
        return self._give_back(("permit", name, holder, token))

    def extend_permit(self, name: str, holder: str, token: int, ttl: float) -> bool:
        return self._leases.extend(("permit", name, holder, token), ttl)

    def holds_permit(self, name: str, holder: str, token: int) -> bool:
        return self._leases.live(("permit", name, holder, token)) is not None

