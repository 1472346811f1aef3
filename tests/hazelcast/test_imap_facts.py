"""What map mode's design relies on, checked on the real member with the raw client (so a Hazelcast
release that changes any of it fails here first): see lockapi_hazelcast/extension.py."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import hazelcast
import pytest

from tests.servers.hazelcast import HazelcastCluster

FOREVER_MS = 2**63 - 1


@pytest.fixture
def two_clients(hazelcast_member: HazelcastCluster) -> Iterator[tuple[Any, Any]]:
    def connect() -> Any:
        return hazelcast.HazelcastClient(cluster_name=hazelcast_member.cluster_name,
                                         cluster_members=hazelcast_member.addresses.split(","),
                                         cluster_connect_timeout=30, statistics_enabled=False)

    a, b = connect(), connect()
    try:
        name = f"facts-{uuid.uuid4().hex[:8]}"
        yield a.get_map(name).blocking(), b.get_map(name).blocking()
    finally:
        a.shutdown()
        b.shutdown()


def test_replace_and_replace_if_same_drop_the_entry_ttl(two_clients: tuple[Any, Any]) -> None:
    entries, _ = two_clients
    for replace in (lambda: entries.replace("k", "v2"), lambda: entries.replace_if_same("k", "v", "v2")):
        entries.put("k", "v", 60)
        replace()
        assert entries.get_entry_view("k").ttl == FOREVER_MS


def test_set_ttl_and_put_apply_to_whatever_entry_is_there(two_clients: tuple[Any, Any]) -> None:
    """Both are unconditional: a late one lands on a successor's entry (set_ttl may shorten it)."""
    entries, _ = two_clients
    entries.put("k", "successor", 60)
    entries.set_ttl("k", 5)
    assert entries.get_entry_view("k").ttl == 5000
    entries.put("k", "late", 30)
    assert entries.get("k") == "late"


def test_writes_wait_for_another_clients_key_lock_and_reads_do_not(two_clients: tuple[Any, Any]) -> None:
    """Extension takes the entry out under the key lock: competitors' put_if_absent (and the settle
    barrier remove_if_same) must wait for it; get/get_entry_view answer at once."""
    mine, theirs = two_clients
    mine.put("k", "lease", 60)
    mine.lock("k", lease_time=30)
    assert mine.remove_if_same("k", "lease") is True  # the owner is not blocked
    assert theirs.get("k") is None and theirs.get_entry_view("k") is None and theirs.is_locked("k")
    answered: dict[str, Any] = {}
    started = threading.Event()

    def compete() -> None:
        started.set()
        answered["put_if_absent"] = theirs.put_if_absent("k", "competitor", 60)
        answered["barrier"] = theirs.remove_if_same("k", "")

    thread = threading.Thread(target=compete)
    thread.start()
    assert started.wait(10)
    thread.join(0.5)
    assert thread.is_alive() and not answered, "a write did not wait for the key lock"
    assert mine.put_if_absent("k", "lease", 60) is None
    mine.unlock("k")
    thread.join(30)
    assert answered == {"put_if_absent": "lease", "barrier": False}
    assert theirs.get("k") == "lease"
