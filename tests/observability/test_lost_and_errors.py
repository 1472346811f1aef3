"""Lost leases by cause, renewals, backend errors: metrics, span status and the log lines, on real backends."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

import lockapi
from lockapi.observability.install import Instrumentation
from tests.observability.conftest import Otel
from tests.servers.redis import RedisServer, redis_server

PASSWORD = "s3cret-Pa55word"


def _records(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "lockapi_event", None) == event]


def test_a_lease_that_expired_before_its_release_is_counted_lost_expired(
        otel: Otel, instrumented: Instrumentation, prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    name = f"{prefix}:1"
    with lockapi.connect(f"memory://{prefix}", clock=lambda: now[0]) as mgr, caplog.at_level(logging.INFO):
        lease = mgr.acquire(name, ttl=1)
        now[0] += 2  # the backend's clock: the lease expired, another holder takes the name
        successor = mgr.acquire(name, ttl=10)
        assert not lease.release()
        assert successor.release()
    assert otel.value("lockapi.lease.lost", family=prefix, cause="expired", kind="lock") == 1
    assert otel.count("lockapi.lock.hold.duration", family=prefix, end="lost") == 1
    assert otel.count("lockapi.lock.hold.duration", family=prefix, end="released") == 1
    assert otel.value("lockapi.lock.held", family=prefix) == 0
    assert otel.value("lockapi.lease.operations", family=prefix, op="release", outcome="not_held") == 1
    [line] = _records(caplog, "lease_lost")
    assert line.name == "lockapi.lease" and line.levelno == logging.WARNING
    assert (line.lockapi_name, line.lockapi_token, line.lockapi_cause, line.lockapi_backend) == (  # type: ignore[attr-defined]
        name, lease.token, "expired", "memory")


def test_a_refused_auto_renewal_is_counted_lost_renew_failed(otel: Otel, instrumented: Instrumentation,
                                                             prefix: str) -> None:
    lost = threading.Event()
    name = f"{prefix}:renewed"
    with lockapi.connect(f"memory://{prefix}") as mgr:
        lease = mgr.acquire(name, ttl=0.3, auto_renew=True, on_lost=lambda _: lost.set())
        mgr.backend.force_release(name)
        other = mgr.acquire(name, ttl=30)
        assert lost.wait(10)
        assert lease.lost and other.release()
    assert otel.value("lockapi.lease.lost", family=prefix, cause="renew_failed") == 1
    assert otel.value("lockapi.lease.renewals", family=prefix, outcome="not_held") == 1
    assert otel.value("lockapi.lock.held", family=prefix) == 0
    assert [s.attributes["lockapi.outcome"] for s in otel.spans("lockapi.renew")][-1] == "not_held"


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A password-protected server of this test's own: it gets stopped."""
    with redis_server(password=PASSWORD) as server:
        yield server


def test_a_backend_outage_is_logged_once_counted_and_the_lease_lost_backend_error(
        otel: Otel, instrumented: Instrumentation, own_redis: RedisServer, prefix: str,
        caplog: pytest.LogCaptureFixture) -> None:
    lost = threading.Event()
    with lockapi.connect(own_redis.url, timeout=2) as mgr, caplog.at_level(logging.DEBUG, logger="lockapi"):
        lease = mgr.acquire(f"{prefix}:1", ttl=1.0, auto_renew=True, on_lost=lambda _: lost.set())
        own_redis.stop()
        assert lost.wait(15)
        with pytest.raises(lockapi.BackendUnavailable):
            mgr.acquire(f"{prefix}:2", ttl=10)
        own_redis.start()
        mgr.acquire(f"{prefix}:3", ttl=10).release()
        assert lease.lost
    assert otel.value("lockapi.lease.lost", family=prefix, cause="backend_error", backend="redis") == 1
    assert otel.value("lockapi.lease.renewals", family=prefix, outcome="error") >= 1
    assert otel.value("lockapi.backend.errors", family=prefix, op="renew", error_type="BackendUnavailable") >= 1
    assert otel.value("lockapi.lock.attempts", family=prefix, op="acquire", outcome="error") == 1
    assert otel.value("lockapi.backend.errors", family=prefix, op="acquire", error_type="BackendUnavailable") == 1
    [failed] = [s for s in otel.spans("lockapi.acquire") if s.attributes["lockapi.outcome"] == "error"]
    assert failed.status.status_code.name == "ERROR" and failed.status.description == "BackendUnavailable"
    assert any(e.name == "exception" for e in failed.events)

    down = _records(caplog, "backend_unavailable")
    assert [r.levelno for r in down].count(logging.WARNING) == 1  # the transition, then DEBUG lines
    assert down[0].name == "lockapi.reporting" and down[0].lockapi_backend == "redis"  # type: ignore[attr-defined]
    assert [r.levelno for r in _records(caplog, "backend_reachable")] == [logging.INFO]
    assert [r.lockapi_cause for r in _records(caplog, "lease_lost")] == ["backend_error"]  # type: ignore[attr-defined]
    for record in caplog.records:
        text = record.getMessage() + " ".join(str(v) for v in vars(record).values())
        assert PASSWORD not in text, record.getMessage()
