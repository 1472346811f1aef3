"""The pause-injection harness itself: it stops only the chosen thread, at the chosen point, until resumed."""

from __future__ import annotations

import threading

import pytest

from lockapi import spi
from lockapi.testing.pauses import operation_of, pause_at, record_points


def test_pause_stops_the_chosen_thread_until_resumed() -> None:
    passed = threading.Event()

    def holder() -> None:
        spi.pause_point("extend:read")
        passed.set()

    thread = threading.Thread(target=holder)
    with pause_at("extend:read", thread=thread) as pause:
        spi.pause_point("extend:read")  # another thread (this one) is not stopped
        thread.start()
        pause.wait_reached(10)
        assert not passed.wait(0.05)
        pause.resume()
        assert passed.wait(10)
    thread.join(10)
    assert spi._pause_hook is None, "the hook is removed once no pause or recorder is armed"


def test_leaving_the_block_resumes_a_stopped_thread() -> None:
    done = threading.Event()
    thread = threading.Thread(target=lambda: (spi.pause_point("release:read"), done.set()))
    with pause_at("release:read", thread=thread) as pause:
        thread.start()
        pause.wait_reached(10)
    assert done.wait(10)


def test_record_points_lists_every_point_passed() -> None:
    with record_points() as seen:
        spi.pause_point("acquire:fence-read")
        spi.pause_point("acquire:put")
    spi.pause_point("release:read")
    assert seen == {"acquire:fence-read", "acquire:put"}


@pytest.mark.parametrize("point", ["extend", "nope:read", "extend:", ":read"])
def test_malformed_points_are_refused(point: str) -> None:
    with pytest.raises(ValueError):
        operation_of(point)


def test_a_pause_that_is_never_reached_says_so() -> None:
    with pause_at("extend:read") as pause, pytest.raises(AssertionError, match="extend:read"):
        pause.wait_reached(0.05)
