"""lockapi for asyncio: the same locks, semaphores and job locks, with coroutines.

::

    import lockapi.aio

    async with lockapi.aio.connect(url) as mgr:        # same URL/env/TOML resolution as lockapi.connect
        async with mgr.acquire("invoice:42", ttl=30, wait=5) as lease:
            await send(invoice, fence=lease.token)

Backends with a native asyncio driver use it; the others run their sync driver on a small bounded thread
pool (option ``async_threads``, default 8). Waiting never occupies a thread. Scheduled work runs on one
node per trigger with ``@mgr.scheduled(...)`` on an ``async def`` (:mod:`lockapi.aio.scheduling`). See
docs/asyncio.md.
"""

from __future__ import annotations

from typing import Any

from lockapi.aio.jobs import AsyncJobLockManager, AsyncJobSemaphore
from lockapi.aio.lease import AsyncLease, AsyncPermit
from lockapi.aio.manager import AsyncLockManager, AsyncSemaphore
from lockapi.aio.plugins import open_async_backend
from lockapi.aio.scheduling import AsyncScheduledLock, AsyncScheduledRun, current_run
from lockapi.config import backend_target, resolve

__all__ = [
    "AsyncJobLockManager",
    "AsyncJobSemaphore",
    "AsyncLease",
    "AsyncLockManager",
    "AsyncPermit",
    "AsyncScheduledLock",
    "AsyncScheduledRun",
    "AsyncSemaphore",
    "connect",
    "current_run",
]


def connect(url: str | None = None, **options: Any) -> AsyncLockManager:
    """Open an :class:`AsyncLockManager` on the backend named by ``url`` (or the configuration).

    Resolves the URL exactly as :func:`lockapi.connect` does (argument, ``$LOCKAPI_URL``, TOML file,
    embedded SQLite default), including a ``[lockapi.migration]`` configuration. Constructing the
    manager checks every option and does no I/O; connections open on first use. Use it as
    ``async with lockapi.aio.connect(...) as mgr`` or call ``await mgr.aclose()``.
    """
    target, target_options, shown = backend_target(resolve(url, options))
    return AsyncLockManager(open_async_backend(target, target_options), url=shown)
