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
