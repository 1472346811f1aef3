"""Session-scoped Redis servers for tests/redis: one standalone server and one 3-master cluster.

Function-scoped servers (restart, TLS, sentinel, replica) are started by the tests that need them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers.redis import RedisCluster, RedisServer, redis_cluster, redis_server


@pytest.fixture(scope="session")
def redis_standalone() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster_nodes() -> Iterator[RedisCluster]:
    with redis_cluster(3) as cluster:
        yield cluster
