"""Push wake-ups: ONE entry listener per watched map and client, shared by every ``watch`` of the backend.

The listener (removed, expired, evicted events, keys only) is registered on the cluster before the
first ``watch().__enter__`` returns, and registered again on a replacement client. Events are routed
by name to the wake callbacks of open watches. An event lost while disconnected costs a waiter at most
one ``retry_after`` (the core never sleeps longer than the holder's remaining ttl).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from lockapi.spi import Wake, Watchers

__all__ = ["WatchRegistry"]

log = logging.getLogger(__name__)


class WatchRegistry:
    """Open watches per name; ``dispatch(name)`` wakes them; ``key_to_name`` maps a map key to a name."""

    def __init__(self, key_to_name: Callable[[str], str | None]) -> None:
        self._key_to_name = key_to_name
        self._watchers: Watchers[str] = Watchers()

    def on_event(self, event: Any) -> None:
        """Entry-listener callback (runs on the client's reactor thread: only wakes, never blocks)."""
        try:
            name = self._key_to_name(event.key) if isinstance(event.key, str) else None
            if name is not None:
                self._watchers.wake(name)
        except Exception:  # never into the client's reactor: a lost wake-up costs a waiter one retry_after
            log.exception("lockapi: a hazelcast entry-listener callback failed")

    @contextlib.contextmanager
    def watching(self, name: str, wake: Wake, ensure_listener: Callable[[], None]) -> Iterator[None]:
        """Route events for ``name`` to ``wake`` while open; ``ensure_listener`` registers (blocking)."""
        with self._watchers.register(name, wake):
            ensure_listener()
            yield
