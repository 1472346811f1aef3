"""The job API: one element of a scheduled job handled by one node, once.

Lock names are ``"<job name>:<key(element)>"``, with ``\\`` and ``:`` in the job name escaped by a
backslash so that no (job, element) pair shares a lock or done marker with another (job ``a`` element
``b:c`` is ``a:b:c``; job ``a:b`` element ``c`` is ``a\\:b:c``). Exactly-once needs an order, and these classes keep
it: a node checks the done marker only AFTER it holds the lock, and marks an element done BEFORE it
releases the lock.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lockapi.errors import InvalidArgument, InvalidArgumentType, LeaseLost
from lockapi.spi import pause_point
from lockapi.validation import check_name, check_permits, check_ttl

if TYPE_CHECKING:
    from lockapi.lease import Lease, Permit
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


class JobLockManager(abc.ABC):
    """Per-element locks of scheduled jobs. Implementations are thread-safe."""

    @abc.abstractmethod
    def lock(self, job: Job, element: Any) -> bool:
        """Take ``element``; False if another holder has it or it was processed within ``done_ttl``."""

    @abc.abstractmethod
    def unlock(self, job: Job, element: Any) -> None:
        """Release ``element`` without marking it done: it may be processed again."""

    @abc.abstractmethod
    def successfully_processed(self, job: Job, element: Any) -> None:
        """Mark ``element`` done for ``job.done_ttl`` seconds, then release it.

        Raises :class:`LeaseLost` (after writing the marker) if the lock had been lost meanwhile: another
        node may have processed the element at the same time.
        """

    @abc.abstractmethod
    def lock_many(self, job: Job, elements: Iterable[Any]) -> list[Any]:
        """Take as many of ``elements`` as are free and not done; return those taken, in input order."""

    @abc.abstractmethod
    def is_processed(self, job: Job, element: Any) -> bool:
        """True if ``element`` was marked done within ``done_ttl``."""


class JobSemaphore(abc.ABC):
    """At most ``job.max_concurrency`` holders cluster-wide per job. Implementations are thread-safe."""

    @abc.abstractmethod
    def try_acquire(self, job: Job) -> bool:
        """Take a slot of ``job`` if one is free right now."""

    @abc.abstractmethod
    def acquire(self, job: Job, *, wait: float | None = None) -> None:
        """Take a slot, waiting up to ``wait`` seconds; raises :class:`LockTimeout`."""

    @abc.abstractmethod
    def release(self, job: Job) -> None:
        """Return a slot this object holds for ``job`` (the calling thread's, if it has one)."""


class BackendJobLockManager(JobLockManager):
    """The JobLockManager of a :class:`LockManager`; works on every backend through the SPI."""

    def __init__(self, manager: LockManager) -> None:
        self._manager = manager
        self._held: dict[str, Lease] = {}
        self._lock = threading.Lock()

    def lock(self, job: Job, element: Any) -> bool:
        name = job.lock_name(element)
        with self._lock:
            if name in self._held:
                return False
        lease = self._manager.try_acquire(name, ttl=job.ttl)
        if lease is None:
            return False
        pause_point("job_lock:acquired")
        if self._manager.backend.done([name]):
            lease.release()
            return False
        with self._lock:
            self._held[name] = lease
        return True

    def lock_many(self, job: Job, elements: Iterable[Any]) -> list[Any]:
        by_name: dict[str, Any] = {}
        for element in elements:
            by_name.setdefault(job.lock_name(element), element)
        with self._lock:
            wanted = [name for name in by_name if name not in self._held]
        leases = self._manager._acquire_many(wanted, job.ttl, skip_done=True)
        with self._lock:
            self._held.update(leases)
        return [by_name[name] for name in wanted if name in leases]

    def _take(self, job: Job, element: Any) -> tuple[str, Lease]:
        name = job.lock_name(element)
        with self._lock:
            lease = self._held.pop(name, None)
        if lease is None:
            raise InvalidArgument(f"{name!r} is not locked by this JobLockManager: call lock() first")
        return name, lease

    def unlock(self, job: Job, element: Any) -> None:
        _, lease = self._take(job, element)
        lease.release()

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
            raise LeaseLost(
                f"{name!r} was marked done, but its lock had expired before: another node may have "
                "processed it at the same time (raise job.ttl or use shorter work units)"
            )

    def is_processed(self, job: Job, element: Any) -> bool:
        name = job.lock_name(element)
        return bool(self._manager.backend.done([name]))


class BackendJobSemaphore(JobSemaphore):
    """The JobSemaphore of a :class:`LockManager`; works on every backend through the SPI."""

    def __init__(self, manager: LockManager) -> None:
        self._manager = manager
        self._held: dict[str, list[tuple[Hashable, Permit]]] = {}
        self._lock = threading.Lock()

    def _keep(self, job: Job, permit: Permit) -> None:
        with self._lock:
            self._held.setdefault(job.name, []).append((threading.get_ident(), permit))

    def try_acquire(self, job: Job) -> bool:
        permit = self._manager.semaphore(job.name, job.max_concurrency).try_acquire(ttl=job.ttl)
        if permit is None:
            return False
        self._keep(job, permit)
        return True

    def acquire(self, job: Job, *, wait: float | None = None) -> None:
        self._keep(job, self._manager.semaphore(job.name, job.max_concurrency).acquire(ttl=job.ttl, wait=wait))

    def release(self, job: Job) -> None:
        me = threading.get_ident()
        with self._lock:
            held = self._held.get(job.name, [])
            if not held:
                raise InvalidArgument(f"no slot of job {job.name!r} is held by this JobSemaphore")
            index = next((i for i, (owner, _) in enumerate(held) if owner == me), len(held) - 1)
            _, permit = held.pop(index)
            if not held:
                del self._held[job.name]
        permit.release()
