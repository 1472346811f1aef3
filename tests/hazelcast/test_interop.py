"""Interop with applications that lock with Hazelcast's own ``IMap.lock`` (e.g. Java services).

What the docs claim, shown with the raw Python client: neither mode excludes ``IMap.lock`` holders, and
``IMap.lock`` holders are not excluded by lockapi leases, whatever map they lock in. A foreign
``IMap.lock`` on a key of lockapi's OWN map (``<prefix>.locks``) blocks lockapi's writes to that key:
the acquire gives up with BackendUnavailable after ``timeout``, and the parked write lands when the key
is unlocked, leaving an orphan lease until its ttl (``force_release`` clears it).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import hazelcast
import pytest

import lockapi
from lockapi.errors import BackendUnavailable
from tests.servers.common import wait_until
from tests.servers.hazelcast import HazelcastCluster


def _raw_client(cluster: HazelcastCluster) -> hazelcast.HazelcastClient:
    return hazelcast.HazelcastClient(cluster_name=cluster.cluster_name, cluster_members=cluster.addresses.split(","),
                                     cluster_connect_timeout=30)


@pytest.fixture
def raw_map(hazelcast_member: HazelcastCluster) -> Iterator[object]:
    client = _raw_client(hazelcast_member)
    try:
        yield client.get_map("java-service.locks").blocking()
    finally:
        client.shutdown()


def test_map_mode_and_imap_lock_do_not_exclude_each_other(hazelcast_member: HazelcastCluster,
                                                         raw_map: object) -> None:
    name = f"order:{uuid.uuid4().hex}"
    with lockapi.connect(hazelcast_member.url("map")) as mgr:
        raw_map.lock(name, lease_time=30)  # type: ignore[attr-defined]
        lease = mgr.try_acquire(name, ttl=30)
        assert lease is not None, "lockapi does not see IMap.lock holders"
        lease.release()
        raw_map.unlock(name)  # type: ignore[attr-defined]
        held = mgr.acquire(name, ttl=30)
        assert raw_map.try_lock(name, lease_time=30, timeout=0) is True  # type: ignore[attr-defined]
        raw_map.unlock(name)  # type: ignore[attr-defined]
        held.release()


def test_imap_lock_on_lockapis_own_map_blocks_lockapi(hazelcast_member: HazelcastCluster) -> None:
    name = f"order:{uuid.uuid4().hex}"
    client = _raw_client(hazelcast_member)
    try:
        own = client.get_map("lockapi.locks").blocking()
        own.lock(name, lease_time=8)
        with lockapi.connect(hazelcast_member.url("map"), timeout=2) as mgr:
            with pytest.raises(BackendUnavailable):
                mgr.try_acquire(name, ttl=30)
            own.unlock(name)
            # The member parked the write; it lands once the key is unlocked: an orphan lease that
            # nobody was granted (its acquire failed) and that holds the name until its ttl.
            wait_until(lambda: mgr.inspect(name) is not None, 20, "the parked write to land")
            assert mgr.try_acquire(name, ttl=30) is None
            assert mgr.backend.force_release(name) is True
            lease = mgr.try_acquire(name, ttl=30)
            assert lease is not None
            lease.release()
    finally:
        client.shutdown()


def test_cp_mode_and_imap_lock_do_not_exclude_each_other(cp_cluster: HazelcastCluster) -> None:
    name = f"order:{uuid.uuid4().hex}"
    client = _raw_client(cp_cluster)
    try:
        raw = client.get_map("java-service.locks").blocking()
        raw.lock(name, lease_time=30)
        with lockapi.connect(cp_cluster.url("cp")) as mgr:
            lease = mgr.try_acquire(name, ttl=30)
            assert lease is not None, "a FencedLock is a different object from an IMap key lock"
            raw.unlock(name)
            assert raw.try_lock(name, lease_time=30, timeout=0) is True
            raw.unlock(name)
            lease.release()
    finally:
        client.shutdown()
