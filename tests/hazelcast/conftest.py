"""Real Hazelcast clusters for the hazelcast backend tests, each started once per session and stopped after.

* ``hazelcast_member``: one community 5.7.0 member (no CP subsystem): map mode.
* ``cp_cluster``: three community 5.4.0 members with the CP subsystem (cp-member-count 3): cp mode.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers.hazelcast import CP_VERSION, MAP_VERSION, HazelcastCluster, hazelcast_cluster


@pytest.fixture(scope="session")
def hazelcast_member() -> Iterator[HazelcastCluster]:
    with hazelcast_cluster(MAP_VERSION, 1) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def cp_cluster() -> Iterator[HazelcastCluster]:
    with hazelcast_cluster(CP_VERSION, 3, cp=True) as cluster:
        yield cluster
