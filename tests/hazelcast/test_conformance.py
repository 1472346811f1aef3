"""The conformance suite on both modes: map mode (IMap leases) against one community 5.7.0 member, cp mode
(FencedLock, ISemaphore) against a 3-member 5.4.0 CP cluster."""

from __future__ import annotations

import pytest

from tests.conformance import Conformance
from tests.servers.hazelcast import HazelcastCluster


class TestMapConformance(Conformance):
    # Members keep entry times with one-second resolution: a lease ends between ttl and ttl + 1 s.
    margin = 2.5

    @pytest.fixture
    def lock_url(self, hazelcast_member: HazelcastCluster) -> str:
        return hazelcast_member.url("map")


class TestCPConformance(Conformance):
    margin = 2.5

    @pytest.fixture
    def lock_url(self, cp_cluster: HazelcastCluster) -> str:
        return cp_cluster.url("cp")
