"""hazelcast-python-client's reactor wake-up race (see lockapi_hazelcast/client_fixes.py): several threads
on one client used to leave its waker stuck, after which every request waited for the reactor's 10 ms
poll timeout."""

from __future__ import annotations

import threading
import time
import uuid

from lockapi_hazelcast import client_fixes

import lockapi
from tests.servers.common import wait_until
from tests.servers.hazelcast import HazelcastCluster


def test_the_fix_applies_to_the_installed_client() -> None:
    from hazelcast import reactor

    assert client_fixes.apply() is True
    assert reactor._PipedWaker.handle_read is client_fixes.drain_then_clear


def test_threads_sharing_a_manager_leave_the_reactor_wakeable(hazelcast_member: HazelcastCluster) -> None:
    """Four threads cycle locks on one manager (unfixed: stuck in 6 runs of 6). Once they stopped, the
    waker must be idle (not 'awake' with nothing in its pipe), so the next request wakes the reactor."""
    with lockapi.connect(hazelcast_member.url("map")) as mgr:
        assert mgr.try_acquire("warm-up") is not None
        waker = mgr.backend._holder.client()._reactor._loop.waker  # type: ignore[attr-defined]
        errors: list[BaseException] = []

        def cycle() -> None:
            name, stop = uuid.uuid4().hex, time.monotonic() + 2.0
            try:
                while time.monotonic() < stop:
                    lease = mgr.try_acquire(name, ttl=30)
                    assert lease is not None and lease.release()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=cycle) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors
        # A healthy reactor handles the last wake-up within one poll (10 ms); a stuck one never does.
        wait_until(lambda: waker.awake is False, 5, "the reactor's waker to be idle (stuck: every request "
                   "now waits for the 10 ms poll timeout)")
