"""The two lease features scheduled work is built on: auto-renewal capped by ``at_most``, and
``release(keep=...)`` that leaves the name held until the backend expires it."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import lockapi
from lockapi import InvalidArgument, LockManager


def test_release_with_keep_leaves_the_name_held_until_it_expires(manager: LockManager, lock_name: str) -> None:
    lease = manager.acquire(lock_name, ttl=30, auto_renew=True)
    assert lease.release(keep=0.8) is True
    assert manager.try_acquire(lock_name) is None, "keep did not hold the name"
    assert lease.release() is False and lease.extend() is False, "the holder is done with it"
    assert not lease.lost
    deadline = time.monotonic() + 30
    while (successor := manager.try_acquire(lock_name, ttl=30)) is None:
        assert time.monotonic() < deadline, "the kept lease never expired"
        time.sleep(0.02)
    assert successor.token > lease.token
    successor.release()


def test_at_most_caps_auto_renewal(manager: LockManager, lock_name: str) -> None:
    lost = threading.Event()
    lease = manager.acquire(lock_name, ttl=0.5, auto_renew=True, at_most=1.2, on_lost=lambda _: lost.set())
    assert lease.renewal_cap is not None
    time.sleep(0.9)
    assert lease.is_held(), "renewed past its ttl"
    assert lost.wait(30) and lease.lost and "at_most" in (lease.lost_reason or "")
    assert time.monotonic() >= lease.renewal_cap
    deadline = time.monotonic() + 30
    while manager.inspect(lock_name) is not None:
        assert time.monotonic() < deadline, "renewed past at_most"
        time.sleep(0.02)


@pytest.mark.parametrize("kwargs", [
    {"ttl": 10, "at_most": 5, "auto_renew": True},
    {"ttl": 10, "at_most": 20},
    {"ttl": 10, "at_most": -1, "auto_renew": True},
])
def test_bad_at_most_is_rejected_before_io(manager: LockManager, lock_name: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        manager.acquire(lock_name, **kwargs)
    assert manager.inspect(lock_name) is None


def test_bad_keep_is_rejected_and_the_lease_stays_held(manager: LockManager, lock_name: str) -> None:
    lease = manager.acquire(lock_name, ttl=30)
    for bad in (0, -1, float("nan")):
        with pytest.raises(InvalidArgument):
            lease.release(keep=bad)
    assert lease.is_held()
    assert lease.release()


def test_events_for_release_with_keep(manager: LockManager, lock_name: str) -> None:
    seen: list[lockapi.Event] = []
    manager.add_listener(seen.append)
    manager.acquire(lock_name, ttl=30).release(keep=5)
    assert [(e.op, e.outcome) for e in seen] == [("acquire", True), ("release", True)]
