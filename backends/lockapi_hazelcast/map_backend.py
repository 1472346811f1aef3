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

What each operation sends, in which order and on which condition, is written once in
:mod:`.map_protocol` (plans, without I/O); this class runs those plans with the blocking client, and
:class:`~lockapi_hazelcast.AsyncMapBackend` runs the same plans with ``hazelcast.asyncio``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from lockapi.spi import Attempt, BackendConfig, LockInfo, Wake

from .base import HazelcastBackend
from .client import ClientHolder, Session
from .map_protocol import CAPABILITIES, DESCRIPTION, MAX_PERMITS, PAUSE_POINTS, SLOT_BITS, MapProtocol
from .protocol import LOCKS, MAP_ROLES, PERMITS
from .watch import registries

__all__ = ["MAX_PERMITS", "SLOT_BITS", "MapBackend"]


class MapBackend(HazelcastBackend):
    """IMap leases, fencing counters and done markers; push wake-ups from one entry listener per map."""

    mode = "map"
    capabilities = CAPABILITIES
    description = DESCRIPTION
    pause_points = PAUSE_POINTS
    max_permits = MAX_PERMITS

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self._protocol = MapProtocol(self.settings, self.where)
        self._holder = ClientHolder(self.settings, self.where, MAP_ROLES, self._set_up)
        self._listen_lock = threading.Lock()
        self._watches = registries()

    # -- connection --------------------------------------------------------------------------------
    def _set_up(self, session: Session, previous: Session | None) -> None:
        for kind in previous.listening if previous else ():
            self._listen(session, kind)

    def _listen(self, session: Session, kind: str) -> None:
        self._holder.run_on(session, self._protocol.listen(kind, self._watches[kind].on_event),
                            self._holder.deadline())
        session.listening.add(kind)

    def _ensure_listener(self, kind: str) -> None:
        session = self._holder.session()
        with self._listen_lock:
            if kind not in session.listening:
                self._listen(session, kind)

    def close(self) -> None:
        self._holder.close()

    # -- locks -------------------------------------------------------------------------------------
    def try_acquire(self, name: str, holder: str, ttl: float, *, queue_ttl: float | None = None) -> Attempt:
        deadline = self._holder.deadline()
        return self._holder.run(self._protocol.try_acquire(name, holder, ttl, queue_ttl, deadline), deadline)

    def cancel_wait(self, name: str, holder: str) -> None:
        deadline = self._holder.deadline()
        self._holder.run(self._protocol.cancel_wait(name, holder, deadline), deadline)

    def release(self, name: str, holder: str, token: int) -> bool:
        return self._holder.run(self._protocol.release(name, holder, token))

    def extend(self, name: str, holder: str, token: int, ttl: float) -> bool:
        deadline = self._holder.deadline()
        return self._holder.run(self._protocol.extend(name, holder, token, ttl, deadline), deadline)

    def inspect(self, name: str) -> LockInfo | None:
        return self._holder.run(self._protocol.inspect(name))

    def holds(self, name: str, holder: str, token: int) -> bool:
        return self._holder.run(self._protocol.holds(name, holder, token))

    # -- semaphores --------------------------------------------------------------------------------
    def try_acquire_permit(self, name: str, permits: int, holder: str, ttl: float) -> Attempt:
        deadline = self._holder.deadline()
        return self._holder.run(self._protocol.try_acquire_permit(name, permits, holder, ttl, deadline), deadline)

    def release_permit(self, name: str, holder: str, token: int) -> bool:
        return self._holder.run(self._protocol.release_permit(name, holder, token))

    def extend_permit(self, name: str, holder: str, token: int, ttl: float) -> bool:
        deadline = self._holder.deadline()
        return self._holder.run(self._protocol.extend_permit(name, holder, token, ttl, deadline), deadline)

    def holds_permit(self, name: str, holder: str, token: int) -> bool:
        return self._holder.run(self._protocol.holds_permit(name, holder, token))

    # -- administration ----------------------------------------------------------------------------
    def set_fence_floor(self, name: str, token: int, *, semaphore: bool = False) -> None:
        deadline = self._holder.deadline()
        self._holder.run(self._protocol.set_fence_floor(name, token, semaphore, deadline), deadline)

    def force_release(self, name: str) -> bool:
        return self._holder.run(self._protocol.force_release(name))

    # -- waiting -----------------------------------------------------------------------------------
    def watch(self, name: str, wake: Wake, *, semaphore: bool = False, holder: str | None = None
              ) -> contextlib.AbstractContextManager[None]:
        """A release wakes every watcher of the name, fair waiters included (``holder`` is not used)."""
        return self._watching(PERMITS if semaphore else LOCKS, name, wake)

    @contextlib.contextmanager
    def _watching(self, kind: str, name: str, wake: Wake) -> Iterator[None]:
        with self._watches[kind].register(name, wake):
            self._ensure_listener(kind)
            yield
