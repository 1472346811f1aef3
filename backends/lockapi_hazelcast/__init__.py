"""lockapi backend for Hazelcast, in two modes (two entry points of the group ``lockapi.backends``):

* ``hazelcast://host:port[,host:port...]?cluster_name=dev`` -> :class:`MapBackend`: leases in IMaps
  (any edition, including community 5.5+);
* ``hazelcast+cp://...`` (or ``hazelcast://...?mode=cp``) -> :class:`CPBackend`: the CP subsystem's
  FencedLock and ISemaphore.

For :mod:`lockapi.aio`, map mode has a native backend on ``hazelcast.asyncio``, :class:`AsyncMapBackend`
(entry point ``hazelcast`` of ``lockapi.async_backends``; imported on first use, so the blocking API
never loads the asyncio client); cp mode is served by its sync backend on core's adapter.

See docs/backends/hazelcast.md for what each mode guarantees. Only the names in ``__all__`` are API.
"""

from __future__ import annotations

from typing import Any

from .base import HazelcastBackend
from .cp_backend import CPBackend
from .map_backend import MapBackend

__all__ = ["AsyncMapBackend", "CPBackend", "HazelcastBackend", "MapBackend"]


def __getattr__(name: str) -> Any:
    if name == "AsyncMapBackend":
        from .aio_map_backend import AsyncMapBackend

        return AsyncMapBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
