"""Configuration errors before any I/O, and an unreachable cluster -> BackendUnavailable within timeout."""

from __future__ import annotations

import time

import pytest
from lockapi_hazelcast import CPBackend, HazelcastBackend, MapBackend

import lockapi
from lockapi.errors import BackendUnavailable, ConfigError, UnsupportedFeature
from lockapi.spi import BackendConfig, Options
from tests.servers.common import free_port
from tests.servers.hazelcast import HazelcastCluster


def _backend(url: str, timeout: float = 5.0, **options: object) -> HazelcastBackend:
    return HazelcastBackend(BackendConfig(url=url, scheme="hazelcast", options=Options(options),
                                          timeout=timeout))


def test_mode_selects_the_backend_class() -> None:
    map_backend = _backend("hazelcast://127.0.0.1:1")
    cp_backend = _backend("hazelcast://127.0.0.1:1", mode="cp")
    assert isinstance(map_backend, MapBackend) and isinstance(cp_backend, CPBackend)
    map_backend.close()
    cp_backend.close()


@pytest.mark.parametrize("options", [{"mode": "ap"}, {"colour": "red"}, {"prefix": "a/b"},
                                     {"members": "host:notaport"}])
def test_bad_options_fail_before_io(options: dict[str, object]) -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError):
        _backend("hazelcast://127.0.0.1:1", **options)
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


def test_cp_mode_on_a_cluster_without_cp_is_unsupported(hazelcast_member: HazelcastCluster) -> None:
    with lockapi.connect(hazelcast_member.url("cp")) as mgr, pytest.raises(UnsupportedFeature):
        mgr.try_acquire("needs-cp")


def test_prefix_separates_applications(hazelcast_member: HazelcastCluster) -> None:
    url = hazelcast_member.url("map")
    with lockapi.connect(url, prefix="app-a") as a, lockapi.connect(url, prefix="app-b") as b:
        lease = a.acquire("shared-name", ttl=30)
        other = b.try_acquire("shared-name", ttl=30)
        assert other is not None, "different prefixes must not share locks"
        assert a.try_acquire("shared-name") is None
        other.release()
        lease.release()
