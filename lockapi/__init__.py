"""lockapi: backend-neutral distributed locks, semaphores and job locks.

Applications depend only on what this module exports::

    import lockapi
    with lockapi.connect() as mgr:            # URL from $LOCKAPI_URL, lockapi.toml, or embedded SQLite
        with mgr.acquire("invoice:42", ttl=30, wait=5) as lease:
            send(invoice, fence=lease.token)
"""

from __future__ import annotations

from typing import Any

from lockapi.config import Settings, backend_target, resolve
from lockapi.errors import (
    BackendUnavailable,
    ConfigError,
    InvalidArgument,
    InvalidArgumentType,
    InvalidName,
    InvalidNameType,
    LeaseLost,
    LockError,
    LockTimeout,
    UnsupportedFeature,
)
from lockapi.events import Event
from lockapi.jobs import Job, JobLockManager, JobSemaphore, Slot
from lockapi.lease import Lease, Permit
from lockapi.manager import LockManager, Semaphore
from lockapi.observability import instrument, instrument_prometheus
from lockapi.plugins import open_backend
from lockapi.scheduling import RunSkipped, ScheduledLock, ScheduledRun, current_run, scheduled
from lockapi.spi import Capability, LockInfo, redact_url

__all__ = [
    "BackendUnavailable",
    "Capability",
    "ConfigError",
    "Event",
    "InvalidArgument",
    "InvalidArgumentType",
    "InvalidName",
    "InvalidNameType",
    "Job",
    "JobLockManager",
    "JobSemaphore",
    "Lease",
    "LeaseLost",
    "LockError",
    "LockInfo",
    "LockManager",
    "LockTimeout",
    "Permit",
    "RunSkipped",
    "ScheduledLock",
    "ScheduledRun",
    "Semaphore",
    "Settings",
    "Slot",
    "UnsupportedFeature",
    "connect",
    "current_run",
    "instrument",
    "instrument_prometheus",
    "open_backend",
    "redact_url",
    "resolve_config",
    "scheduled",
]

resolve_config = resolve

__version__ = "0.1.0"


def connect(url: str | None = None, **options: Any) -> LockManager:
    """Open a :class:`LockManager` on the backend named by ``url`` (or the configuration).

    ``url`` None: ``$LOCKAPI_URL``, else the TOML file named by ``$LOCKAPI_CONFIG``, else
    ``./lockapi.toml``, else a SQLite file ``lockapi.sqlite3`` in the working directory. Options may
    also be given in the URL's query string; every backend accepts ``timeout`` (seconds, default 5),
    the bound on any single backend operation. With a ``[lockapi.migration]`` table (or
    ``$LOCKAPI_MIGRATION_TARGET``), the manager runs the configured migration phase.
    Raises :class:`ConfigError` for a bad URL or option, before connecting.
    """
    target, target_options, shown = backend_target(resolve(url, options))
    return LockManager(open_backend(target, target_options), url=shown)
