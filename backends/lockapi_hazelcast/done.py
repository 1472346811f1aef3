"""Done markers in an IMap (``<prefix>.done``: ``name -> "1"`` with the marker's ttl), for both modes.

The CP subsystem has no ttl'd structure, so cp mode keeps its done markers here too (AP: a marker can
be lost with a member that dies before its backup is written).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

from hazelcast.core import SimpleEntryView
from hazelcast.proxy.map import Map

from .client import ClientHolder

__all__ = ["TTL_SLACK", "VIEW_BATCH", "DoneMarkers", "seconds_left"]

TTL_SLACK = 1.0
"""Seconds added to every ttl sent to the members: they keep entry times with one-second resolution
(an entry put at 12.9 s with ttl 1 s expires at 13.0 s), so an entry lives between ttl and ttl + 1 s."""
VIEW_BATCH = 256


def seconds_left(view: SimpleEntryView[str, str], now: float) -> float:
    """Seconds until the member expires the entry: its expiration time (member clock, 1 s resolution)
    minus this host's wall clock ``now``, clamped to [0, the entry's ttl] so clock skew cannot stretch it.
    """
    return min(max(0.0, view.expiration_time / 1000 - now), view.ttl / 1000)


class DoneMarkers:
    """``mark``, ``live`` and ``iterate`` done markers in the map returned by ``done_map()``."""

    def __init__(self, holder: ClientHolder, done_map: Callable[[], Map[str, str]]) -> None:
        self._holder = holder
        self._map = done_map

    def mark(self, name: str, ttl: float) -> None:
        self._holder.wait(self._map().set(name, "1", ttl + TTL_SLACK), self._holder.deadline(), "mark done")

    def live(self, names: Sequence[str]) -> set[str]:
        if not names:
            return set()
        found = self._holder.wait(self._map().get_all(list(dict.fromkeys(names))), self._holder.deadline(),
                                  "read done markers")
        return set(found)

    def iterate(self) -> Iterator[tuple[str, float]]:
        done = self._map()
        names = self._holder.wait(done.key_set(), self._holder.deadline(), "list done markers")
        for start in range(0, len(names), VIEW_BATCH):
            batch = names[start:start + VIEW_BATCH]
            views = self._holder.wait_all([done.get_entry_view(n) for n in batch], self._holder.deadline(),
                                          "read done markers")
            now = time.time()
            for name, view in zip(batch, views, strict=True):
                if view is not None:
                    remaining = min(seconds_left(view, now), view.ttl / 1000 - TTL_SLACK)
                    if remaining > 0:
                        yield name, remaining
