"""The metrics observer: turns core's hooks into updates of the catalogue's metrics on a :class:`Sink`.

The OpenTelemetry and Prometheus adapters differ only in their sink; what is counted, when and with
which labels is decided here, once. Labels are passed as tuples in the order of ``Metric.labels``.
The hooks only queue what happened on the sink's queue (:mod:`lockapi.observability.deferred`); the
sink is updated off the caller's thread by one drainer at a time (so a sink needs no lock of its own),
and every reader drains the queue before it reads.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

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
from lockapi.observability.deferred import Deferred
from lockapi.observability.families import Families
from lockapi.observers import DENIED, END_LOST, ERROR, GRANTED, LeaseEnd, Observer, Operation, Signal

ACQUIRES = {"acquire": "lock", "try_acquire": "lock", "permit_acquire": "permit", "permit_try_acquire": "permit",
            "acquire_many": "lock"}
"""Acquire operations and the kind of lease they grant."""
LEASE_OPS = frozenset({"release", "extend", "permit_release", "permit_extend"})
COUNTED = frozenset(ACQUIRES) | LEASE_OPS | {"renew"}
"""The operations this observer counts (plugin steps are left to tracing)."""
MISMATCH_SIGNAL = "migration_mismatch"
"""The signal a migration backend sends per disagreeing record (attributes: op, phase, verdict)."""

Labels = tuple[str, ...]


class Sink(Protocol):
    deferred: Deferred
    """The sink's queue of updates: items are ``(update, fact)``; applied by ``update(fact)``."""

    def add(self, metric: Metric, labels: Labels, amount: float) -> None:
        """Add to a counter or up-down counter."""

    def record(self, metric: Metric, labels: Labels, value: float) -> None:
        """Record one histogram value."""


class MetricsObserver(Observer):
    """Counts what core reports. Plugin steps (``op`` not a core operation) are left to tracing."""

    def __init__(self, sink: Sink, families: Families) -> None:
        self.sink = sink
        self.family = families
        self._deferred = sink.deferred
        self.drain = self._deferred.drain
        """Apply every queued update of the sink now (readers call it before they read)."""

    def __repr__(self) -> str:
        return f"<MetricsObserver {type(self.sink).__name__}>"

    # -- hooks: queue only ---------------------------------------------------------------------------
    def waiting(self, op: Operation, state: Any) -> None:
        self._deferred.put((self._waiting, op))

    def finish(self, op: Operation, state: Any) -> None:
        if op.op in COUNTED:
            self._deferred.put((self._finish, op))

    def lease_ended(self, end: LeaseEnd) -> None:
        self._deferred.put((self._lease_ended, end))

    def signal(self, signal: Signal) -> None:
        if signal.kind == MISMATCH_SIGNAL:
            self._deferred.put((self._mismatch, signal))

    # -- applied off the caller's thread --------------------------------------------------------------
    def _waiting(self, op: Operation) -> None:
        self.sink.add(WAITING, (op.backend, op.op, self.family(op.name)), 1)

    def _finish(self, op: Operation) -> None:
        kind = ACQUIRES.get(op.op)
        sink, backend = self.sink, op.backend
        if op.names:
            self._batch(op)
            return
        family = self.family(op.name)
        if kind is not None:
            labels = (backend, op.op, family, op.outcome)
            sink.add(ATTEMPTS, labels, 1)
            sink.record(WAIT, labels, op.seconds)
            if op.waited is not None:
                sink.add(WAITING, (backend, op.op, family), -1)
            if op.outcome == GRANTED:
                sink.add(HELD, (backend, kind, family), 1)
        elif op.op == "renew":
            sink.add(RENEWALS, (backend, family, op.outcome), 1)
        else:
            sink.add(OPERATIONS, (backend, op.op, family, op.outcome), 1)
        if op.error is not None:
            sink.add(ERRORS, (backend, op.op, family, type(op.error).__name__), 1)

    def _batch(self, op: Operation) -> None:
        """acquire_many: every name is an attempt; the call's duration is one wait per family."""
        sink, backend, family = self.sink, op.backend, self.family
        granted = frozenset(op.granted)
        outcomes: Counter[tuple[str, str]] = Counter()
        for name in op.names:
            outcome = op.outcome if op.outcome == ERROR else GRANTED if name in granted else DENIED
            outcomes[(family(name), outcome)] += 1
        for (fam, outcome), count in outcomes.items():
            labels = (backend, op.op, fam, outcome)
            sink.add(ATTEMPTS, labels, count)
            sink.record(WAIT, labels, op.seconds)
            if outcome == GRANTED:
                sink.add(HELD, (backend, "lock", fam), count)
            elif outcome == ERROR and op.error is not None:
                sink.add(ERRORS, (backend, op.op, fam, type(op.error).__name__), count)

    def _lease_ended(self, end: LeaseEnd) -> None:
        family = self.family(end.name)
        self.sink.add(HELD, (end.backend, end.kind, family), -1)
        self.sink.record(HOLD, (end.backend, end.kind, family, end.end), end.held)
        if end.end == END_LOST:
            self.sink.add(LOST, (end.backend, end.kind, family, end.cause or ""), 1)

    def _mismatch(self, signal: Signal) -> None:
        a = signal.attributes
        self.sink.add(MISMATCHES, (str(a.get("backend", "migration")), str(a.get("op", "")),
                                   self.family(signal.name), str(a.get("phase", "")), str(a.get("verdict", ""))), 1)
