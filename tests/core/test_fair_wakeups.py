"""Fair hand-off wakes the head of the queue only: the Watchers routing, the in-memory backend, and
the core's waiting policy (a fair waiter on a push backend listens to the backend alone)."""

from __future__ import annotations

import threading
import uuid

import lockapi
from lockapi.spi import Watchers
from tests.servers.common import wait_until


def test_watchers_route_a_wake_up_to_its_holder_and_to_plain_watchers() -> None:
    watchers: Watchers[str] = Watchers()
    calls: list[str] = []
    with watchers.register("k", lambda: calls.append("a"), "a"), \
            watchers.register("k", lambda: calls.append("b"), "b"), \
            watchers.register("k", lambda: calls.append("plain")):
        watchers.wake("k", "b")
        assert sorted(calls) == ["b", "plain"]
        calls.clear()
        watchers.wake("k")
        assert sorted(calls) == ["a", "b", "plain"]
    calls.clear()
    watchers.wake("k")
    assert calls == []


def test_memory_release_wakes_the_first_live_waiter_only() -> None:
    url = f"memory://{uuid.uuid4().hex}"
    with lockapi.connect(url) as mgr:
        backend = mgr.backend
        token = backend.try_acquire("n", "holder", 30).token
        assert token is not None
        assert backend.try_acquire("n", "gone", 30, queue_ttl=1e-9).token is None  # already expired
        for w in ("w1", "w2"):
            assert backend.try_acquire("n", w, 30, queue_ttl=60).token is None
        woken = {w: threading.Event() for w in ("gone", "w1", "w2")}
        with backend.watch("n", woken["gone"].set, holder="gone"), \
                backend.watch("n", woken["w1"].set, holder="w1"), \
                backend.watch("n", woken["w2"].set, holder="w2"):
            assert backend.release("n", "holder", token)  # the in-memory backend wakes synchronously
        assert [w for w, e in woken.items() if e.is_set()] == ["w1"]


def test_fair_waiters_on_a_push_backend_skip_the_in_process_bus() -> None:
    url = f"memory://{uuid.uuid4().hex}"
    with lockapi.connect(url) as mgr:
        lease = mgr.acquire("n", ttl=30)
        granted: list[int] = []

        def fair_waiter() -> None:
            with mgr.acquire("n", wait=30, fair=True) as got:
                granted.append(got.token)

        threads = [threading.Thread(target=fair_waiter) for _ in range(2)]
        for t in threads:
            t.start()
        store = mgr.backend._s  # type: ignore[attr-defined]
        wait_until(lambda: len(store.queues.get("n", ())) == 2, 10, "both fair waiters to queue")
        assert (False, "n") not in mgr._bus._wakes, "a fair waiter registered on the in-process bus"
        plain = threading.Thread(target=lambda: mgr.acquire("n", wait=30).release())
        plain.start()
        wait_until(lambda: (False, "n") in mgr._bus._wakes, 10, "the plain waiter to register on the bus")
        lease.release()
        for t in threads:
            t.join(30)
        plain.join(30)
        assert len(granted) == 2 and granted[0] < granted[1]
