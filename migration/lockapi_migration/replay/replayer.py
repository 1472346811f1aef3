"""The replay of one operation on the shadow backend, and the record of both sides.

:class:`ShadowStrategy` decides on the primary and hands the replay to a :class:`ReplayQueue` as a
:class:`Replayer` method and plain arguments; the method then runs on a replay worker. How each
operation is replayed, given the primary's decision:

* acquire, primary granted: make sure the shadow's fencing counter is above the primary's token, then
  try the shadow; a shadow grant is remembered (holder -> shadow token) for the shadow release/extend;
* acquire, primary denied: try the shadow anyway; a shadow grant is released there at once (the shadow
  never holds what the primary does not) - that is the mismatch the record shows;
* release/extend: with the shadow's own token for that lease; done markers: written or read the same.

**Fewer round trips.** The counter floor is skipped when this node already knows the shadow's counter
is at or above the primary's token (the shadow issued such a token to it within :data:`FLOOR_MEMORY`
seconds; counters only go up), so a steady replay costs one shadow call per operation, not two.

**Bounded lag.** A replay that starts more than ``max_lag`` seconds after its primary decision is
*stale*: its decision would be compared with a world that has moved on. A stale acquire, batch or
marker read is not replayed at all (load shed; recorded "stale, not compared"); a stale release,
extend or marker write still runs (it keeps the shadow's state right) but is not compared either.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from lockapi.spi import Backend, LockError
from lockapi_migration.records.model import (
    ABSENT,
    DENIED,
    DONE,
    DROPPED,
    GRANTED,
    NOT_ASKED,
    STALE,
    Side,
    attempt_side,
    bool_side,
    done_side,
    granted_side,
    ok_side,
    timed,
)
from lockapi_migration.replay.lag import LagMeter
from lockapi_migration.strategies.operations import KINDS, LOCK, Kind, Recorder
from lockapi_migration.strategies.tokens import TokenMap

Row = tuple[str, Side, Side, str]
"""One recorded name: (name, primary side, shadow side, detail)."""

FLOOR_MEMORY = 30.0
"""Seconds a known lower bound of the shadow's fencing counter is trusted (then it is floored again,
which also repairs a shadow that lost its counters)."""


def done_rows(names: Sequence[str], p_side: Side, p_done: set[str] | None, s_side: Side,
              s_done: set[str] | None) -> list[Row]:
    """Per-name rows for a done-marker read on both sides (a side whose read failed keeps its error)."""
    def side(base: Side, found: set[str] | None, name: str) -> Side:
        if found is None:
            return base
        return Side(DONE if name in found else ABSENT, latency=base.latency)

    return [(n, side(p_side, p_done, n), side(s_side, s_done, n), "") for n in names]


class FloorMemory:
    """Known lower bounds of a backend's fencing counters, per (kind, name), bounded and expiring."""

    def __init__(self, capacity: int = 100_000, ttl: float = FLOOR_MEMORY) -> None:
        self._capacity = capacity
        self._ttl = ttl
        self._known: collections.OrderedDict[tuple[str, str], tuple[int, float]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def covers(self, kind: Kind, name: str, token: int) -> bool:
        """True if the backend's next token for ``name`` is known to be greater than ``token``."""
        with self._lock:
            known = self._known.get((kind.label, name))
        return known is not None and known[0] >= token and known[1] > time.monotonic()

    def saw(self, kind: Kind, name: str, token: int) -> None:
        """The backend's counter for ``name`` is now at least ``token`` (it just issued it, or was just
        floored to it). The latest evidence wins, so a counter the backend lost is floored again."""
        key = (kind.label, name)
        with self._lock:
            self._known[key] = (token, time.monotonic() + self._ttl)
            self._known.move_to_end(key)
            while len(self._known) > self._capacity:
                self._known.popitem(last=False)


class Replayer:
    """Runs replays on the shadow backend (on replay workers) and records both sides."""

    def __init__(self, primary: Callable[[], Backend | None], shadow: Backend, primary_label: str,
                 shadow_label: str, recorder: Recorder, lag: LagMeter, *, floor: bool) -> None:
        self._primary = primary
        """The primary backend, on demand (only for the done markers behind a differing batch decision;
        None when this process cannot reach it)."""
        self._s = shadow
        self._plabel = primary_label
        self._slabel = shadow_label
        self._recorder = recorder
        self._lag = lag
        self._floor = floor
        self._floors = FloorMemory()
        self.tokens = TokenMap()
        """(kind, name, holder) -> the shadow's token for a lease the shadow granted too."""

    @property
    def max_lag(self) -> float:
        return self._lag.max_lag

    def record(self, op: str, holder: str, ttl: float | None, rows: Sequence[Row], ts: float,
               delay: float | None = None) -> None:
        for name, p, s, detail in rows:
            self._recorder.record_sides(self._plabel, op, name, holder, ttl, p, s, delay=delay, detail=detail,
                                        ts=ts)

    def shed(self, method: str, args: tuple[Any, ...]) -> None:
        """Record that the replay ``method(submitted, *args)`` was dropped (the queue was full)."""
        self._lag.dropped()
        dropped = Side(error=DROPPED)
        if method == "acquire":
            kind_label, name, holder, ttl, _, p_side, ts = args
            self.record(KINDS[kind_label].op("acquire"), holder, ttl, [(name, p_side, dropped, "")], ts)
        elif method == "lease":
            kind_label, verb, name, holder, ttl, p_side, ts = args
            self.record(KINDS[kind_label].op(verb), holder, ttl, [(name, p_side, dropped, "")], ts)
        elif method == "acquire_many":
            names, holder, ttl, _, p_rows, ts = args
            self.record("acquire_many", holder, ttl, [(n, p_rows[n], dropped, "") for n in names], ts)
        elif method == "mark_done":
            name, ttl, p_side, ts = args
            self.record("mark_done", "", ttl, [(name, p_side, dropped, "")], ts)
        elif method == "done":
            names, p_side, p_done, ts = args
            rows = done_rows(names, p_side, p_done, NOT_ASKED, None)
            self.record("done", "", None, [(n, p, dropped, "") for n, p, _, _ in rows], ts)

    def _start(self, submitted: float) -> tuple[float, bool]:
        delay = time.monotonic() - submitted
        stale = delay > self._lag.max_lag
        self._lag.observe(delay, stale=stale)
        return delay, stale

    # -- locks and semaphores ----------------------------------------------------------------------
    def acquire(self, submitted: float, kind_label: str, name: str, holder: str, ttl: float, permits: int,
                p_side: Side, ts: float) -> None:
        kind = KINDS[kind_label]
        delay, stale = self._start(submitted)
        op = kind.op("acquire")
        if stale:
            self.record(op, holder, ttl, [(name, p_side, NOT_ASKED, STALE)], ts, delay)
            return
        p_token = p_side.token
        if p_token is not None and self._floor and not self._floors.covers(kind, name, p_token):
            with contextlib.suppress(LockError):  # the acquire below records the shadow's trouble
                kind.floor(self._s, name, p_token)
                self._floors.saw(kind, name, p_token)
        side, attempt, _ = timed(lambda: kind.acquire(self._s, name, holder, ttl, permits), attempt_side)
        if attempt is not None and attempt.token is not None:
            self._floors.saw(kind, name, attempt.token)
            if p_token is None:
                kind.undo(self._s, name, holder, attempt.token)
            else:
                self.tokens.put((kind.label, name, holder), attempt.token, ttl)
        self.record(op, holder, ttl, [(name, p_side, side, "")], ts, delay)

    def lease(self, submitted: float, kind_label: str, verb: str, name: str, holder: str, ttl: float | None,
              p_side: Side, ts: float) -> None:
        """Release or extend (``ttl`` given) with the shadow's own token for the lease."""
        kind = KINDS[kind_label]
        delay, stale = self._start(submitted)
        op, key = kind.op(verb), (kind.label, name, holder)
        s_token = self.tokens.get(key) if ttl is not None else self.tokens.pop(key)
        if s_token is None:
            self.record(op, holder, ttl, [(name, p_side, NOT_ASKED, "shadow not held")], ts, delay)
            return
        if ttl is None:
            side, ok, _ = timed(lambda: kind.release(self._s, name, holder, s_token), bool_side)
        else:
            side, ok, _ = timed(lambda: kind.extend(self._s, name, holder, s_token, ttl), bool_side)
            if ok:
                self.tokens.put(key, s_token, ttl)
        self.record(op, holder, ttl, [(name, p_side, side, STALE if stale else "")], ts, delay)

    # -- batches -----------------------------------------------------------------------------------
    def acquire_many(self, submitted: float, names: list[str], holder: str, ttl: float, skip_done: bool,
                     p_rows: dict[str, Side], ts: float) -> None:
        delay, stale = self._start(submitted)
        if stale:
            self.record("acquire_many", holder, ttl, [(n, p_rows[n], NOT_ASKED, STALE) for n in names], ts, delay)
            return
        if self._floor:
            with contextlib.suppress(LockError):
                for name in names:
                    token = p_rows[name].token
                    if token is not None and not self._floors.covers(LOCK, name, token):
                        LOCK.floor(self._s, name, token)
                        self._floors.saw(LOCK, name, token)
        s_side, s_granted, _ = timed(
            lambda: self._s.try_acquire_many(names, holder, ttl, skip_done=skip_done), granted_side)
        if s_granted is None:
            self.record("acquire_many", holder, ttl, [(n, p_rows[n], s_side, "") for n in names], ts, delay)
            return
        for name, token in s_granted.items():
            self._floors.saw(LOCK, name, token)
            if p_rows[name].token is None:
                LOCK.undo(self._s, name, holder, token)
            else:
                self.tokens.put((LOCK.label, name, holder), token, ttl)
        differ = [n for n in names if (n in s_granted) != (p_rows[n].token is not None)]
        details = self._marker_details(differ) if skip_done and differ else {}
        rows = [(n, p_rows[n], Side(GRANTED, s_granted[n], s_side.latency) if n in s_granted
                 else Side(DENIED, latency=s_side.latency), details.get(n, "")) for n in names]
        self.record("acquire_many", holder, ttl, rows, ts, delay)

    def _marker_details(self, names: list[str]) -> dict[str, str]:
        """For names the two sides decided differently with ``skip_done``: which side has a done marker."""
        found: dict[str, str] = {}
        for backend, label in ((self._primary(), self._plabel), (self._s, self._slabel)):
            if backend is None:
                continue
            with contextlib.suppress(LockError):
                for name in backend.done(names):
                    found[name] = found.get(name, "") + label
        return {name: f"done:{''.join(sorted(labels))}" for name, labels in found.items()}

    # -- done markers ------------------------------------------------------------------------------
    def mark_done(self, submitted: float, name: str, ttl: float, p_side: Side, ts: float) -> None:
        delay, stale = self._start(submitted)  # written even when stale: markers must reach both
        side, _, _ = timed(lambda: self._s.mark_done(name, ttl), ok_side)
        self.record("mark_done", "", ttl, [(name, p_side, side, STALE if stale else "")], ts, delay)

    def done(self, submitted: float, names: list[str], p_side: Side, p_done: set[str], ts: float) -> None:
        delay, stale = self._start(submitted)
        if stale:
            rows = done_rows(names, p_side, p_done, NOT_ASKED, None)
            self.record("done", "", None, [(n, p, NOT_ASKED, STALE) for n, p, _, _ in rows], ts, delay)
            return
        s_side, s_done, _ = timed(lambda: self._s.done(names), done_side)
        self.record("done", "", None, done_rows(names, p_side, p_done, s_side, s_done), ts, delay)
