"""The conformance suite on a standalone redis-server and on a real 3-master Redis Cluster."""

from __future__ import annotations

import pytest

from tests.conformance import Conformance
from tests.servers.redis import RedisCluster, RedisServer


class TestRedisConformance(Conformance):
    @pytest.fixture
    def lock_url(self, redis_standalone: RedisServer) -> str:
        return redis_standalone.url


@pytest.mark.slow
class TestRedisClusterConformance(Conformance):
    @pytest.fixture
    def lock_url(self, redis_cluster_nodes: RedisCluster) -> str:
        return redis_cluster_nodes.url
