"""lockapi backend for Hazelcast: ``hazelcast://host:port[,host:port...]?cluster_name=dev&mode=map``.

``mode=map`` (default) keeps leases in IMaps (any edition); ``mode=cp`` uses the CP subsystem's
FencedLock and ISemaphore. See docs/backends/hazelcast.md for what each mode guarantees.
"""

from ._base import HazelcastBackend
from ._cp_backend import CPBackend
from ._map_backend import MapBackend

__all__ = ["CPBackend", "HazelcastBackend", "MapBackend"]
