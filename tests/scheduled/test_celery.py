"""Celery with real workers (a prefork worker with two children and a solo worker) on the session
Redis server as broker: one execution per key, once-per-key markers, and celery-once's "do not even
enqueue a duplicate"."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from lockapi.integrations.celery import AlreadyQueued
from tests.scheduled import celery_app
from tests.servers.redis import RedisServer

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120.0


class Cluster:
    """Celery workers on one queue of their own, and the producer side configured to match."""

    def __init__(self, redis: RedisServer, lock_url: str, folder: Path) -> None:
        self.queue = f"q-{uuid.uuid4().hex[:8]}"
        self.log = folder / "tasks.log"
        self.ready = folder / "ready"
        self.ready.mkdir()
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "LOCKAPI_URL": lock_url, "TASK_LOG": str(self.log),
                    "READY_DIR": str(self.ready), "CELERY_BROKER": f"{redis.url}/1",
                    "CELERY_RESULTS": f"{redis.url}/2"}
        celery_app.app.conf.update(broker_url=self.env["CELERY_BROKER"], result_backend=self.env["CELERY_RESULTS"])
        os.environ["LOCKAPI_URL"] = lock_url  # the producer's lock_once leases
        self.workers: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        base = [sys.executable, "-m", "celery", "-A", "tests.scheduled.celery_app", "worker", "-Q", self.queue,
                "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "warning"]
        for name, pool in (("prefork", ["-P", "prefork", "-c", "2"]), ("solo", ["-P", "solo"])):
            self.workers.append(subprocess.Popen([*base, *pool, "-n", f"{name}-{self.queue}@%h"], cwd=ROOT,
                                                 env=self.env))
        deadline = time.monotonic() + TIMEOUT
        while len(list(self.ready.iterdir())) < 2:
            assert time.monotonic() < deadline, "celery workers did not start"
            assert all(w.poll() is None for w in self.workers), "a celery worker exited"
            time.sleep(0.05)

    def stop(self) -> None:
        for w in self.workers:
            w.terminate()
        for w in self.workers:
            try:
                w.wait(30)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()

    def executions(self) -> Counter[tuple[str, str]]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return Counter((task, key) for task, key, _ in (line.split() for line in lines))

    def pids(self) -> set[str]:
        return {line.split()[2] for line in self.log.read_text().splitlines()}


@pytest.fixture
def cluster(shared_url: str, redis_standalone: RedisServer, tmp_path: Path) -> Iterator[Cluster]:
    saved = os.environ.get("LOCKAPI_URL")
    made = Cluster(redis_standalone, shared_url, tmp_path)
    try:
        yield made
    finally:
        made.stop()
        if saved is None:
            os.environ.pop("LOCKAPI_URL", None)
        else:
            os.environ["LOCKAPI_URL"] = saved
        from lockapi.scheduling import _forget_shared

        _forget_shared()


def test_two_workers_run_each_key_once(cluster: Cluster) -> None:
    cluster.start()
    keys = ["a", "b", "c"]
    results = [celery_app.once_per_key.apply_async((key,), queue=cluster.queue) for key in keys * 4]
    outcomes = [r.get(timeout=TIMEOUT) for r in results]
    assert cluster.executions() == Counter({("once_per_key", key): 1 for key in keys})
    skipped = [o for o in outcomes if isinstance(o, dict)]
    assert len(skipped) == 9 and {o["reason"] for o in skipped} == {"held"}
    assert all(o["lockapi"] == "skipped" for o in skipped), "the skip is visible in the task's result"


def test_remembered_keys_run_once_even_when_sent_later(cluster: Cluster) -> None:
    cluster.start()
    first = [celery_app.remembered.apply_async(("k",), queue=cluster.queue) for _ in range(3)]
    [r.get(timeout=TIMEOUT) for r in first]
    later = celery_app.remembered.apply_async(("k",), queue=cluster.queue).get(timeout=TIMEOUT)
    assert later["reason"] in ("done", "held")
    assert cluster.executions() == Counter({("remembered", "k"): 1})


def test_lock_once_does_not_enqueue_a_duplicate(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start()
    go = tmp_path / "go"
    first = celery_app.enqueue_once.apply_async(("x", str(go)), queue=cluster.queue)
    with pytest.raises(AlreadyQueued):
        celery_app.enqueue_once.apply_async(("x", str(go)), queue=cluster.queue)
    with pytest.raises(AlreadyQueued):
        celery_app.enqueue_once.delay("x", str(go))  # delay is apply_async
    other = celery_app.enqueue_once.apply_async(("y", str(go)), queue=cluster.queue)
    go.touch()
    first.get(timeout=TIMEOUT)
    other.get(timeout=TIMEOUT)
    # the worker released the enqueue lease when the task ended: it may be sent again
    again = celery_app.enqueue_once.apply_async(("x", str(go)), queue=cluster.queue)
    again.get(timeout=TIMEOUT)
    assert cluster.executions() == Counter({("enqueue_once", "x"): 2, ("enqueue_once", "y"): 1})


def test_lock_once_lease_of_a_lost_task_expires_after_at_most(cluster: Cluster) -> None:
    # no worker consumes this queue: the task is "lost"; its enqueue lease must not block forever
    queue = f"nobody-{uuid.uuid4().hex[:8]}"
    celery_app.short_once.apply_async(("z",), queue=queue)
    with pytest.raises(AlreadyQueued):
        celery_app.short_once.apply_async(("z",), queue=queue)
    deadline = time.monotonic() + 30
    while True:
        try:
            celery_app.short_once.apply_async(("z",), queue=queue)
            break
        except AlreadyQueued:
            assert time.monotonic() < deadline, "the enqueue lease outlived lock_at_most"
            time.sleep(0.1)
    assert celery_app.graceful_once.apply_async(("z",), queue=queue) is not None
    assert celery_app.graceful_once.apply_async(("z",), queue=queue) is None, "lock_once_graceful"
