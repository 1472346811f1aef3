"""How far the shadow replay runs behind the application: per-minute lag samples and the lag alarm.

Every replayed operation reports the seconds between its primary decision and the start of its replay
(:meth:`LagMeter.observe`); shed ones report :meth:`LagMeter.dropped`. When a minute ends (checked by
:meth:`LagMeter.tick`, which the record sink runs every 0.2 s) the minute's count, p50/p99/max delay,
stale and dropped counts and the age of the oldest still-queued task go to the record store as one
:class:`LagSample`. A minute in which the replay fell more than ``max_lag`` behind raises the alarm: a
warning in the log (once per minute) and a sample that ``lockapi migrate status`` and the report flag.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable

from lockapi_migration.records.store import LagSample

log = logging.getLogger("lockapi.migration." + __name__.removeprefix("lockapi_migration."))

MAX_LAG = 1.0
"""Default seconds a replay may run behind its primary decision before it is "stale, not compared"."""
RESERVOIR = 20_000
"""Delays kept per minute for the percentiles (a uniform sample beyond that)."""


def alarming(sample: LagSample) -> bool:
    """True if the replay of ``sample``'s minute fell behind its node's ``max_lag`` (or shed load)."""
    return bool(sample.stale or sample.dropped or sample.max > sample.max_lag or sample.backlog > sample.max_lag)


class LagMeter:
    """Collects one node's replay delays and publishes a :class:`LagSample` per minute (thread-safe)."""

    def __init__(self, node: str, max_lag: float, publish: Callable[[LagSample], None], *,
                 backlog: Callable[[], float] = lambda: 0.0, clock: Callable[[], float] = time.time) -> None:
        self.node = node
        self.max_lag = max_lag
        self._publish = publish
        self._backlog = backlog
        self._clock = clock
        self._lock = threading.Lock()
        self._minute = self._minute_of(clock())
        self._delays: list[float] = []
        self._count = self._stale = self._dropped = 0
        self._max = 0.0

    @staticmethod
    def _minute_of(ts: float) -> float:
        return math.floor(ts / 60.0) * 60.0

    def observe(self, delay: float, *, stale: bool) -> None:
        with self._lock:
            self._count += 1
            self._stale += stale
            self._max = max(self._max, delay)
            if len(self._delays) < RESERVOIR:
                self._delays.append(delay)
            else:
                slot = random.randrange(self._count)
                if slot < RESERVOIR:
                    self._delays[slot] = delay

    def dropped(self) -> None:
        with self._lock:
            self._dropped += 1

    def tick(self) -> None:
        """Publish the minute that has ended, if one has."""
        if self._minute_of(self._clock()) != self._minute:
            self.flush()

    def flush(self) -> None:
        """Publish what this minute has so far and start a new sample (at shutdown, or from :meth:`tick`)."""
        backlog = self._backlog()
        with self._lock:
            delays, count, stale, dropped, top = self._delays, self._count, self._stale, self._dropped, self._max
            minute = self._minute
            self._minute = self._minute_of(self._clock())
            self._delays, self._count, self._stale, self._dropped, self._max = [], 0, 0, 0, 0.0
        if not (count or dropped or backlog):
            return
        delays.sort()
        sample = LagSample(self.node, minute, count, _rank(delays, 0.5), _rank(delays, 0.99), top, stale,
                           dropped, backlog, self.max_lag)
        if alarming(sample):
            log.warning("lockapi migration: LAG ALARM on %s: the shadow replay ran up to %.2f s behind (p99 %.3f s, "
                        "backlog %.2f s; limit max_lag=%.2f s): %d replays recorded stale, %d dropped this minute",
                        self.node, top, sample.p99, backlog, self.max_lag, stale, dropped,
                        extra={"lockapi_event": "migration_lag_alarm", "lockapi_node": self.node,
                               "lockapi_lag_max": top, "lockapi_lag_p99": sample.p99, "lockapi_backlog": backlog,
                               "lockapi_max_lag": self.max_lag, "lockapi_stale": stale, "lockapi_dropped": dropped})
        self._publish(sample)


def _rank(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return values[max(0, min(len(values) - 1, math.ceil(q * len(values)) - 1))]
