"""CP mode against the 3-member 5.4.0 CP cluster: names the CP subsystem would merge, and a release the
cluster does not answer (issue #13 items 3 and 4)."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from lockapi_hazelcast import CPBackend

import lockapi
from lockapi.errors import BackendUnavailable
from tests.children import CHILDREN
from tests.reliability.targets import freeze, thaw
from tests.servers.common import wait_until
from tests.servers.hazelcast import HazelcastCluster

# Every character the CP subsystem strips from the ends of a name (Python whitespace on the client,
# Java's trim() of U+0000..U+0020 on the members), alone and around a visible name.
STRIPPED = [" ", "\n", "\t", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\x01", "\x85", "\xa0", "\u2028",
            "\u3000", "  "]


def test_names_that_differ_only_in_surrounding_whitespace_are_distinct_locks(cp_cluster: HazelcastCluster
                                                                             ) -> None:
    base = f"ws-{uuid.uuid4().hex[:8]}"
    names = [base, *STRIPPED, *(base + ws for ws in STRIPPED), *(ws + base for ws in STRIPPED)]
    with lockapi.connect(cp_cluster.url("cp")) as mgr, lockapi.connect(cp_cluster.url("cp")) as other:
        leases = [mgr.acquire(name, ttl=60, wait=0) for name in names[:1]]
        try:
            for name in names[1:]:
                lease = other.try_acquire(name, ttl=60)
                assert lease is not None, f"{name!r} is the same CP lock as one taken before it"
                leases.append(lease)
        finally:
            for lease in leases:
                lease.release()


def test_names_without_trailing_whitespace_keep_their_cp_objects() -> None:
    """Data compatibility: only names ending in whitespace (which the CP subsystem merged with others)
    map to new objects; everything else keeps the object it had."""
    with lockapi.connect("hazelcast+cp://127.0.0.1:1?prefix=app") as mgr:  # no I/O
        backend = mgr.backend
        assert isinstance(backend, CPBackend)
        assert backend._object("invoice 42") == "app/invoice 42"
        assert backend._object(" lead") == "app/ lead"
        assert backend._object("a@b%c") == "app/a%40b%25c"
        assert backend._object("job", "#3") == "app/job#3"
        assert backend._object("x ") == "app/x%20"
        assert backend._object(" ") == "app/%20"
        assert backend._object("\u3000") == "app/%E3%80%80"
        assert backend._object("x%20") == "app/x%2520"


def test_a_release_the_cluster_does_not_answer_can_be_retried(cp_cluster: HazelcastCluster) -> None:
    """Issue #13 item 4: with every member frozen, release() raises BackendUnavailable (one line)
    within timeout and the lease stays releasable; once the cluster answers again, the retry returns
    True and the FencedLock is free for another process."""
    name = f"cp-release:{uuid.uuid4().hex}"
    with lockapi.connect(cp_cluster.url("cp"), timeout=2) as mgr, \
            lockapi.connect(cp_cluster.url("cp"), timeout=10) as other:
        lease = mgr.acquire(name, ttl=60)
        for member in cp_cluster.members:
            freeze(member)
        try:
            with pytest.raises(BackendUnavailable) as caught:
                lease.release()
        finally:
            for member in cp_cluster.members:
                thaw(member)
        assert "\n" not in str(caught.value), str(caught.value)
        wait_until(lambda: other.inspect(f"probe:{uuid.uuid4().hex}") is None, 60, "the CP cluster to answer")
        assert lease.release() is True, "the retried release did not give the lock back"
        successor = other.acquire(name, ttl=30, wait=15)
        assert successor.token > lease.token
        assert successor.release() is True


def hold_then_release(url: str, name: str, acquired: Any, go: Any, out: str) -> None:
    """Child process: take ``name``, wait for ``go``, then report what extend() and release() say."""
    with lockapi.connect(url, timeout=10) as mgr:
        lease = mgr.acquire(name, ttl=120)
        acquired.set()
        go.wait(120)
        try:
            result = f"extend={lease.extend(120)} release={lease.release()}"
        except Exception as exc:
            result = f"raised {exc!r}"
        Path(out).write_text(result)


def test_release_after_the_cp_session_expired_returns_false(cp_cluster: HazelcastCluster, tmp_path: Path
                                                            ) -> None:
    """A holder process is stopped until its CP session expires (the cluster frees the lock: another
    process gets it). Resumed, its extend() and release() return False: they never raise."""
    url, name, out = cp_cluster.url("cp"), f"cp-lost:{uuid.uuid4().hex}", tmp_path / "result.txt"
    ctx = CHILDREN
    acquired, go = ctx.Event(), ctx.Event()
    child = ctx.Process(target=hold_then_release, args=(url, name, acquired, go, str(out)))
    child.start()
    try:
        assert acquired.wait(120), "the child did not acquire"
        os.kill(child.pid, signal.SIGSTOP)
        try:
            with lockapi.connect(url, timeout=10) as other:
                successor = other.acquire(name, ttl=30, wait=90)  # granted once the session expired
                assert successor.release() is True
        finally:
            os.kill(child.pid, signal.SIGCONT)
        go.set()  # only now: setting a multiprocessing Event waits for its (stopped) waiter to wake
        child.join(120)
        assert out.read_text() == "extend=False release=False"
    finally:
        if child.is_alive():
            child.kill()
