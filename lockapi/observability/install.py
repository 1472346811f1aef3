"""Installing adapters: process-wide or on one manager, at most one per adapter and scope.

``instrument()`` (OpenTelemetry) and ``instrument_prometheus()`` install their observers for every
manager of the process, existing and future, unless given ``manager=``; so calling
:func:`lockapi.connect` many times needs nothing more. Calling the same adapter again for the same
scope replaces the earlier installation (nothing is counted twice); :meth:`Instrumentation.uninstrument`
removes it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from lockapi import observers
from lockapi.errors import InvalidArgumentType

if TYPE_CHECKING:
    from lockapi.manager import LockManager
    from lockapi.observers import Observer


class Instrumentation:
    """The observers one ``instrument*()`` call installed; ``uninstrument()`` removes them."""

    def __init__(self, adapter: str, installed: tuple[Observer, ...], manager: LockManager | None) -> None:
        self.adapter = adapter
        self.observers = installed
        self.manager = manager

    def __repr__(self) -> str:
        scope = "process" if self.manager is None else repr(self.manager)
        return f"<Instrumentation {self.adapter} on {scope}: {len(self.observers)} observers>"

    def uninstrument(self) -> None:
        """Remove the observers (idempotent). Metrics already reported stay with the meter/registry."""
        with _lock:
            for observer in self.observers:
                if self.manager is None:
                    observers.remove(observer)
                else:
                    self.manager.remove_observer(observer)
            key = (self.adapter, None if self.manager is None else id(self.manager))
            if _active.get(key) is self:
                del _active[key]


_lock = threading.Lock()
_active: dict[tuple[str, int | None], Instrumentation] = {}


def install(adapter: str, installed: tuple[Observer, ...], manager: LockManager | None) -> Instrumentation:
    """Install ``installed`` for the process (``manager`` None) or on ``manager``, replacing what the same
    adapter installed there before."""
    from lockapi.manager import LockManager

    if manager is not None and not isinstance(manager, LockManager):
        raise InvalidArgumentType(f"manager must be a lockapi.LockManager or None, got {type(manager).__name__}")
    key = (adapter, None if manager is None else id(manager))
    with _lock:
        previous = _active.get(key)
    if previous is not None:
        previous.uninstrument()
    handle = Instrumentation(adapter, installed, manager)
    with _lock:
        for observer in installed:
            if manager is None:
                observers.add(observer)
            else:
                manager.add_observer(observer)
        _active[key] = handle
    return handle
