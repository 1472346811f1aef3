"""A fix for hazelcast-python-client's reactor wake-up, applied once per process before the first client.

The client's reactor thread waits in ``poll()`` for at most 10 ms and is woken early, through a pipe,
when another thread queues a request. Its waker (``hazelcast.reactor._PipedWaker``, 5.x) clears its
``awake`` flag BEFORE draining the pipe. A wake-up from another thread in between sets the flag and
writes a byte that the drain then swallows: the flag stays set with the pipe empty, no later wake-up
writes again, and from then on every request of the process waits for the 10 ms poll timeout.
Measured here with the unfixed client: four threads cycling locks on one manager got it stuck in 6
runs out of 6, after which one lock cycle took 33 ms instead of about 1 ms (the map-mode soak's
220-280 operations/s). Draining first and clearing the flag after loses no wake-up: a request queued
meanwhile is written at the loop's next ``poll()``, which looks at every connection's pending writes.

``apply()`` replaces only that one method, only if the class still looks as described (otherwise it
does nothing and logs why), and is idempotent.
"""

from __future__ import annotations

import logging
import os
import threading

__all__ = ["apply", "drain_then_clear"]

log = logging.getLogger("lockapi.hazelcast.client_fixes")

_lock = threading.Lock()
_applied: bool | None = None


def drain_then_clear(waker: object) -> None:
    """``_PipedWaker.handle_read``, in the safe order: empty the pipe, then allow the next wake-up."""
    read_fd: int = waker._read_fd  # type: ignore[attr-defined]
    try:
        while len(os.read(read_fd, 4096)) == 4096:
            pass
    except OSError:
        pass
    waker.awake = False  # type: ignore[attr-defined]


def apply() -> bool:
    """Install :func:`drain_then_clear` as the reactor waker's ``handle_read``; True if it is in place."""
    global _applied
    with _lock:
        if _applied is None:
            _applied = _install()
        return _applied


def _install() -> bool:
    try:
        from hazelcast import reactor
    except ImportError:  # pragma: no cover - the client is this backend's dependency
        return False
    waker = getattr(reactor, "_PipedWaker", None)
    if waker is None or not all(hasattr(waker, attr) for attr in ("handle_read", "wake", "__init__")):
        log.debug("lockapi: hazelcast-python-client's reactor has no _PipedWaker to fix; left as it is")
        return False
    waker.handle_read = drain_then_clear
    return True
