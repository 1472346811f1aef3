"""The watchdog (lockapi_sql.watchdog) cuts a guarded socket at its deadline, also when the deadline is
earlier than the one its thread is sleeping towards (the thread is woken only then), and leaves the
sockets of blocks that ended alone."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from lockapi_sql.watchdog import Watchdog


@pytest.fixture
def watchdog() -> Iterator[Watchdog]:
    dog = Watchdog()
    yield dog
    dog.close()


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.settimeout(30)  # a failing watchdog fails the test instead of hanging it
    return a, b


def test_a_block_past_its_deadline_has_its_socket_cut(watchdog: Watchdog) -> None:
    a, b = _pair()
    with a, b:
        started = time.monotonic()
        with watchdog.guard(a.fileno(), started + 0.2):
            assert a.recv(1) == b""  # the read fails (shut down) instead of waiting for data forever
        assert 0.15 <= time.monotonic() - started < 10


def test_an_earlier_deadline_wakes_the_sleeping_thread(watchdog: Watchdog) -> None:
    far_a, far_b = _pair()
    a, b = _pair()
    # the thread sleeps towards the far deadline
    with far_a, far_b, a, b, watchdog.guard(far_a.fileno(), time.monotonic() + 3600):
        started = time.monotonic()
        with watchdog.guard(a.fileno(), started + 0.2):
            assert a.recv(1) == b""
        assert time.monotonic() - started < 10
        far_b.sendall(b"x")
        assert far_a.recv(1) == b"x", "the far deadline's socket was not cut"


def test_blocks_that_ended_in_time_are_left_alone(watchdog: Watchdog) -> None:
    a, b = _pair()
    with a, b:
        for _ in range(1000):
            with watchdog.guard(a.fileno(), time.monotonic() + 0.05):
                pass
        with watchdog.guard(a.fileno(), time.monotonic() + 3600):
            b.sendall(b"y")
            assert a.recv(1) == b"y"
        assert not watchdog._live, "ended guards pile up"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_guards_with_a_thread_of_its_own(watchdog: Watchdog) -> None:
    """The parent's thread does not exist in a forked child (and its lock may have been copied while
    held): after the pool's at-fork hook (:meth:`Watchdog.after_fork`) the child's first guard starts a
    thread of its own, and its deadline still cuts."""
    far_a, far_b = _pair()
    with far_a, far_b, watchdog.guard(far_a.fileno(), time.monotonic() + 3600):  # the parent's thread runs
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit code
            code = 1
            signal.alarm(20)  # a child that hangs (e.g. on a lock copied while held) dies instead
            try:
                watchdog.after_fork()
                a, b = _pair()
                with a, b, watchdog.guard(a.fileno(), time.monotonic() + 0.2):
                    code = 0 if a.recv(1) == b"" else 2  # cut: the read ends at once, empty
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child's guard hung or never cut its socket"


def test_a_watchdog_used_after_close_still_cuts(watchdog: Watchdog) -> None:
    """A closed backend's pool opens new connections for later calls: their deadlines must still hold
    (after close() the thread was gone for good and a later call on a frozen server could hang)."""
    a, b = _pair()
    with a, b:
        with watchdog.guard(a.fileno(), time.monotonic() + 3600):
            pass  # the thread runs
        watchdog.close()
        started = time.monotonic()
        with watchdog.guard(a.fileno(), started + 0.2):
            assert a.recv(1) == b""
        assert time.monotonic() - started < 10


def test_guards_added_from_many_threads_are_never_missed(watchdog: Watchdog) -> None:
    """Guards are added without the lock: one that comes while the thread is reading the guards (or
    about to sleep) must still wake it, so every blocked read is cut soon after its deadline."""
    late: list[float] = []
    start = threading.Barrier(4)

    def block(step: float) -> None:
        start.wait()
        for i in range(40):
            a, b = _pair()
            with a, b:
                deadline = time.monotonic() + step * (1 + i % 3)
                with watchdog.guard(a.fileno(), deadline):
                    assert a.recv(1) == b""  # a missed guard waits for the 30 s socket timeout instead
                late.append(time.monotonic() - deadline)

    threads = [threading.Thread(target=block, args=(0.005 * (n + 1),)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(late) == 160
    assert max(late) < 10, "a guard was cut long after its deadline: the thread was not woken for it"


def test_a_guard_that_ended_is_never_cut_afterwards(watchdog: Watchdog) -> None:
    """Guards whose deadline is passing as they end race the thread for their entry: whichever takes it,
    once unwatch returns the socket is either already cut or never will be."""
    a, b = _pair()
    try:
        for _ in range(300):
            ident = watchdog.watch(a.fileno(), time.monotonic())  # due now: the thread may take it
            watchdog.unwatch(ident)
            try:
                b.sendall(b"z")
                cut = a.recv(1) == b""
            except BrokenPipeError:  # a Unix socket pair: writing to a cut peer fails at once
                cut = True
            if cut:  # cut while guarded: allowed, start again on a new pair
                a.close()
                b.close()
                a, b = _pair()
                continue
            # not cut by the time unwatch returned: no cut may follow
            with watchdog.guard(b.fileno(), time.monotonic() + 3600):
                pass  # one more round trip of the thread's lock: a late cut would have happened by now
            b.sendall(b"w")
            assert a.recv(1) == b"w", "a socket was cut after its guard had ended"
        assert not watchdog._live
    finally:
        a.close()
        b.close()
