"""The conformance suite on map mode (IMap leases) against a real community 5.7.0 member."""

from __future__ import annotations

import pytest

from lockapi.testing import LockConformance
from tests.servers.hazelcast import HazelcastCluster


class TestHazelcastMapConformance(LockConformance):
    # Members keep entry times with one-second resolution: a lease ends between ttl and ttl + 1 s.
    margin = 2.5

    @pytest.fixture
    def lock_url(self, hazelcast_member: HazelcastCluster) -> str:
        return hazelcast_member.url("map")
