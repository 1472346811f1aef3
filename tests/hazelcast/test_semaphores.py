"""Map-mode semaphores: the permit count is bounded before any I/O, and an attempt's cost does not grow
with ``permits`` unless the semaphore is (nearly) full (issue #13 item 8)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from lockapi_hazelcast import MapBackend

import lockapi
from lockapi.errors import InvalidArgument
from tests.servers.hazelcast import HazelcastCluster


def test_more_permits_than_map_mode_allows_is_invalid_before_any_io() -> None:
    assert MapBackend.max_permits == 1024
    with lockapi.connect("hazelcast://127.0.0.1:1", timeout=30) as mgr:  # nothing listens there
        started = time.monotonic()
        for permits in (1025, 2**20, 2**31 - 1):
            with pytest.raises(InvalidArgument, match="at most 1024 permits"):
                mgr.semaphore("big", permits)
        assert time.monotonic() - started < 1.0, "a connection was attempted"
        assert mgr.semaphore("big", 1024) is not None


def test_an_attempt_on_a_large_semaphore_reads_a_few_slots(hazelcast_member: HazelcastCluster,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    with lockapi.connect(hazelcast_member.url("map")) as mgr:
        backend = mgr.backend
        assert isinstance(backend, MapBackend)
        permits_map = backend._holder.session().maps["permits"]
        read: list[int] = []
        real_get_all = permits_map.get_all

        def counting_get_all(keys: Any) -> Any:
            read.append(len(keys))
            return real_get_all(keys)

        monkeypatch.setattr(permits_map, "get_all", counting_get_all)
        permit = mgr.semaphore(f"large:{uuid.uuid4().hex}", 1024).acquire(ttl=30)
        assert permit.release() is True
    assert read and max(read) <= 16, f"keys read per attempt: {read}"


def test_a_nearly_full_semaphore_grants_its_last_permit_and_then_refuses(hazelcast_member: HazelcastCluster
                                                                          ) -> None:
    """With 40 permits (more than the 16-slot window), the 40th permit is found wherever its slot is."""
    name = f"full:{uuid.uuid4().hex}"
    with lockapi.connect(hazelcast_member.url("map")) as mgr, lockapi.connect(hazelcast_member.url("map")) as other:
        held = [mgr.semaphore(name, 40).acquire(ttl=60, wait=0) for _ in range(39)]
        last = other.semaphore(name, 40).try_acquire(ttl=60)
        assert last is not None, "the last free permit was not found"
        assert other.semaphore(name, 40).try_acquire(ttl=60) is None, "more than 40 live permits"
        tokens = [permit.token for permit in [*held, last]]
        assert len(set(tokens)) == 40 and tokens == sorted(tokens)
        for permit in [*held, last]:
            assert permit.release() is True
