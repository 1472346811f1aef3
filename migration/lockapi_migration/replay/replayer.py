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
from collections.abc import Callable, Generator, Sequence
from typing import Any

from lockapi.spi import Backend, Call, LockError
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
    outcome_side,
)
from lockapi_migration.replay.lag import LagMeter
from lockapi_migration.replay.queue import several_names
from lockapi_migration.strategies.operations import KINDS, LOCK, Kind, Recorder
from lockapi_migration.strategies.tokens import TokenMap

Ask = tuple[Call, bool]
"""What a replay plan yields: the shadow call to make next, and whether it is *final* (the plan's last
call, and the next replay of the same name does not depend on its answer)."""
Answer = tuple[Any, float]
"""What a plan is sent back: the call's result or its LockError, and the round trip's seconds."""
Plan = Generator[Ask, Answer, None]
"""One replay as a generator (each replay method of :class:`Replayer` returns one; :meth:`Replayer.drive`
runs them)."""
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

    # -- running replays ---------------------------------------------------------------------------
    def drive(self, plans: Sequence[tuple[str, Plan]], failed: Callable[[BaseException], None]) -> None:
        """Run replay plans (``(key, plan)`` in submission order; those of one key one after the other)
        in waves: each wave sends the next shadow call of every running plan as ONE
        :meth:`~lockapi.spi.Backend.run_calls` batch (one round trip on Redis), then hands each plan its
        answer. A plan whose call is *final* (its last, and nothing the next replay of its name reads
        depends on the answer: a release, a marker) lets that next replay start in the same wave, after
        it in the batch: the shadow runs them in that order. ``failed`` is told of a plan that raised."""
        waiting: dict[str, collections.deque[Plan]] = {}
        for key, plan in plans:
            waiting.setdefault(key, collections.deque()).append(plan)
        wave: list[tuple[str, Plan, Ask]] = []

        def advance(key: str, plan: Plan | None, answer: Answer | None) -> None:
            """Hand ``plan`` its answer (None: start it); queue its next call, or start the key's next plan
            (``plan`` None: just that)."""
            while True:
                if plan is not None:
                    try:
                        ask = plan.send(answer)  # type: ignore[arg-type]  # None starts a plan
                    except StopIteration:
                        ask = None
                    except Exception as exc:  # a replay must never stop the others
                        failed(exc)
                        ask = None
                    if ask is not None:
                        wave.append((key, plan, ask))
                        if not ask[1]:
                            return
                queue = waiting[key]
                if not queue:
                    return
                plan, answer = queue.popleft(), None

        for key, queue in waiting.items():
            advance(key, queue.popleft(), None)
        while wave:
            current, wave = wave, []
            started = time.perf_counter()
            try:
                outcomes = self._s.run_calls([ask[0] for _, _, ask in current])
            except Exception as exc:  # not a LockError (those are outcomes): every plan of the wave failed
                for _, plan, _ in current:
                    failed(exc)
                    plan.close()
                for key in dict.fromkeys(key for key, _, _ in current):
                    advance(key, None, None)  # the replays queued behind them still run
                continue
            latency = time.perf_counter() - started
            for (key, plan, ask), outcome in zip(current, outcomes, strict=True):
                if ask[1]:  # final: the plan ends here, the key's next plan is already running
                    try:
                        plan.send((outcome, latency))
                        failed(RuntimeError("a replay asked for a call after its final one"))
                    except StopIteration:
                        pass
                    except Exception as exc:
                        failed(exc)
                else:
                    advance(key, plan, (outcome, latency))

    # -- locks and semaphores ----------------------------------------------------------------------
    def acquire(self, submitted: float, kind_label: str, name: str, holder: str, ttl: float, permits: int,
                p_side: Side, ts: float) -> Plan:
        kind = KINDS[kind_label]
        delay, stale = self._start(submitted)
        op = kind.op("acquire")
        if stale:
            self.record(op, holder, ttl, [(name, p_side, NOT_ASKED, STALE)], ts, delay)
            return
        p_token = p_side.token
        if p_token is not None and self._floor and not self._floors.covers(kind, name, p_token):
            floored, _ = yield kind.floor_call(name, p_token), False
            if not isinstance(floored, LockError):  # else the acquire below records the shadow's trouble
                self._floors.saw(kind, name, p_token)
        attempt, latency = yield kind.acquire_call(name, holder, ttl, permits), False
        side = outcome_side(attempt, latency, attempt_side)
        token = None if isinstance(attempt, LockError) else attempt.token
        if token is not None:
            self._floors.saw(kind, name, token)
            if p_token is not None:
                self.tokens.put((kind.label, name, holder), token, ttl)
        self.record(op, holder, ttl, [(name, p_side, side, "")], ts, delay)
        if token is not None and p_token is None:
            yield kind.release_call(name, holder, token), True  # undo; an error leaves it to expire by its ttl

    def lease(self, submitted: float, kind_label: str, verb: str, name: str, holder: str, ttl: float | None,
              p_side: Side, ts: float) -> Plan:
        """Release or extend (``ttl`` given) with the shadow's own token for the lease."""
        kind = KINDS[kind_label]
        delay, stale = self._start(submitted)
        op, key = kind.op(verb), (kind.label, name, holder)
        s_token = self.tokens.get(key) if ttl is not None else self.tokens.pop(key)
        if s_token is None:
            self.record(op, holder, ttl, [(name, p_side, NOT_ASKED, "shadow not held")], ts, delay)
            return
        if ttl is None:
            ok, latency = yield kind.release_call(name, holder, s_token), True
        else:
            ok, latency = yield kind.extend_call(name, holder, s_token, ttl), False
            if ok is True:
                self.tokens.put(key, s_token, ttl)
        side = outcome_side(ok, latency, bool_side)
        self.record(op, holder, ttl, [(name, p_side, side, STALE if stale else "")], ts, delay)

    # -- batches -----------------------------------------------------------------------------------
    @several_names
    def acquire_many(self, submitted: float, names: list[str], holder: str, ttl: float, skip_done: bool,
                     p_rows: dict[str, Side], ts: float) -> Plan:
        delay, stale = self._start(submitted)
        if stale:
            self.record("acquire_many", holder, ttl, [(n, p_rows[n], NOT_ASKED, STALE) for n in names], ts, delay)
            return
        if self._floor:
            for name in names:
                token = p_rows[name].token
                if token is not None and not self._floors.covers(LOCK, name, token):
                    floored, _ = yield LOCK.floor_call(name, token), False
                    if isinstance(floored, LockError):
                        break
                    self._floors.saw(LOCK, name, token)
        granted, latency = yield ("try_acquire_many", (names, holder, ttl), {"skip_done": skip_done}), False
        s_side = outcome_side(granted, latency, granted_side)
        if isinstance(granted, LockError):
            self.record("acquire_many", holder, ttl, [(n, p_rows[n], s_side, "") for n in names], ts, delay)
            return
        s_granted: dict[str, int] = granted
        for name, token in s_granted.items():
            self._floors.saw(LOCK, name, token)
            if p_rows[name].token is None:
                yield LOCK.release_call(name, holder, token), False  # undo; an error: it expires by its ttl
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
    def mark_done(self, submitted: float, name: str, ttl: float, p_side: Side, ts: float) -> Plan:
        delay, stale = self._start(submitted)  # written even when stale: markers must reach both
        outcome, latency = yield ("mark_done", (name, ttl), {}), True
        side = outcome_side(outcome, latency, ok_side)
        self.record("mark_done", "", ttl, [(name, p_side, side, STALE if stale else "")], ts, delay)

    @several_names
    def done(self, submitted: float, names: list[str], p_side: Side, p_done: set[str], ts: float) -> Plan:
        delay, stale = self._start(submitted)
        if stale:
            rows = done_rows(names, p_side, p_done, NOT_ASKED, None)
            self.record("done", "", None, [(n, p, NOT_ASKED, STALE) for n, p, _, _ in rows], ts, delay)
            return
        found, latency = yield ("done", (names,), {}), True
        s_side = outcome_side(found, latency, done_side)
        s_done = None if isinstance(found, LockError) else found
        self.record("done", "", None, done_rows(names, p_side, p_done, s_side, s_done), ts, delay)
