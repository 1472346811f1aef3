"""Fair mode on map mode: the queue entry's order, a dead waiter dropped after its queue ttl, cleanup."""

from __future__ import annotations

import time
import uuid

import lockapi
from tests.servers.hazelcast import HazelcastCluster


def test_a_dead_fair_waiter_is_dropped_after_its_queue_ttl(hazelcast_member: HazelcastCluster) -> None:
    with lockapi.connect(hazelcast_member.url("map")) as mgr:
        backend, name = mgr.backend, f"fair:{uuid.uuid4().hex}"
        held = backend.try_acquire(name, "holder", 30)
        assert held.token is not None
        # "ghost" joins the queue and then never refreshes its place, as a killed process would.
        assert backend.try_acquire(name, "ghost", 30, queue_ttl=1.0).token is None
        assert backend.try_acquire(name, "live", 30, queue_ttl=1.0).token is None
        assert backend.release(name, "holder", held.token)
        assert backend.try_acquire(name, "live", 30, queue_ttl=1.0).token is None, "ghost is still first"
        started = time.monotonic()
        granted = None
        while granted is None and time.monotonic() - started < 10:
            granted = backend.try_acquire(name, "live", 30, queue_ttl=1.0).token
            time.sleep(0.1)
        assert granted is not None and granted > held.token
        assert time.monotonic() - started < 3.0
        queues = backend._holder.session().maps["queues"]  # the queue entry is gone once the last waiter left
        assert queues.blocking().get(name) is None


def test_cancel_wait_leaves_the_queue(hazelcast_member: HazelcastCluster) -> None:
    with lockapi.connect(hazelcast_member.url("map")) as mgr:
        backend, name = mgr.backend, f"fair:{uuid.uuid4().hex}"
        held = backend.try_acquire(name, "holder", 30)
        assert held.token is not None
        assert backend.try_acquire(name, "first", 30, queue_ttl=30.0).token is None
        assert backend.try_acquire(name, "second", 30, queue_ttl=30.0).token is None
        backend.cancel_wait(name, "first")
        assert backend.release(name, "holder", held.token)
        assert backend.try_acquire(name, "second", 30, queue_ttl=30.0).token is not None
