"""The metrics hooks only queue: a daemon thread applies the updates, every reader drains first, and a
histogram value on a bucket bound lands in that bucket (Prometheus ``le``)."""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import lockapi
from lockapi.observability import metrics
from lockapi.observability.aggregate import Aggregate
from lockapi.observability.catalogue import ATTEMPTS, WAIT
from lockapi.observability.deferred import Deferred, failed
from lockapi.observability.families import Families
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


def test_channels_are_applied_after_the_queue_in_order_and_a_failing_item_is_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    deferred = Deferred()
    deferred.closed = True  # no thread: this test drains by hand
    seen: list[tuple[str, int]] = []

    def first_all(items: deque[int]) -> None:
        while items:
            seen.append(("a", items.popleft()))

    def second_all(items: deque[int]) -> None:
        while items:
            item = items.popleft()
            try:
                if item == 2:
                    raise RuntimeError("boom")
                seen.append(("b", item))
            except Exception:
                failed()

    def broken_all(items: deque[int]) -> None:
        raise RuntimeError("broken")

    first = deferred.channel(first_all)
    broken = deferred.channel(broken_all)
    other = deferred.channel(second_all)
    other.extend([1, 2, 3])
    broken.append(0)
    first.extend([1, 2])
    deferred.put((lambda item: seen.append(("q", item)), 0))
    with caplog.at_level(logging.ERROR):
        deferred.drain()
    assert seen == [("q", 0), ("a", 1), ("a", 2), ("b", 1), ("b", 3)]
    assert not first and not other
    assert [getattr(r, "lockapi_event", None) for r in caplog.records] == ["metric_failed", "metric_failed"]


def test_a_failing_record_is_logged_and_the_next_ones_applied(prefix: str, caplog: pytest.LogCaptureFixture
                                                              ) -> None:
    aggregate = Aggregate()
    aggregate.deferred.closed = True
    observer = metrics.MetricsObserver(aggregate, Families(None, 10))
    broken: Any = ("try_acquire", f"{prefix}:1", "memory", "denied", 0.0, "not a time", None, None, None, (), ())
    observer.record(broken)  # its wait time cannot be computed: the update raises after the count
    observer.record(("try_acquire", f"{prefix}:1", "memory", "denied", 0.0, 0.001, None, None, None, (), ()))
    with caplog.at_level(logging.ERROR):
        observer.drain()
    assert sum(v for labels, v in aggregate.values(ATTEMPTS) if prefix in labels) == 2  # counted before it failed
    assert [getattr(r, "lockapi_event", None) for r in caplog.records] == ["metric_failed"]


def test_a_caller_past_the_limit_applies_the_metrics_queue_itself(prefix: str, monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    monkeypatch.setattr(metrics, "LIMIT", 3)
    aggregate = Aggregate()
    aggregate.deferred.closed = True  # no drainer thread: only the caller can apply what it queued
    observer = metrics.MetricsObserver(aggregate, Families(None, 10))

    def attempts() -> float:
        return sum(v for labels, v in aggregate.values(ATTEMPTS) if prefix in labels)

    for _ in range(5):
        observer.record(("try_acquire", f"{prefix}:1", "memory", "denied", 0.0, 0.001, None, None, None, (), ()))
    assert attempts() == 4  # the 4th record went past the limit: the caller drained the queue
    observer.drain()
    assert attempts() == 5


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_applies_channel_items_on_its_own_thread() -> None:
    deferred = Deferred()
    applied = threading.Event()
    channel = deferred.channel(lambda items: (items.clear(), applied.set()))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its drainer thread must run again, without anyone draining
        ok = False
        try:
            channel.append(1)
            ok = applied.wait(30)
        finally:
            os.write(write, b"1" if ok else b"0")
            os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 1) == b"1", "the child's drainer thread did not apply the item"
    finally:
        os.close(read)
        os.waitpid(pid, 0)
        deferred.closed = True


def test_concurrent_appenders_readers_and_the_drainer_thread_apply_every_item_exactly_once() -> None:
    deferred = Deferred()  # its drainer thread runs, as in an application
    applied: list[int] = []

    def apply_all(items: deque[int]) -> None:
        while items:
            applied.append(items.popleft())

    channel = deferred.channel(apply_all)
    writers, per_writer = 4, 5_000
    start = threading.Barrier(writers + 1)
    done = threading.Event()

    def write(first: int) -> None:
        start.wait()
        for item in range(first, first + per_writer):
            channel.append(item)

    def read() -> None:  # a reader drains before it reads, racing the drainer thread and the writers
        start.wait()
        while not done.is_set():
            deferred.drain()

    threads = [threading.Thread(target=write, args=(i * per_writer,)) for i in range(writers)]
    reader = threading.Thread(target=read)
    try:
        for thread in [*threads, reader]:
            thread.start()
        for thread in threads:
            thread.join(60)
        done.set()
        reader.join(60)
        deferred.drain()
        assert sorted(applied) == list(range(writers * per_writer))  # none lost, none applied twice
    finally:
        done.set()
        deferred.closed = True
