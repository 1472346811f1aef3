"""Push wake-ups (map mode): a release in one process wakes a ``watch`` in another through the
backend's entry listener, without any polling, and an expiry wakes it too."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import lockapi
from lockapi.spi import Capability
from tests.children import CHILDREN
from tests.servers.hazelcast import HazelcastCluster


def watch_and_report(url: str, name: str, ready: Any, out: str) -> None:
    """Child process: watch ``name`` through the SPI only; write the monotonic ns of the wake-up."""
    woken = threading.Event()
    with lockapi.connect(url) as mgr, mgr.backend.watch(name, woken.set):
        ready.set()
        if woken.wait(60):
            Path(out).write_text(str(time.monotonic_ns()))


def test_release_wakes_a_watch_in_another_process(hazelcast_member: HazelcastCluster, tmp_path: Path) -> None:
    url = hazelcast_member.url("map")
    name = f"wake:{uuid.uuid4().hex}"
    out = tmp_path / "woken.txt"
    ctx = CHILDREN
    ready = ctx.Event()
    with lockapi.connect(url) as mgr:
        assert Capability.PUSH_WAKEUP in mgr.capabilities
        lease = mgr.acquire(name, ttl=120)
        child = ctx.Process(target=watch_and_report, args=(url, name, ready, str(out)))
        child.start()
        try:
            assert ready.wait(120), "child did not start watching"
            released = time.monotonic_ns()
            assert lease.release() is True
            child.join(90)
        finally:
            if child.is_alive():
                child.kill()
    assert child.exitcode == 0
    assert out.exists(), "the watch was never woken"
    delay = (int(out.read_text()) - released) / 1e9
    assert delay < 1.5, f"wake-up took {delay:.3f}s"


def test_expiry_wakes_a_watch(hazelcast_member: HazelcastCluster) -> None:
    url = hazelcast_member.url("map")
    name = f"wake:{uuid.uuid4().hex}"
    woken = threading.Event()
    with lockapi.connect(url) as holder, lockapi.connect(url) as waiter:
        holder.acquire(name, ttl=1)
        with waiter.backend.watch(name, woken.set):
            # Entry ttl 1 s (+1 s resolution slack); members sweep expired entries every second here.
            assert woken.wait(15), "no expiry event"
        assert waiter.try_acquire(name) is not None
