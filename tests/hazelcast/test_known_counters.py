"""fences.KnownCounters, the proposals map mode's acquire makes without reading the counter (no I/O)."""

from __future__ import annotations

from lockapi_hazelcast.fences import KnownCounters


def test_a_counter_is_known_only_after_a_confirmed_grant_and_never_goes_down() -> None:
    known = KnownCounters()
    assert known.proposal("lock:a") is None
    known.learn("lock:a", 7)
    known.learn("lock:a", 5)  # a slower thread of this process learns an older grant last
    assert known.proposal("lock:a") == 7


def test_forgotten_counters_are_read_again_and_distrusted_ones_stay_read_first() -> None:
    known = KnownCounters()
    known.learn("lock:a", 3)
    known.forget("lock:a")
    assert known.proposal("lock:a") is None
    known.learn("lock:a", 4)
    assert known.proposal("lock:a") == 4
    known.distrust("lock:a")
    known.learn("lock:a", 9)
    known.forget("lock:a")
    known.learn("lock:a", 10)
    assert known.proposal("lock:a") is None


def test_at_most_size_counters_are_kept_the_oldest_dropped_first() -> None:
    known = KnownCounters(size=2)
    known.learn("lock:a", 1)
    known.learn("lock:b", 1)
    known.distrust("lock:c")
    assert known.proposal("lock:a") is None and known.proposal("lock:b") == 1
    known.learn("lock:a", 2)  # in again, pushing lock:b out; lock:c stays distrusted
    assert known.proposal("lock:b") is None and known.proposal("lock:a") == 2
    known.learn("lock:c", 5)
    assert known.proposal("lock:c") is None
