"""The conformance suite on cp mode (FencedLock, ISemaphore) against a real 3-member 5.4.0 CP cluster."""

from __future__ import annotations

import pytest

from lockapi.testing import LockConformance
from tests.servers.hazelcast import HazelcastCluster


class TestHazelcastCPConformance(LockConformance):
    margin = 2.5

    @pytest.fixture
    def lock_url(self, cp_cluster: HazelcastCluster) -> str:
        return cp_cluster.url("cp")
