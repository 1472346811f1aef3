"""Listeners: callbacks that see every lock decision a manager makes, with its latency, once it is made.

For metrics and traces (which need to see an operation start as well as finish), see
:mod:`lockapi.observers` and :mod:`lockapi.observability`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    """One operation as the application saw it.

    ``op`` is one of acquire, try_acquire, acquire_many, release, extend, renew (an auto-renewal),
    permit_acquire, permit_try_acquire, permit_release, permit_extend; and for scheduled work
    (:mod:`lockapi.scheduling`, ``name`` is the guard's name, never a run's key): ``scheduled``
    (outcome True taken, False skipped), ``scheduled_lost`` (False: the lock was lost or ran out at
    at_most while the run went on; ``seconds`` since the grant) and ``scheduled_end`` (True: ended
    holding the lock, False: it was lost meanwhile, None: the run raised; ``seconds`` the run took).
    ``outcome`` is True/False for a decision (granted or not, still held or not), None when ``error``
    is set. ``result`` says the same in one word: granted, denied, timeout or error for an acquire;
    released, extended, not_held or error for the others (the outcomes of :mod:`lockapi.observers`).
    """

    op: str
    name: str
    outcome: bool | None
    token: int | None
    seconds: float
    error: str | None = None
    result: str = ""


Listener = Callable[[Event], None]


class Listeners:
    """A thread-safe list of listeners. A listener that raises is logged and never breaks the caller."""

    def __init__(self) -> None:
        self.items: tuple[Listener, ...] = ()
        """The listeners now (replaced, never mutated: safe to read without the lock)."""
        self._lock = threading.Lock()

    def add(self, listener: Listener) -> None:
        with self._lock:
            self.items = (*self.items, listener)

    def remove(self, listener: Listener) -> None:
        """Remove ``listener`` (compared with ``==``: ``remove(seen.append)`` finds the listener added as
        ``add(seen.append)``, though each ``seen.append`` is a new bound-method object)."""
        with self._lock:
            self.items = tuple(item for item in self.items if item != listener)

    def __bool__(self) -> bool:
        return bool(self.items)

    def emit(self, event: Event) -> None:
        for listener in self.items:
            try:
                listener(event)
            except Exception:
                log.exception("lockapi event listener %r failed", listener,
                              extra={"lockapi_event": "listener_failed", "lockapi_op": event.op})
