"""Push wake-ups: ONE entry listener per watched map and client, shared by every ``watch`` of the backend.

The listener (removed, expired, evicted events, keys only: :meth:`.MapProtocol.listen`) is registered
on the cluster before the first ``watch`` is entered (``__enter__`` / ``__aenter__`` returns once the
cluster confirmed it), and registered again on a replacement client. Events are routed by name to the
wake callbacks of open watches: on the blocking client's reactor thread, or on the event loop with
``hazelcast.asyncio``. An event lost while disconnected costs a waiter at most one ``retry_after`` (the
core never sleeps longer than the holder's remaining ttl).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from lockapi.spi import Wake, Watchers

from .map_protocol import name_of_permit_key
from .protocol import LOCKS, PERMITS

__all__ = ["WatchRegistry", "registries"]

log = logging.getLogger("lockapi.hazelcast.watch")


class WatchRegistry:
    """Open watches per name; ``on_event`` wakes them; ``key_to_name`` maps a map key to a name."""

    def __init__(self, key_to_name: Callable[[str], str | None]) -> None:
        self._key_to_name = key_to_name
        self._watchers: Watchers[str] = Watchers()
        self._count = threading.Lock()
        self._open = 0

    def on_event(self, event: Any) -> None:
        """Entry-listener callback (the client's reactor thread or event loop: only wakes, never blocks)."""
        try:
            name = self._key_to_name(event.key) if isinstance(event.key, str) else None
            if name is not None:
                self._watchers.wake(name)
        except Exception:  # never into the client: a lost wake-up costs a waiter one retry_after
            log.exception("lockapi: a hazelcast entry-listener callback failed")

    @contextlib.contextmanager
    def register(self, name: str, wake: Wake) -> Iterator[None]:
        """Route events for ``name`` to ``wake`` while open (no I/O: the listener is the caller's job)."""
        with self._watchers.register(name, wake):
            with self._count:
                self._open += 1
            try:
                yield
            finally:
                with self._count:
                    self._open -= 1

    @property
    def open(self) -> int:
        """Watches open right now (zero once every waiter has left)."""
        return self._open


def registries() -> dict[str, WatchRegistry]:
    """A backend's registries, by the map whose events feed them (``kind = "permits" if semaphore else
    "locks"``)."""
    return {LOCKS: WatchRegistry(lambda key: key), PERMITS: WatchRegistry(name_of_permit_key)}
