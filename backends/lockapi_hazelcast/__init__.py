"""lockapi backend for Hazelcast, in two modes (two entry points of the group ``lockapi.backends``):

* ``hazelcast://host:port[,host:port...]?cluster_name=dev`` -> :class:`MapBackend`: leases in IMaps
  (any edition, including community 5.5+);
* ``hazelcast+cp://...`` (or ``hazelcast://...?mode=cp``) -> :class:`CPBackend`: the CP subsystem's
  FencedLock and ISemaphore.

See docs/backends/hazelcast.md for what each mode guarantees. Only the names in ``__all__`` are API.
"""

from .base import HazelcastBackend
from .cp_backend import CPBackend
from .map_backend import MapBackend

__all__ = ["CPBackend", "HazelcastBackend", "MapBackend"]
