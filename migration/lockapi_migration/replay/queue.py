"""The replay queue: runs the background side of each operation without delaying the caller.

Tasks are sharded by lock name over ``workers`` threads, each with its own bounded FIFO queue, so the
tasks of one name run in submission order (a shadow release never overtakes its shadow acquire).
``submit`` never blocks: when the shard's queue is full the task is dropped, counted, and False is
returned (the caller records the drop). Each task's backend calls are bounded by the shadow backend's
own ``timeout`` (see :data:`SHADOW_TIMEOUT`). A task is a function and its arguments; it is called with
the monotonic time it was submitted at first (to measure how far the replay runs behind). A task that is
a generator function is a replay *plan* (:data:`~lockapi_migration.replay.replayer.Plan`): a worker
takes everything queued on its shard at once (up to :data:`WAVE`) and has the target's ``drive`` run
the plans among it together, the shadow calls of different names in one round trip.
"""

from __future__ import annotations

import abc
import contextlib
import inspect
import logging
import queue
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from lockapi.spi import step, trace_context

log = logging.getLogger("lockapi.migration." + __name__.removeprefix("lockapi_migration."))

SHADOW_TIMEOUT = 2.0
"""Default per-call timeout (seconds) of the shadow backend when its URL sets none."""

Task = Callable[..., None]
"""A replay task: called as ``task(submitted, *args)``."""
Item = tuple[Task, tuple[Any, ...], float, str, object]
"""(task, args, submitted, key, the caller's trace context)."""
WAVE = 256
"""Queued replays a worker thread takes at once: their shadow calls go in batches (see
:meth:`~lockapi_migration.replay.replayer.Replayer.drive`)."""
T = TypeVar("T")
GROUP = 64
"""Names per replay task of a multi-name operation (bounds one task's size and duration)."""


def several_names(task: T) -> T:
    """Mark a replay plan that touches several names (its key is only the first): it runs after every
    replay queued before it on its shard and before every one after it, never in a wave with them."""
    task.several_names = True  # type: ignore[attr-defined]
    return task


def shard_of(key: str, shards: int) -> int:
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % shards


class Replay(abc.ABC):
    """Where replays go: ``submit(key, method, *args)`` queues ``target.<method>(submitted, *args)``
    (the target is a :class:`~lockapi_migration.replay.replayer.Replayer`) without ever blocking;
    replays of one key run in submission order. :class:`ReplayQueue` runs them on threads of this
    process, :class:`~lockapi_migration.replay.process.ProcessReplay` in a replay process of its own."""

    shards: int
    dropped: int = 0
    failed: int = 0

    def group(self, keys: Sequence[str]) -> list[list[str]]:
        """``keys`` split by shard (order kept) into groups of at most :data:`GROUP`: one task each."""
        groups: dict[int, list[str]] = {}
        for key in keys:
            groups.setdefault(shard_of(key, self.shards), []).append(key)
        return [group[i:i + GROUP] for group in groups.values() for i in range(0, len(group), GROUP)]

    @abc.abstractmethod
    def submit(self, key: str, method: str, *args: Any) -> bool:
        """Queue a replay; False (and counted in ``dropped``) when there is no room."""

    @abc.abstractmethod
    def backlog(self) -> float:
        """Seconds the oldest queued replay has waited (0 when nothing is queued)."""

    @abc.abstractmethod
    def drain(self, timeout: float) -> bool:
        """Wait until every replay queued so far has run and its records are written; False on timeout."""

    def flush(self, timeout: float) -> bool:
        """:meth:`drain`, and have the records and lag of those replays written (by whoever writes them)."""
        return self.drain(timeout)

    @abc.abstractmethod
    def close(self, timeout: float = 10.0) -> None:
        """Run what is queued (for at most ``timeout`` seconds), then stop."""


class ReplayQueue(Replay):
    """Bounded FIFO queues of replays, one per worker thread of this process, sharded by lock name."""

    def __init__(self, *, workers: int = 4, capacity: int = 10_000) -> None:
        self.shards = workers
        self._target: object = None
        self._step = "migration.shadow"
        self._side = ""
        per_worker = max(1, capacity // workers)
        self._queues: list[queue.Queue[Item | None]] = [
            queue.Queue(per_worker) for _ in range(workers)
        ]
        self.dropped = 0
        self.failed = 0
        self._threads = [
            threading.Thread(target=self._run, args=(q,), name=f"lockapi-shadow-{i}", daemon=True)
            for i, q in enumerate(self._queues)
        ]
        for thread in self._threads:
            thread.start()

    def start(self, target: object, *, phase: str = "shadow", side: str = "") -> None:
        """Set the object whose methods the replays call (done once, before the first submit); each
        replay is reported as the step ``migration.<phase>`` on ``side`` (the shadow's label), under the
        span of the operation that queued it."""
        self._target = target
        self._step = f"migration.{phase}"
        self._side = side

    def submit(self, key: str, method: str, *args: Any) -> bool:
        return self.submit_at(key, getattr(self._target, method), args, time.monotonic())

    def submit_at(self, key: str, task: Task, args: tuple[Any, ...], submitted: float) -> bool:
        """Queue ``task(submitted, *args)`` on ``key``'s shard; False (and counted) if that shard is full."""
        try:
            self._queues[shard_of(key, self.shards)].put_nowait((task, args, submitted, key, trace_context()))
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def pending(self) -> int:
        return sum(q.qsize() for q in self._queues)

    def backlog(self) -> float:
        now, oldest = time.monotonic(), 0.0
        for q in self._queues:
            with q.mutex:
                head = q.queue[0] if q.queue else None
            if head is not None:
                oldest = max(oldest, now - head[2])
        return oldest

    def drain(self, timeout: float) -> bool:
        done = threading.Event()
        remaining = [len(self._queues)]
        guard = threading.Lock()

        def mark(_: float) -> None:
            with guard:
                remaining[0] -= 1
                if remaining[0] == 0:
                    done.set()

        for q in self._queues:
            try:
                q.put((mark, (), time.monotonic(), "", None), timeout=timeout)
            except queue.Full:
                return False
        return done.wait(timeout)

    def _run(self, tasks: queue.Queue[Item | None]) -> None:
        stop = False
        while not stop and (item := tasks.get()) is not None:
            items = [item]
            with contextlib.suppress(queue.Empty):  # and whatever else is queued: one batch
                while len(items) < WAVE:
                    if (more := tasks.get_nowait()) is None:
                        stop = True
                        break
                    items.append(more)
            self._run_items(items)

    def _run_items(self, items: list[Item]) -> None:
        """Run ``items`` in order; consecutive plans (tasks that are generator functions) of one name each
        as one batch of the target's ``drive`` (a traced plan, or one of :func:`several_names`, on its
        own)."""
        plans: list[tuple[str, Any]] = []
        for task, args, submitted, key, parent in items:
            try:
                if parent is None and inspect.isgeneratorfunction(task):
                    if not getattr(task, "several_names", False):
                        plans.append((key, task(submitted, *args)))
                        continue
                    if plans:
                        self._drive(plans)
                    plans = []
                    self._drive([(key, task(submitted, *args))])
                    continue
                if plans:
                    self._drive(plans)
                    plans = []
                if parent is None:
                    task(submitted, *args)
                else:
                    with step(self._step, key, backend="migration", parent=parent, side=self._side):
                        if inspect.isgeneratorfunction(task):
                            self._drive([(key, task(submitted, *args))])
                        else:
                            task(submitted, *args)
            except Exception as exc:  # a shadow task must never kill its worker
                self._failed(exc)
        if plans:
            self._drive(plans)

    def _drive(self, plans: list[tuple[str, Any]]) -> None:
        try:
            self._target.drive(plans, self._failed)  # type: ignore[attr-defined]
        except Exception as exc:
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        self.failed += 1
        log.error("lockapi migration: shadow task failed", exc_info=exc)

    def close(self, timeout: float = 10.0) -> None:
        self.drain(timeout)
        for q in self._queues:
            with contextlib.suppress(queue.Full):  # daemon threads: the process may exit with tasks left
                q.put_nowait(None)
        for thread in self._threads:
            thread.join(timeout)
