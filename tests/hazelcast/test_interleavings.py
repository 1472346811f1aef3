"""Map mode, one holder stopped between two round trips (lockapi.testing.pauses) while another proceeds:
the interleavings behind issue #13's Hazelcast bugs, beyond what the conformance walk asserts. The
stopped holder speaks the sync API or lockapi.aio (AsyncMapBackend, through the blocking view), whose
extension's key lock belongs to an asyncio task instead of a thread."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import lockapi
from lockapi import Lease
from lockapi.testing.blocking import blocking_manager
from lockapi.testing.pauses import pause_at
from tests.servers.hazelcast import HazelcastCluster

TIMEOUT = 2.0


class Paused(threading.Thread):
    """Runs ``fn`` in a thread; ``outcome()`` is its result, or raises what it raised."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self._fn = fn
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:
            self.error = exc

    def outcome(self) -> Any:
        self.join(60)
        assert not self.is_alive()
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture(params=["sync", "async"])
def connect(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """How the stopped holder A connects: ``lockapi.connect`` or lockapi.aio behind the blocking view."""
    return lockapi.connect if request.param == "sync" else blocking_manager


@pytest.fixture
def managers(hazelcast_member: HazelcastCluster, connect: Callable[..., Any]
             ) -> Iterator[tuple[lockapi.LockManager, lockapi.LockManager]]:
    url = hazelcast_member.url("map")
    with connect(url, timeout=TIMEOUT) as a, lockapi.connect(url, timeout=TIMEOUT) as b:
        yield a, b


@pytest.mark.parametrize("point", ["extend:key-locked", "extend:removed"])
def test_extend_stopped_past_its_ttl_never_takes_the_successors_lease(
        managers: tuple[lockapi.LockManager, lockapi.LockManager], point: str) -> None:
    """Issue #13 item 1: A stops inside extend() past its ttl, B is granted. When A resumes, its extend
    returns False (it does not raise a Java stack trace), A is not the holder, B holds with its full ttl
    and can release, and a second A.extend() is False too."""
    a_mgr, b_mgr = managers
    name = f"extend:{uuid.uuid4().hex}"
    a = a_mgr.acquire(name, ttl=1)
    run = Paused(lambda: a.extend(30))
    with pause_at(point, thread=run) as pause:
        run.start()
        pause.wait_reached(30)
        b = b_mgr.acquire(name, ttl=30, wait=15)
    assert run.outcome() is False, "A's extension landed over B's lease"
    assert b.token > a.token and a.lost
    info = b_mgr.inspect(name)
    assert info is not None and (info.holder, info.token) == (b.holder, b.token), info
    assert info.ttl_remaining > 20, info
    assert b.is_held() and not b.lost
    assert a.extend(30) is False and a.release() is False
    assert b.release() is True


def test_extend_whose_key_lock_lapsed_while_its_entry_was_out_gives_the_lease_up(
        managers: tuple[lockapi.LockManager, lockapi.LockManager]) -> None:
    """A stops after taking its entry out (holding the key lock); the key lock's lease runs out, B is
    granted and releases meanwhile. A's entry must not come back: the name was someone else's in
    between (B's token is higher), so A's extend returns False and the name is free."""
    a_mgr, b_mgr = managers
    name = f"extend:{uuid.uuid4().hex}"
    a = a_mgr.acquire(name, ttl=30)
    run = Paused(lambda: a.extend(30))
    with pause_at("extend:removed", thread=run) as pause:
        run.start()
        pause.wait_reached(30)
        b = b_mgr.acquire(name, ttl=30, wait=15)  # parks until A's key lock lapses, then granted
        assert b.release() is True
    assert run.outcome() is False, "A's lease came back after B held the name"
    assert a.lost and not a.is_held()
    c = b_mgr.try_acquire(name, ttl=30)
    assert c is not None and c.token > b.token, "A's withdrawn entry still holds the name"
    assert c.release() is True


def test_extend_stopped_briefly_keeps_the_lease(hazelcast_member: HazelcastCluster,
                                                connect: Callable[..., Any]) -> None:
    """A stops mid-extend with its entry taken out; B tries meanwhile. B's write parks behind A's key
    lock (lease: timeout / 2 = 5 s here) and is refused once A resumed and put its lease back."""
    url = hazelcast_member.url("map")
    name = f"extend:{uuid.uuid4().hex}"
    with connect(url, timeout=10) as a_mgr, lockapi.connect(url, timeout=10) as b_mgr:
        a: Lease = a_mgr.acquire(name, ttl=30)
        run = Paused(lambda: a.extend(30))
        with pause_at("extend:removed", thread=run) as pause:
            run.start()
            pause.wait_reached(30)
            b = Paused(lambda: b_mgr.try_acquire(name, ttl=30))
            b.start()
            pause.resume()
            assert run.outcome() is True
            assert b.outcome() is None, "B was granted while A's extension was under way"
        assert a.is_held() and not a.lost
        assert a.release() is True


@pytest.mark.parametrize("point", ["acquire:fence-read", "acquire:placed"])
def test_acquire_stopped_while_another_takes_and_releases_gets_a_higher_token(
        managers: tuple[lockapi.LockManager, lockapi.LockManager], point: str) -> None:
    """The stale-token path: A read the counter (or placed its entry) and stops; B takes and releases
    the name with the token A proposed. A is then granted a HIGHER token than B's, or refused."""
    a_mgr, b_mgr = managers
    name = f"stale:{uuid.uuid4().hex}"
    run = Paused(lambda: a_mgr.try_acquire(name, ttl=30))
    with pause_at(point, thread=run) as pause:
        run.start()
        pause.wait_reached(30)
        b = b_mgr.try_acquire(name, ttl=30)
        if b is not None:
            assert b.release() is True
    a = run.outcome()
    if a is not None:
        assert b is None or a.token > b.token
        assert a.is_held() and a.release() is True
    assert b_mgr.inspect(name) is None


def test_holds_and_inspect_see_a_lease_whose_extension_is_under_way(hazelcast_member: HazelcastCluster,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """While extend() has the entry out (A stopped at extend:removed), another client's holds() and
    inspect() wait for A's key lock instead of reporting the lease gone."""
    url = hazelcast_member.url("map")
    name = f"extend:{uuid.uuid4().hex}"
    with lockapi.connect(url, timeout=10) as a_mgr, lockapi.connect(url, timeout=10) as b_mgr:
        a = a_mgr.acquire(name, ttl=30)
        locks = b_mgr.backend._holder.session().maps["locks"]  # type: ignore[attr-defined]
        barrier_reached = threading.Event()
        real_remove_if_same = locks.remove_if_same

        def observed_remove_if_same(key: str, value: str) -> Any:
            barrier_reached.set()  # the reader found no entry and now waits for the key lock
            return real_remove_if_same(key, value)

        monkeypatch.setattr(locks, "remove_if_same", observed_remove_if_same)
        for read in (lambda: b_mgr.backend.holds(name, a.holder, a.token), lambda: b_mgr.inspect(name)):
            barrier_reached.clear()
            run = Paused(lambda: a.extend(30))
            with pause_at("extend:removed", thread=run) as pause:
                run.start()
                pause.wait_reached(30)
                reader = Paused(read)
                reader.start()
                assert barrier_reached.wait(30)
                pause.resume()
                assert run.outcome() is True
                seen = reader.outcome()
            assert seen is True or (seen is not None and seen.holder == a.holder), seen
        assert a.release() is True


def test_two_processes_taking_turns_get_increasing_tokens(
        managers: tuple[lockapi.LockManager, lockapi.LockManager]) -> None:
    """Each backend proposes from the counter it confirmed last (fences.KnownCounters), which the other's
    grants make stale: the confirm refuses a stale proposal, so tokens still strictly increase, and a
    backend that found its proposal stale reads the counter first from then on."""
    a_mgr, b_mgr = managers
    name = f"turns:{uuid.uuid4().hex}"
    tokens: list[int] = []
    for _ in range(4):
        for mgr in (a_mgr, b_mgr):
            lease = mgr.acquire(name, ttl=30, wait=15)
            tokens.append(lease.token)
            assert lease.release() is True
    assert all(x < y for x, y in itertools.pairwise(tokens)), tokens
    assert b_mgr.backend._protocol.known.proposal(f"lock:{name}") is None  # type: ignore[attr-defined]


def test_a_lost_counter_does_not_repeat_a_warm_backend_s_tokens(
        hazelcast_member: HazelcastCluster, managers: tuple[lockapi.LockManager, lockapi.LockManager]) -> None:
    """The counter entry vanishes (a member lost its data): a backend that knows the last token it
    confirmed goes on above it (a backend that does not restarts at 1, see docs: Member loss)."""
    a_mgr, b_mgr = managers
    name = f"lost:{uuid.uuid4().hex}"
    first = a_mgr.acquire(name, ttl=30)
    assert first.release() is True
    fences = b_mgr.backend._holder.session().maps["fences"]  # type: ignore[attr-defined]
    assert fences.blocking().remove(f"lock:{name}") == str(first.token)
    second = a_mgr.acquire(name, ttl=30)
    assert second.token > first.token
    assert second.release() is True


def test_a_warm_proposal_stopped_past_its_ttl_never_repeats_the_successor_s_token(
        managers: tuple[lockapi.LockManager, lockapi.LockManager]) -> None:
    """A proposes from what it confirmed last (no read), places its entry and stops past the entry's
    ttl; B is granted meanwhile with the very token A proposed. When A resumes, its confirm fails: A
    withdraws (never B's entry), finds B holding and is refused; B's lease is untouched."""
    a_mgr, b_mgr = managers
    name = f"warm-stale:{uuid.uuid4().hex}"
    warm = a_mgr.acquire(name, ttl=30)
    assert warm.release() is True
    run = Paused(lambda: a_mgr.try_acquire(name, ttl=1))
    with pause_at("acquire:placed", thread=run) as pause:
        run.start()
        pause.wait_reached(30)
        b = b_mgr.acquire(name, ttl=30, wait=15)  # granted once A's entry expired
        assert b.token == warm.token + 1
    a = run.outcome()
    assert a is None or a.token > b.token, (a, b)
    if a is not None:  # only if B's lease ended meanwhile (it has 30 s)
        assert a.release() is True
    else:
        info = b_mgr.inspect(name)
        assert info is not None and (info.holder, info.token) == (b.holder, b.token), info
    assert b.release() is (a is None)
