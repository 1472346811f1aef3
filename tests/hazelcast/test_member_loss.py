"""A 3-member 5.7 cluster loses one member (SIGKILL) while locks are held (map mode).

Every IMap entry has one synchronous backup on another member (the default ``backup-count: 1``), so
after a single crash the leases, fencing counters and done markers are all still there: holders still
hold, others are still refused, and new tokens keep increasing. (Two members lost before the backups
were re-created would lose entries: see docs/backends/hazelcast.md.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import hazelcast
import pytest

import lockapi
from tests.servers.common import wait_until
from tests.servers.hazelcast import MAP_VERSION, HazelcastCluster, hazelcast_cluster


@pytest.fixture(scope="module")
def three_members() -> Iterator[HazelcastCluster]:
    with hazelcast_cluster(MAP_VERSION, 3) as cluster:
        yield cluster


@pytest.mark.slow
def test_leases_fences_and_markers_survive_a_killed_member(three_members: HazelcastCluster) -> None:
    url = three_members.url("map")
    names = [f"loss:{uuid.uuid4().hex}:{i}" for i in range(24)]  # spread over the partitions
    observer = hazelcast.HazelcastClient(cluster_name=three_members.cluster_name,
                                         cluster_members=three_members.addresses.split(","),
                                         cluster_connect_timeout=30)
    try:
        with lockapi.connect(url, timeout=30) as mgr, lockapi.connect(url, timeout=30) as other:
            leases = {name: mgr.acquire(name, ttl=300) for name in names}
            permit = mgr.semaphore(names[0], 1).acquire(ttl=300)
            for name in names:
                mgr.backend.mark_done(name, 300)

            three_members.kill(2)
            wait_until(lambda: len(observer.cluster_service.get_members()) == 2, 60,
                       "the cluster to drop the killed member")

            assert all(lease.is_held() for lease in leases.values())
            assert all(other.try_acquire(name) is None for name in names)
            assert permit.is_held() and other.semaphore(names[0], 1).try_acquire() is None
            assert other.backend.done(names) == set(names)
            for name, lease in leases.items():
                assert lease.release() is True
                successor = other.acquire(name, ttl=30)
                assert successor.token > lease.token, "fencing counter went back after the member loss"
                successor.release()
            assert permit.release() is True
    finally:
        observer.shutdown()
