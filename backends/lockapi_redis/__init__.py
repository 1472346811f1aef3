"""lockapi backend for Redis: ``redis://``, ``rediss://``, ``redis+sentinel://``, ``redis+cluster://``.

See docs/backends/redis.md for URL formats, options, key layout, scripts and guarantees.
"""

from .backend import RedisBackend

__all__ = ["RedisBackend"]
