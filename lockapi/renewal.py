"""Auto-renewal: one scheduler thread per process extends every ``auto_renew`` lease every ttl/3."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

log = logging.getLogger(__name__)


class Renewable(Protocol):
    def _renew(self) -> float | None:
        """Extend once; return seconds until the next renewal, or None to stop."""


class Renewer:
    """A heap of due times served by one daemon thread; renewals run on a small pool so that one slow
    backend call does not delay the others."""

    def __init__(self, workers: int = 4) -> None:
        self._heap: list[tuple[float, int, Renewable]] = []
        self._cancelled: set[int] = set()
        self._ids: dict[int, int] = {}
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lockapi-renew")

    def schedule(self, item: Renewable, delay: float) -> None:
        with self._cond:
            seq = next(self._seq)
            self._ids[id(item)] = seq
            heapq.heappush(self._heap, (time.monotonic() + delay, seq, item))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lockapi-renewer", daemon=True)
                self._thread.start()
            self._cond.notify()

    def cancel(self, item: Renewable) -> None:
        with self._cond:
            seq = self._ids.pop(id(item), None)
            if seq is not None:
                self._cancelled.add(seq)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                _, seq, item = heapq.heappop(self._heap)
                if seq in self._cancelled:
                    self._cancelled.discard(seq)
                    continue
            self._pool.submit(self._renew, item, seq)

    def _renew(self, item: Renewable, seq: int) -> None:
        try:
            delay = item._renew()
        except Exception:
            log.exception("lockapi: auto-renewal of %r failed unexpectedly", item)
            delay = None
        with self._cond:
            if seq in self._cancelled or self._ids.get(id(item)) != seq:
                self._cancelled.discard(seq)
                return
            if delay is None:
                self._ids.pop(id(item), None)
                return
        self.schedule(item, delay)


_renewer: Renewer | None = None
_renewer_lock = threading.Lock()


def renewer() -> Renewer:
    """The process-wide renewer, started on first use."""
    global _renewer
    with _renewer_lock:
        if _renewer is None:
            _renewer = Renewer()
        return _renewer
