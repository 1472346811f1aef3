"""What the phase strategies share: lock/semaphore operations as values, and the recorder."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from lockapi.spi import Attempt, Backend, Call, LockError, signal
from lockapi_migration.phases import H
from lockapi_migration.records.model import Record, Side
from lockapi_migration.records.sink import RecordSink
from lockapi_migration.tooling.classify import Verdict, raw_verdict


@dataclass(frozen=True, slots=True)
class Kind:
    """Locks or semaphores: the same four SPI calls under different names.

    ``permits`` is the semaphore size (ignored for locks); ``queue_ttl`` only applies to locks.
    """

    label: str
    semaphore: bool

    def op(self, verb: str) -> str:
        return f"permit_{verb}" if self.semaphore else verb

    def acquire(self, backend: Backend, name: str, holder: str, ttl: float, permits: int,
                queue_ttl: float | None = None) -> Attempt:
        if self.semaphore:
            return backend.try_acquire_permit(name, permits, holder, ttl)
        return backend.try_acquire(name, holder, ttl, queue_ttl=queue_ttl)

    def release(self, backend: Backend, name: str, holder: str, token: int) -> bool:
        if self.semaphore:
            return backend.release_permit(name, holder, token)
        return backend.release(name, holder, token)

    def extend(self, backend: Backend, name: str, holder: str, token: int, ttl: float) -> bool:
        if self.semaphore:
            return backend.extend_permit(name, holder, token, ttl)
        return backend.extend(name, holder, token, ttl)

    def holds(self, backend: Backend, name: str, holder: str, token: int) -> bool:
        if self.semaphore:
            return backend.holds_permit(name, holder, token)
        return backend.holds(name, holder, token)

    def undo(self, backend: Backend, name: str, holder: str, token: int) -> None:
        """Release a grant that must not stand; errors are ignored (the grant then expires by its ttl)."""
        with contextlib.suppress(LockError):
            self.release(backend, name, holder, token)

    def floor(self, backend: Backend, name: str, token: int) -> None:
        """Make ``backend``'s next token for ``name`` greater than ``token``."""
        backend.set_fence_floor(name, token, semaphore=self.semaphore)

    # the same calls as data, for Backend.run_calls (the shadow's replay sends them in batches)
    def acquire_call(self, name: str, holder: str, ttl: float, permits: int) -> Call:
        if self.semaphore:
            return ("try_acquire_permit", (name, permits, holder, ttl), {})
        return ("try_acquire", (name, holder, ttl), {})

    def release_call(self, name: str, holder: str, token: int) -> Call:
        return ("release_permit" if self.semaphore else "release", (name, holder, token), {})

    def extend_call(self, name: str, holder: str, token: int, ttl: float) -> Call:
        return ("extend_permit" if self.semaphore else "extend", (name, holder, token, ttl), {})

    def floor_call(self, name: str, token: int) -> Call:
        return ("set_fence_floor", (name, token), {"semaphore": self.semaphore})


LOCK = Kind("lock", False)
SEMAPHORE = Kind("sem", True)
KINDS = {kind.label: kind for kind in (LOCK, SEMAPHORE)}
"""Kinds by label (replay tasks carry the label, a plain string)."""


_QUIET = frozenset({Verdict.AGREE, Verdict.UNCOMPARED, Verdict.NOISE})


class Recorder:
    """Builds records for one node and phase and hands them to the sink (never blocks)."""

    def __init__(self, sink: RecordSink, node: str, phase: str) -> None:
        self.sink = sink
        self.node = node
        self.phase = phase

    def record(self, op: str, name: str, holder: str, ttl: float | None, h: Side, r: Side,
               *, delay: float | None = None, detail: str = "", ts: float | None = None) -> None:
        record = Record(time.time() if ts is None else ts, self.node, self.phase, op, name, holder, ttl,
                        h, r, delay, detail)
        self.sink.put(record)
        verdict = raw_verdict(record)
        if verdict not in _QUIET:  # metrics: lockapi.migration.mismatches (before the noise analysis)
            signal("migration_mismatch", name, backend="migration", op=op, phase=self.phase, verdict=verdict.value)

    def record_sides(self, primary: str, op: str, name: str, holder: str, ttl: float | None, p: Side,
                     s: Side, *, delay: float | None = None, detail: str = "", ts: float | None = None) -> None:
        """Record with sides given as (primary, shadow); ``primary`` is the primary's label (H or R)."""
        h, r = (p, s) if primary == H else (s, p)
        self.record(op, name, holder, ttl, h, r, delay=delay, detail=detail, ts=ts)
