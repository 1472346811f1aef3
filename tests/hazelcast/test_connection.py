"""Configuration errors before any I/O, and an unreachable cluster -> BackendUnavailable within timeout."""

from __future__ import annotations

import time

import pytest
from lockapi_hazelcast import CPBackend, MapBackend

import lockapi
from lockapi.errors import BackendUnavailable, ConfigError
from lockapi.plugins import backend_class
from lockapi.spi import Capability
from tests.servers.common import free_port
from tests.servers.hazelcast import HazelcastCluster


@pytest.mark.parametrize(("url", "cls"), [
    ("hazelcast://127.0.0.1:1", MapBackend),
    ("hazelcast://127.0.0.1:1?mode=map", MapBackend),
    ("hazelcast+cp://127.0.0.1:1", CPBackend),
    ("hazelcast://127.0.0.1:1?mode=cp", CPBackend),  # URLs written before the modes were two plugins
    ("hazelcast+cp://127.0.0.1:1?mode=cp", CPBackend),
])
def test_scheme_or_mode_selects_the_backend_class(url: str, cls: type) -> None:
    with lockapi.connect(url) as mgr:  # no I/O until first use
        assert type(mgr.backend) is cls


def test_each_mode_declares_its_capabilities_on_its_class() -> None:
    assert backend_class("hazelcast") is MapBackend and backend_class("hazelcast+cp") is CPBackend
    assert {Capability.FAIR, Capability.PUSH_WAKEUP, Capability.BACKEND_EXPIRY} <= MapBackend.capabilities
    assert Capability.BACKEND_EXPIRY not in CPBackend.capabilities
    assert MapBackend.description and CPBackend.description


@pytest.mark.parametrize(("url", "options"), [
    ("hazelcast://127.0.0.1:1", {"mode": "ap"}), ("hazelcast://127.0.0.1:1", {"colour": "red"}),
    ("hazelcast://127.0.0.1:1", {"prefix": "a/b"}), ("hazelcast://127.0.0.1:1", {"prefix": " a"}),
    ("hazelcast://127.0.0.1:1", {"members": "host:notaport"}), ("hazelcast+cp://127.0.0.1:1", {"mode": "map"}),
])
def test_bad_options_fail_before_io(url: str, options: dict[str, object]) -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError):
        lockapi.connect(url, **options)
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("mode", ["map", "cp"])
def test_unreachable_cluster_is_unavailable_within_timeout(mode: str) -> None:
    port = free_port()  # nothing listens there
    with lockapi.connect(f"hazelcast://app:hunter2@127.0.0.1:{port}?mode={mode}", timeout=2) as mgr:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as caught:
            mgr.try_acquire("unreachable")
        elapsed = time.monotonic() - started
    assert elapsed < 2 + 2.5, f"BackendUnavailable after {elapsed:.1f}s with timeout=2"
    assert "hunter2" not in str(caught.value)


def test_prefix_separates_applications(hazelcast_member: HazelcastCluster) -> None:
    url = hazelcast_member.url("map")
    with lockapi.connect(url, prefix="app-a") as a, lockapi.connect(url, prefix="app-b") as b:
        lease = a.acquire("shared-name", ttl=30)
        other = b.try_acquire("shared-name", ttl=30)
        assert other is not None, "different prefixes must not share locks"
        assert a.try_acquire("shared-name") is None
        other.release()
        lease.release()
