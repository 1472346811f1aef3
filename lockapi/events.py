"""Instrumentation hooks: listeners see every lock decision a manager makes, with its latency."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("lockapi")


@dataclass(frozen=True, slots=True)
class Event:
    """One operation as the application saw it.

    ``op`` is one of acquire, try_acquire, acquire_many, release, extend, permit_acquire,
    permit_release, permit_extend; and for scheduled work (:mod:`lockapi.scheduling`, ``name`` is the
    guard's name, never a run's key): ``scheduled`` (outcome True taken, False skipped),
    ``scheduled_lost`` (False: the lock was lost or ran out at at_most while the run went on;
    ``seconds`` since the grant) and ``scheduled_end`` (True: ended holding the lock, False: it was
    lost meanwhile, None: the run raised; ``seconds`` the run took). ``outcome`` is True/False for a
    decision, None when ``error`` is set.
    """

    op: str
    name: str
    outcome: bool | None
    token: int | None
    seconds: float
    error: str | None = None


Listener = Callable[[Event], None]


class Listeners:
    """A thread-safe list of listeners. A listener that raises is logged and never breaks the caller."""

    def __init__(self) -> None:
        self._items: tuple[Listener, ...] = ()
        self._lock = threading.Lock()

    def add(self, listener: Listener) -> None:
        with self._lock:
            self._items = (*self._items, listener)

    def remove(self, listener: Listener) -> None:
        with self._lock:
            self._items = tuple(item for item in self._items if item is not listener)

    def __bool__(self) -> bool:
        return bool(self._items)

    def emit(self, event: Event) -> None:
        for listener in self._items:
            try:
                listener(event)
            except Exception:
                log.exception("lockapi event listener %r failed", listener)
