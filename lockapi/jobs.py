"""The job API: one element of a scheduled job handled by one node, once.

Lock names are ``"<job name>:<key(element)>"``, with ``\\`` and ``:`` in the job name escaped by a
backslash so that no (job, element) pair shares a lock or done marker with another (job ``a`` element
``b:c`` is ``a:b:c``; job ``a:b`` element ``c`` is ``a\\:b:c``). Exactly-once needs an order, and these classes keep
it: a node checks the done marker only AFTER it holds the lock, and marks an element done BEFORE it
releases the lock.

Each element a node holds has its own :class:`Lease` (``jobs.lease(job, element)``): its fencing token
goes to the outside service, and ``extend`` / ``auto_renew`` keep an element that outlives ``job.ttl``.
Job semaphore slots are :class:`Slot` objects, released by identity (``slot.release()`` or ``with``).
"""

from __future__ import annotations

import abc
import contextlib
import threading
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from lockapi.errors import InvalidArgument, InvalidArgumentType, LeaseLost, LockError, LockTimeout
from lockapi.spi import pause_point
from lockapi.validation import check_at_most, check_callback, check_name, check_permits, check_ttl

if TYPE_CHECKING:
    from lockapi.lease import Lease, OnLost, Permit
    from lockapi.manager import LockManager


@dataclass(frozen=True)
class Job:
    """A named job: lease ttl per element, how long "done" is remembered, and the concurrency limit."""

    name: str
    ttl: float = 60.0
    done_ttl: float = 86400.0
    max_concurrency: int = 1
    key: Callable[[Any], str] = field(default=str, compare=False)

    def __post_init__(self) -> None:
        check_name(self.name, "job name")
        object.__setattr__(self, "ttl", check_ttl(self.ttl))
        object.__setattr__(self, "done_ttl", check_ttl(self.done_ttl))
        check_permits(self.max_concurrency)
        if not callable(self.key):
            raise InvalidArgumentType("Job.key must be a callable element -> str")

    def lock_name(self, element: Any) -> str:
        """The lock name of ``element``: ``"<job name, escaped>:<key(element)>"``.

        The first unescaped ``:`` ends the job name, so distinct (job, element) pairs never share a name.
        """
        key = self.key(element)
        if not isinstance(key, str):
            raise InvalidArgumentType(f"Job.key must return str, got {type(key).__name__} for {element!r}")
        return check_name(f"{_escape(self.name)}:{key}", "job lock name")


def _escape(job_name: str) -> str:
    return job_name.replace("\\", "\\\\").replace(":", "\\:")


def lost_after_marking(name: str) -> LeaseLost:
    """The error of ``successfully_processed`` when the lock had been lost before the marker was written."""
    return LeaseLost(
        f"{name!r} was marked done, but its lock had expired before: another node may have "
        "processed it at the same time (raise job.ttl, auto-renew, or use shorter work units)"
    )


class JobLockManager(abc.ABC):
    """Per-element locks of scheduled jobs. Implementations are thread-safe.

    ``auto_renew`` / ``on_lost`` / ``at_most`` on :meth:`lock` and :meth:`lock_many` mean what they
    mean on :meth:`LockManager.acquire`, for each element's lease.
    """

    @abc.abstractmethod
    def lock(self, job: Job, element: Any, *, wait: float | None = 0.0, auto_renew: bool = False,
             on_lost: OnLost | None = None, at_most: float | None = None) -> bool:
        """Take ``element``; False if another holder has it or it was processed within ``done_ttl``.

        ``wait`` (seconds, None: forever) waits for another holder to let it go first; the done marker
        is read only once the lock is held, so an element that holder finished is still refused."""

    @abc.abstractmethod
    def unlock(self, job: Job, element: Any, *, keep: float | None = None) -> None:
        """Release ``element`` without marking it done: it may be processed again (after ``keep``
        seconds if given: see :meth:`Lease.release`)."""

    @abc.abstractmethod
    def successfully_processed(self, job: Job, element: Any) -> None:
        """Mark ``element`` done for ``job.done_ttl`` seconds, then release it.

        Raises :class:`LeaseLost` (after writing the marker) if the lock had been lost meanwhile: another
        node may have processed the element at the same time.
        """

    @abc.abstractmethod
    def lock_many(self, job: Job, elements: Iterable[Any], *, auto_renew: bool = False,
                  on_lost: OnLost | None = None, at_most: float | None = None) -> list[Any]:
        """Take as many of ``elements`` as are free and not done; return those taken, in input order."""

    @abc.abstractmethod
    def lease(self, job: Job, element: Any) -> Lease:
        """The lease this manager holds on ``element`` (taken by :meth:`lock` or :meth:`lock_many`):
        ``lease.token`` is its fencing token; ``lease.extend()`` keeps it past ``job.ttl``. Release it
        through :meth:`unlock` or :meth:`successfully_processed`, not directly.
        Raises :class:`InvalidArgument` if this manager does not hold ``element``."""

    @abc.abstractmethod
    def is_processed(self, job: Job, element: Any) -> bool:
        """True if ``element`` was marked done within ``done_ttl``."""


class Slot:
    """One slot of a job semaphore: a :class:`Permit` that its :class:`JobSemaphore` tracks.

    Release it by identity with :meth:`release` or by leaving a ``with`` block; any thread may. It is
    truthy, so ``if slots.try_acquire(job):`` reads as before.
    """

    def __init__(self, owner: BackendJobSemaphore, job: Job, permit: Permit) -> None:
        self.job = job
        self.permit = permit
        """The underlying permit (``extend``, ``lost``, ``is_held``)."""
        self._owner = owner

    @property
    def token(self) -> int:
        """The permit's fencing token."""
        return self.permit.token

    def __repr__(self) -> str:
        return f"<Slot of job {self.job.name!r} token={self.token}>"

    def release(self) -> bool:
        """Return this slot. True if it was still held; False if it had expired or was already returned."""
        return self._owner._release_slot(self)

    def __enter__(self) -> Slot:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class JobSemaphore(abc.ABC):
    """At most ``job.max_concurrency`` holders cluster-wide per job. Implementations are thread-safe."""

    @abc.abstractmethod
    def try_acquire(self, job: Job) -> Slot | None:
        """Take a slot of ``job`` if one is free right now; None otherwise."""

    @abc.abstractmethod
    def acquire(self, job: Job, *, wait: float | None = None) -> Slot:
        """Take a slot, waiting up to ``wait`` seconds; raises :class:`LockTimeout`."""

    @abc.abstractmethod
    def release(self, job: Job, slot: Slot | None = None) -> None:
        """Return ``slot`` (same as ``slot.release()``). Without ``slot`` (the older form): a slot of
        ``job`` this object holds, the calling thread's if it has one. Raises :class:`InvalidArgument`
        if there is none."""


class BackendJobLockManager(JobLockManager):
    """The JobLockManager of a :class:`LockManager`; works on every backend through the SPI."""

    def __init__(self, manager: LockManager) -> None:
        self._manager = manager
        self._held: dict[str, Lease] = {}
        self._lock = threading.Lock()

    def lock(self, job: Job, element: Any, *, wait: float | None = 0.0, auto_renew: bool = False,
             on_lost: OnLost | None = None, at_most: float | None = None) -> bool:
        name = job.lock_name(element)
        with self._lock:
            if name in self._held:
                return False
        found: Lease | None
        if wait == 0:
            found = self._manager.try_acquire(name, ttl=job.ttl, auto_renew=auto_renew, on_lost=on_lost,
                                              at_most=at_most)
        else:
            try:
                found = self._manager.acquire(name, ttl=job.ttl, wait=wait, auto_renew=auto_renew,
                                              on_lost=on_lost, at_most=at_most)
            except LockTimeout:
                found = None
        if found is None:
            return False
        lease = found
        pause_point("job_lock:acquired")
        try:
            done = bool(self._manager.backend.done([name]))
        except BaseException:
            with contextlib.suppress(LockError):
                lease.release()
            raise
        if done:
            lease.release()
            return False
        with self._lock:
            self._held[name] = lease
        return True

    def lock_many(self, job: Job, elements: Iterable[Any], *, auto_renew: bool = False,
                  on_lost: OnLost | None = None, at_most: float | None = None) -> list[Any]:
        cap = check_at_most(at_most, job.ttl, auto_renew)
        check_callback(on_lost)
        by_name: dict[str, Any] = {}
        for element in elements:
            by_name.setdefault(job.lock_name(element), element)
        with self._lock:
            wanted = [name for name in by_name if name not in self._held]
        leases = self._manager._acquire_many(wanted, job.ttl, skip_done=True, auto_renew=auto_renew,
                                             on_lost=on_lost, at_most=cap)
        with self._lock:
            self._held.update(leases)
        return [by_name[name] for name in wanted if name in leases]

    def lease(self, job: Job, element: Any) -> Lease:
        name = job.lock_name(element)
        with self._lock:
            lease = self._held.get(name)
        if lease is None:
            raise InvalidArgument(f"{name!r} is not locked by this JobLockManager: call lock() first")
        return lease

    def _take(self, job: Job, element: Any) -> tuple[str, Lease]:
        name = job.lock_name(element)
        with self._lock:
            lease = self._held.pop(name, None)
        if lease is None:
            raise InvalidArgument(f"{name!r} is not locked by this JobLockManager: call lock() first")
        return name, lease

    def unlock(self, job: Job, element: Any, *, keep: float | None = None) -> None:
        if keep is not None:
            check_ttl(keep, "keep")
        _, lease = self._take(job, element)
        lease.release(keep=keep)

    def successfully_processed(self, job: Job, element: Any) -> None:
        name, lease = self._take(job, element)
        try:
            self._manager.backend.mark_done(name, job.done_ttl)
        except BaseException:
            with self._lock:
                self._held[name] = lease  # still ours: the caller may retry or unlock
            raise
        pause_point("job_done:marked")
        if not lease.release():
            raise lost_after_marking(name)

    def is_processed(self, job: Job, element: Any) -> bool:
        name = job.lock_name(element)
        return bool(self._manager.backend.done([name]))


class BackendJobSemaphore(JobSemaphore):
    """The JobSemaphore of a :class:`LockManager`; works on every backend through the SPI."""

    def __init__(self, manager: LockManager) -> None:
        self._manager = manager
        self._held: dict[str, list[tuple[Hashable, Slot]]] = {}
        self._lock = threading.Lock()

    def _keep(self, job: Job, permit: Permit) -> Slot:
        slot = Slot(self, job, permit)
        with self._lock:
            self._held.setdefault(job.name, []).append((threading.get_ident(), slot))
        return slot

    def try_acquire(self, job: Job) -> Slot | None:
        permit = self._manager.semaphore(job.name, job.max_concurrency).try_acquire(ttl=job.ttl)
        return None if permit is None else self._keep(job, permit)

    def acquire(self, job: Job, *, wait: float | None = None) -> Slot:
        return self._keep(job, self._manager.semaphore(job.name, job.max_concurrency).acquire(ttl=job.ttl,
                                                                                                 wait=wait))

    def release(self, job: Job, slot: Slot | None = None) -> None:
        if slot is not None:
            if slot.job.name != job.name or slot._owner is not self:
                raise InvalidArgument(f"{slot!r} is not a slot of job {job.name!r} held by this JobSemaphore")
            slot.release()
            return
        me = threading.get_ident()
        with self._lock:
            held = self._held.get(job.name, [])
            if not held:
                raise InvalidArgument(f"no slot of job {job.name!r} is held by this JobSemaphore")
            index = next((i for i, (owner, _) in enumerate(held) if owner == me), len(held) - 1)
            chosen = held[index][1]
        chosen.release()

    def _release_slot(self, slot: Slot) -> bool:
        with self._lock:
            held = self._held.get(slot.job.name, [])
            index = next((i for i, (_, s) in enumerate(held) if s is slot), None)
            if index is None:
                return False  # returned already
            del held[index]
            if not held:
                del self._held[slot.job.name]
        return slot.permit.release()
