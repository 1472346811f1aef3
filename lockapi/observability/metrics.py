"""The metrics observer: turns core's hooks into updates of the catalogue's metrics on a :class:`Sink`.

The OpenTelemetry and Prometheus adapters differ only in their sink; what is counted, when and with
which labels is decided here, once. Labels are passed as tuples in the order of ``Metric.labels``.
It is a records-only observer (:attr:`lockapi.observers.Observer.records_only`): core hands it each
finished operation and lease end as one tuple, and the hooks only queue that tuple on the sink's queue
(:mod:`lockapi.observability.deferred`); the sink is updated off the caller's thread by one drainer at
a time (so a sink needs no lock of its own), and every reader drains the queue before it reads.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from typing import Protocol

from lockapi.observability.catalogue import (
    ATTEMPTS,
    ERRORS,
    HELD,
    HOLD,
    LOST,
    MISMATCHES,
    OPERATIONS,
    RENEWALS,
    WAIT,
    WAITING,
    Metric,
)
from lockapi.observability.deferred import LIMIT, Deferred, failed
from lockapi.observability.families import Families
from lockapi.observers import DENIED, END_LOST, ERROR, GRANTED, EndRecord, Observer, Record, Signal

ACQUIRES = {"acquire": "lock", "try_acquire": "lock", "permit_acquire": "permit", "permit_try_acquire": "permit",
            "acquire_many": "lock"}
"""Acquire operations and the kind of lease they grant."""
LEASE_OPS = frozenset({"release", "extend", "permit_release", "permit_extend"})
COUNTED = frozenset(ACQUIRES) | LEASE_OPS | {"renew"}
"""The operations this observer counts (plugin steps are left to tracing)."""
MISMATCH_SIGNAL = "migration_mismatch"
"""The signal a migration backend sends per disagreeing record (attributes: op, phase, verdict)."""

Labels = tuple[str, ...]
Update = Callable[[float], None]
"""One metric's update for one label set, bound once: ``update(amount)`` adds or records."""


def adder(values: dict[Labels, float], labels: Labels) -> Update:
    """The bound add of a sink that keeps a counter's ``values`` itself (only its drainer writes them)."""

    def add(amount: float) -> None:
        values[labels] = values.get(labels, 0) + amount

    return add


class Sink(Protocol):
    deferred: Deferred
    """The sink's queue of updates: items are ``(update, fact)``, applied as ``update(fact)``."""

    def add(self, metric: Metric, labels: Labels, amount: float) -> None:
        """Add to a counter or up-down counter."""

    def record(self, metric: Metric, labels: Labels, value: float) -> None:
        """Record one histogram value."""

    def counter(self, metric: Metric, labels: Labels) -> Update:
        """:meth:`add` bound to ``metric`` and ``labels`` (the series appears at its first call)."""

    def histogram(self, metric: Metric, labels: Labels) -> Update:
        """:meth:`record` bound to ``metric`` and ``labels`` (the series appears at its first call)."""


_Finish = tuple[Update, "Update | None", "Update | None"]
"""What one finished operation updates, by (op, backend, family, outcome): its counter, then for an
acquire its wait histogram and, granted, the held gauge."""
_End = tuple[Update, Update, "Update | None"]
"""What one lease end updates, by (backend, kind, family, end, cause): held, hold time, lost (if lost)."""


class MetricsObserver(Observer):
    """Counts what core reports. Plugin steps (``op`` not a core operation) are left to tracing.

    Records-only: core calls ``record``/``record_waiting``/``record_end`` with plain tuples, which are
    queued as they are. Each label set's updates are bound once, on first use (``_finishes``, ``_bound_ends``:
    at most one entry per operation, backend, family and outcome, so bounded like the families):
    applying an operation is then a dict lookup and a few calls, without building labels or looking up
    instruments again.
    """

    records_only = True

    def __init__(self, sink: Sink, families: Families) -> None:
        self.sink = sink
        self.family = families
        self._finishes: dict[tuple[str, str, str, str], _Finish] = {}
        self._bound_ends: dict[tuple[str, str, str, str, str | None], _End] = {}
        self._deferred = sink.deferred
        self.drain = self._deferred.drain
        """Apply every queued update of the sink now (readers call it before they read)."""
        self._put = self._deferred.put  # the hooks' bound methods, made once (not on every operation)
        self._records = self._deferred.channel(self._finish_all)  # the hot hooks append the bare tuples inline
        self._ends = self._deferred.channel(self._lease_ended_all)
        self._family = families.cache.get

    def __repr__(self) -> str:
        return f"<MetricsObserver {type(self.sink).__name__}>"

    # -- hooks: queue only ---------------------------------------------------------------------------
    def record(self, record: Record) -> None:
        if record[0] in COUNTED:
            queue = self._records
            queue.append(record)
            if len(queue) > LIMIT:
                self.drain()

    def record_waiting(self, record: tuple[str, str, str]) -> None:
        self._put((self._waiting, record))

    def record_end(self, record: EndRecord) -> None:
        queue = self._ends
        queue.append(record)
        if len(queue) > LIMIT:
            self.drain()

    def signal(self, signal: Signal) -> None:
        if signal.kind == MISMATCH_SIGNAL:
            self._put((self._mismatch, signal))

    # -- applied off the caller's thread --------------------------------------------------------------
    def _waiting(self, record: tuple[str, str, str]) -> None:
        op, name, backend = record
        self.sink.add(WAITING, (backend, op, self.family(name)), 1)

    def _finish_all(self, queue: deque[Record]) -> None:
        """Apply every queued record (one call per drain: the loop's lookups are made once)."""
        pop, cached, family_of, bound = queue.popleft, self._family, self.family, self._finishes
        while queue:
            record = pop()
            try:
                op, name, backend, outcome, started, ended, waited, _, error, names, granted = record
                if names:
                    self._batch(op, backend, outcome, ended - started, error, names, granted)
                    continue
                family = cached(name) or family_of(name)
                key = (op, backend, family, outcome)
                updates = bound.get(key)
                if updates is None:  # only the drainer runs this: no lock needed
                    updates = bound[key] = self._bind_finish(*key)
                count, wait, held = updates
                count(1)
                if wait is not None:
                    wait(ended - started)
                    if waited is not None:
                        self.sink.add(WAITING, (backend, op, family), -1)
                    if held is not None:
                        held(1)
                if error is not None:
                    self.sink.add(ERRORS, (backend, op, family, type(error).__name__), 1)
            except Exception:
                failed()

    def _bind_finish(self, op: str, backend: str, family: str, outcome: str) -> _Finish:
        sink = self.sink
        kind = ACQUIRES.get(op)
        if kind is not None:
            labels = (backend, op, family, outcome)
            return (sink.counter(ATTEMPTS, labels), sink.histogram(WAIT, labels),
                    sink.counter(HELD, (backend, kind, family)) if outcome == GRANTED else None)
        if op == "renew":
            return sink.counter(RENEWALS, (backend, family, outcome)), None, None
        return sink.counter(OPERATIONS, (backend, op, family, outcome)), None, None

    def _batch(self, op: str, backend: str, outcome: str, seconds: float, error: BaseException | None,
               names: tuple[str, ...], granted_names: tuple[str, ...]) -> None:
        """acquire_many: every name is an attempt; the call's duration is one wait per family."""
        sink, family = self.sink, self.family
        granted = frozenset(granted_names)
        outcomes: Counter[tuple[str, str]] = Counter()
        for name in names:
            outcomes[(family(name), outcome if outcome == ERROR else GRANTED if name in granted else DENIED)] += 1
        for (fam, result), count in outcomes.items():
            labels = (backend, op, fam, result)
            sink.add(ATTEMPTS, labels, count)
            sink.record(WAIT, labels, seconds)
            if result == GRANTED:
                sink.add(HELD, (backend, "lock", fam), count)
            elif result == ERROR and error is not None:
                sink.add(ERRORS, (backend, op, fam, type(error).__name__), count)

    def _lease_ended_all(self, queue: deque[EndRecord]) -> None:
        """Apply every queued lease end."""
        pop, cached, family_of, bound = queue.popleft, self._family, self.family, self._bound_ends
        while queue:
            end = pop()
            try:
                kind, name, backend, _, seconds, how, cause = end
                key = (backend, kind, cached(name) or family_of(name), how, cause)
                updates = bound.get(key)
                if updates is None:
                    updates = bound[key] = self._bind_end(*key)
                held, hold, lost = updates
                held(-1)
                hold(seconds)
                if lost is not None:
                    lost(1)
            except Exception:
                failed()

    def _bind_end(self, backend: str, kind: str, family: str, end: str, cause: str | None) -> _End:
        sink = self.sink
        return (sink.counter(HELD, (backend, kind, family)), sink.histogram(HOLD, (backend, kind, family, end)),
                sink.counter(LOST, (backend, kind, family, cause or "")) if end == END_LOST else None)

    def _mismatch(self, signal: Signal) -> None:
        a = signal.attributes
        self.sink.add(MISMATCHES, (str(a.get("backend", "migration")), str(a.get("op", "")),
                                   self.family(signal.name), str(a.get("phase", "")), str(a.get("verdict", ""))), 1)
