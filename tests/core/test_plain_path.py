"""The plain ``try_acquire`` + ``release`` (no fair/auto_renew/on_lost/at_most, no observer installed) runs
a shorter path than the generic one: it keeps every guarantee of the generic path."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import lockapi
from lockapi.manager import _HolderIds
from tests.core.recording import OutcomeRecorder
from tests.servers.redis import RedisServer, redis_server


def _records(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "lockapi_event", None) == event]


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[tuple[lockapi.LockManager, Path]]:
    path = tmp_path / "locks.db"
    with lockapi.connect(f"sqlite:///{path}") as mgr:
        yield mgr, path


@pytest.mark.parametrize(("name", "ttl", "error"), [
    ("", 30.0, lockapi.InvalidName),
    (b"bytes", 30.0, lockapi.InvalidNameType),
    ("x\x00y", 30.0, lockapi.InvalidName),
    ("x", 0.0, lockapi.InvalidArgument),
    ("x", float("nan"), lockapi.InvalidArgument),
    ("x", True, lockapi.InvalidArgumentType),
    ("", True, lockapi.InvalidArgumentType),  # the ttl is checked first, as on the generic path
])
def test_bad_input_is_rejected_before_any_io(sqlite: tuple[lockapi.LockManager, Path], name: object, ttl: object,
                                             error: type[Exception]) -> None:
    mgr, path = sqlite
    with pytest.raises(error):
        mgr.try_acquire(name, ttl=ttl)  # type: ignore[arg-type]
    assert not path.exists()  # the tables are created on the first call that reaches the database


def test_listeners_see_every_plain_decision_and_release(sqlite: tuple[lockapi.LockManager, Path]) -> None:
    mgr, _ = sqlite
    seen: list[lockapi.Event] = []
    listen = seen.append  # one bound method: removal is by identity
    mgr.add_listener(listen)
    lease = mgr.try_acquire("plain", ttl=30)
    assert lease is not None
    assert mgr.try_acquire("plain", ttl=30) is None
    assert lease.release()
    assert not lease.release()  # already released: no backend call, no event
    mgr.remove_listener(listen)
    again = mgr.try_acquire("plain", ttl=30)
    assert again is not None and again.release()
    assert [(e.op, e.result, e.outcome) for e in seen] == [
        ("try_acquire", "granted", True), ("try_acquire", "denied", False), ("release", "released", True)]
    assert seen[0].token == seen[2].token == lease.token
    assert seen[1].token is None and all(e.seconds >= 0 and e.error is None for e in seen)
    assert again.token > lease.token  # tokens only go up


def test_a_lease_lost_on_the_plain_path_is_found_out(sqlite: tuple[lockapi.LockManager, Path]) -> None:
    mgr, _ = sqlite
    lease = mgr.try_acquire("taken", ttl=30)
    assert lease is not None
    assert mgr.backend.force_release("taken")  # as if it had expired
    other = mgr.try_acquire("taken", ttl=30)
    assert other is not None and other.token > lease.token
    with pytest.raises(lockapi.LeaseLost), lease:
        pass
    assert lease.lost and lease.lost_reason is not None and "no longer knew it" in lease.lost_reason
    assert other.release() and not other.lost


def test_an_observer_installed_on_a_manager_sees_what_the_plain_path_skips(
        sqlite: tuple[lockapi.LockManager, Path]) -> None:
    mgr, _ = sqlite
    before = mgr.try_acquire("seen", ttl=30)  # granted before the observer came: its end is not reported
    recorder = OutcomeRecorder()
    mgr.add_observer(recorder)
    lease = mgr.try_acquire("seen:2", ttl=30)
    assert lease is not None and before is not None
    assert lease.release() and before.release()
    mgr.remove_observer(recorder)
    assert recorder.ops == [("try_acquire", "granted"), ("release", "released"), ("release", "released")]
    assert recorder.ends == ["released"]


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A server of this test's own: it gets stopped."""
    with redis_server() as server:
        yield server


def test_an_outage_on_the_plain_path_is_raised_logged_once_and_its_end_logged(
        own_redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[lockapi.Event] = []
    listen = seen.append
    with lockapi.connect(own_redis.url, timeout=2) as mgr, caplog.at_level(logging.DEBUG, logger="lockapi"):
        lease = mgr.try_acquire("outage", ttl=30)
        assert lease is not None
        own_redis.stop()
        for _ in range(2):
            with pytest.raises(lockapi.BackendUnavailable):
                mgr.try_acquire("outage:2", ttl=30)
        own_redis.start()
        mgr.add_listener(listen)
        after = mgr.try_acquire("outage:3", ttl=30)
        mgr.remove_listener(listen)
        assert after is not None and after.release()
        assert not lease.release()  # the restarted server (no persistence) forgot it: found out
        assert lease.lost
    assert [r.levelno for r in _records(caplog, "backend_unavailable")] == [logging.WARNING, logging.DEBUG]
    assert [r.levelno for r in _records(caplog, "backend_reachable")] == [logging.INFO]
    assert [(e.op, e.result) for e in seen] == [("try_acquire", "granted")]
    assert [r.lockapi_cause for r in _records(caplog, "lease_lost")] == ["expired"]  # type: ignore[attr-defined]


def test_holder_ids_count_up_in_one_thread_and_never_repeat_across_refills() -> None:
    ids = _HolderIds()
    drawn = [ids() for _ in range(2 * _HolderIds.BATCH + 3)]
    assert [int(i.rsplit(":", 1)[1], 16) for i in drawn] == list(range(1, len(drawn) + 1))
    refilled: list[list[str]] = [[] for _ in range(4)]
    start = threading.Barrier(4)

    def refill(out: list[str]) -> None:
        start.wait()
        out.extend(ids._refill())  # threads refilling at once: each batch has its own counters

    threads = [threading.Thread(target=refill, args=(out,)) for out in refilled]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = drawn + [i for out in refilled for i in out]
    assert len(set(every)) == len(every) == len(drawn) + 4 * _HolderIds.BATCH
