"""The metrics hooks only queue: a daemon thread applies the updates, every reader drains first, and a
histogram value on a bucket bound lands in that bucket (Prometheus ``le``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

import lockapi
from lockapi.observability.aggregate import Aggregate
from lockapi.observability.catalogue import ATTEMPTS, WAIT
from lockapi.observability.prometheus import _sink
from tests.observability.conftest import wait_until


def test_the_background_thread_applies_queued_updates_without_any_reader(prefix: str) -> None:
    registry = CollectorRegistry()
    handle = lockapi.instrument_prometheus(registry)
    try:
        with lockapi.connect(f"memory://{prefix}") as mgr:
            mgr.acquire(f"{prefix}:1").release()
        sink = _sink(registry)
        assert isinstance(sink, Aggregate)
        wait_until(lambda: sum(v for labels, v in sink.values(ATTEMPTS) if prefix in labels) == 1,
                   "the metrics thread to apply the attempt")
    finally:
        handle.uninstrument()


def test_a_value_on_a_bucket_bound_counts_in_that_bucket() -> None:
    aggregate = Aggregate()
    labels = ("memory", "acquire", "f", "granted")
    for value in (0.001, 0.0010001, 1e6):
        aggregate.record(WAIT, labels, value)
    [(_, histogram)] = aggregate.histograms(WAIT)
    bounds = list(WAIT.buckets)
    assert histogram[bounds.index(0.001)] == 1 and histogram[bounds.index(0.0025)] == 1
    assert histogram[len(bounds)] == 1  # +Inf
    assert histogram[-1] == 3 and histogram[-2] > 1e6
