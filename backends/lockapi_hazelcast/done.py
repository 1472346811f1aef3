"""Done markers in an IMap (``<prefix>.done``: ``name -> "1"`` with the marker's ttl), for both modes.

The CP subsystem has no ttl'd structure, so cp mode keeps its done markers here too (AP: a marker can
be lost with a member that dies before its backup is written). The functions here are plans
(:mod:`.protocol`) on the map ``done``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from hazelcast.core import SimpleEntryView

from .protocol import DONE, Call, Plan, Together

__all__ = ["TTL_SLACK", "VIEW_BATCH", "listed", "live", "mark", "remaining", "seconds_left"]

TTL_SLACK = 1.0
"""Seconds added to every ttl sent to the members: they keep entry times with one-second resolution
(an entry put at 12.9 s with ttl 1 s expires at 13.0 s), so an entry lives between ttl and ttl + 1 s."""
VIEW_BATCH = 256
"""Markers whose entry views :func:`remaining` reads in one round trip (``iter_done``)."""


def seconds_left(view: SimpleEntryView[str, str], now: float) -> float:
    """Seconds until the member expires the entry: its expiration time (member clock, 1 s resolution)
    minus this host's wall clock ``now``, clamped to [0, the entry's ttl] so clock skew cannot stretch it.
    """
    return min(max(0.0, view.expiration_time / 1000 - now), view.ttl / 1000)


def mark(name: str, ttl: float) -> Plan[None]:
    yield Call(DONE, "set", (name, "1", ttl + TTL_SLACK), what="mark done")


def live(names: Sequence[str]) -> Plan[set[str]]:
    """The subset of ``names`` with a live marker (one round trip)."""
    if not names:
        return set()
    found = yield Call(DONE, "get_all", (list(dict.fromkeys(names)),), what="read done markers")
    return set(found)


def listed() -> Plan[list[str]]:
    """Every name with a marker (then :func:`remaining` in batches of :data:`VIEW_BATCH`)."""
    return list((yield Call(DONE, "key_set", what="list done markers")))


def remaining(names: Sequence[str]) -> Plan[list[tuple[str, float]]]:
    """(name, seconds left) of the markers of ``names`` still live (one round trip)."""
    views = yield Together(tuple(Call(DONE, "get_entry_view", (n,)) for n in names), "read done markers")
    now = time.time()
    out = []
    for name, view in zip(names, views, strict=True):
        if view is not None:
            left = min(seconds_left(view, now), view.ttl / 1000 - TTL_SLACK)
            if left > 0:
                out.append((name, left))
    return out
