"""lockapi: backend-neutral distributed locks, semaphores and job locks.

Applications depend only on what this module exports::

    import lockapi
    with lockapi.connect() as mgr:            # URL from $LOCKAPI_URL, lockapi.toml, or embedded SQLite
        with mgr.acquire("invoice:42", ttl=30, wait=5) as lease:
            send(invoice, fence=lease.token)
"""

from __future__ import annotations

from typing import Any

from lockapi.config import Settings, resolve
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
from lockapi.jobs import Job, JobLockManager, JobSemaphore
from lockapi.lease import Lease, Permit
from lockapi.manager import LockManager, Semaphore
from lockapi.observability import instrument, instrument_prometheus
from lockapi.plugins import open_backend
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
    "Semaphore",
    "Settings",
    "UnsupportedFeature",
    "connect",
    "instrument",
    "instrument_prometheus",
    "open_backend",
    "resolve_config",
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
    settings = resolve(url, options)
    if settings.migration:
        backend = open_backend(
            "migration://",
            {"source": settings.url, "source_options": settings.options, **settings.migration},
        )
        shown = f"migration({redact_url(settings.url)} -> {redact_url(str(settings.migration['target']))})"
    else:
        backend = open_backend(settings.url, settings.options)
        shown = redact_url(settings.url)
    return LockManager(backend, url=shown)
