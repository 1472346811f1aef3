"""Map mode: what an attempt on a held name costs (one round trip of reads, no write)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import lockapi
from tests.servers.hazelcast import HazelcastCluster


def test_an_attempt_on_a_held_name_writes_nothing(hazelcast_member: HazelcastCluster,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"held:{uuid.uuid4().hex}"
    with lockapi.connect(hazelcast_member.url("map")) as holder, lockapi.connect(hazelcast_member.url("map")) as mgr:
        lease = holder.acquire(name, ttl=30)
        maps = mgr.backend._holder.session().maps  # type: ignore[attr-defined]
        writes: list[str] = []
        for target in (maps["locks"], maps["fences"]):
            for method in ("put_if_absent", "replace_if_same", "remove_if_same", "put", "set"):
                real = getattr(target, method)

                def spy(*args: Any, _real: Any = real, _method: str = method, **kwargs: Any) -> Any:
                    writes.append(_method)
                    return _real(*args, **kwargs)

                monkeypatch.setattr(target, method, spy)
        assert mgr.try_acquire(name, ttl=30) is None
        assert writes == [], f"a refused attempt wrote: {writes}"
        info = mgr.inspect(name)
        assert info is not None and info.ttl_remaining > 25
        monkeypatch.undo()
        assert lease.release() is True


def test_a_name_this_process_took_last_is_taken_without_reading_the_counter(
        hazelcast_member: HazelcastCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once this backend confirmed a name's token, its next acquire proposes from that (fences.KnownCounters):
    a cycle is put_if_absent, the counter's compare-and-set and the release, three invocations (five when
    the counter and the entry are read first, as on the first cycle). The tokens still go up by one."""
    name = f"warm:{uuid.uuid4().hex}"
    with lockapi.connect(hazelcast_member.url("map")) as mgr:
        first = mgr.acquire(name, ttl=30)
        assert first.release() is True
        maps = mgr.backend._holder.session().maps  # type: ignore[attr-defined]
        sent: list[str] = []
        for kind in ("locks", "fences"):
            for method in ("get", "get_entry_view", "put_if_absent", "replace_if_same", "remove_if_same"):
                real = getattr(maps[kind], method)

                def spy(*args: Any, _real: Any = real, _call: str = f"{kind}.{method}", **kwargs: Any) -> Any:
                    sent.append(_call)
                    return _real(*args, **kwargs)

                monkeypatch.setattr(maps[kind], method, spy)
        second = mgr.acquire(name, ttl=30)
        assert second.release() is True
        assert sent == ["locks.put_if_absent", "fences.replace_if_same", "locks.remove_if_same"], sent
        assert second.token == first.token + 1
