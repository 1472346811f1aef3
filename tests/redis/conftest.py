"""Session-scoped Redis servers for tests/redis: one standalone server and one 3-master cluster.

Function-scoped servers (restart, TLS, sentinel, replica) are started by the tests that need them.
"""

from __future__ import annotations





