"""Classifying decision records: agreement, the mismatch classes, errors, and timing noise.

Raw class of one record (H = source, R = target, whatever the phase's primary is):

* ``false_grant``: an acquire H denied and R granted - the dangerous one (R alone would have let two
  holders in);
* ``false_deny``: an acquire H granted and R denied;
* ``lease_diverged``: a release/extend that one side still held and the other did not;
* ``marker_mismatch``: a done-marker read (or a batch with ``skip_done``) where only one side has the
  marker - expected before ``migrate backfill``, dangerous after it;
* ``error_h`` / ``error_r`` / ``timeout_h`` / ``timeout_r``: that side raised (or timed out);
* ``dropped``: the shadow queue was full, the shadow side never ran;
* ``stale``: the shadow side ran more than ``max_lag`` seconds after the primary decision (the node
  marks it, and the report marks any record whose ``shadow_delay`` exceeds its own ``max_lag``), so it
  is not compared: a lagging shadow compares decisions about a world that has moved on;
* ``agree``, or ``uncompared`` when only one side was asked (dual denies on H before asking R).

A false grant, false deny or lease divergence is re-classified as ``noise`` when it is explained by
timing rather than by a difference between the backends:

* near expiry: the denying side's holder had at most ``window`` + shadow delay seconds left;
* hand-off: another holder changed the name's state (a grant or a release on either side) within
  ``window`` seconds around the two decisions (the shadow side runs later than the primary);
* echo: another holder's lease on the name, still within its ttl, had been granted by one side only
  (an earlier mismatch, already counted, leaves the two backends in different states).

A marker mismatch is ``noise`` when a ``mark_done`` of that name (by any node) was decided at most
``window`` seconds after it and had not yet reached the shadow (its own replay delay plus ``window``)
when this record was decided: the marker was on its way.

Shadowing a backend against itself (two stores of one kind) measures this noise floor.
"""

from __future__ import annotations

import bisect
import enum
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from lockapi_migration.records.model import ABSENT, DENIED, DONE, DROPPED, FALSE, GRANTED, STALE, TRUE, Record, Side

NOISE_WINDOW = 0.5
"""Default seconds around a hand-off or expiry within which a mismatch counts as timing noise."""


class Verdict(enum.Enum):
    """The class of one record (see the module docstring; :data:`EXPLAIN` has one line per class)."""

    AGREE = "agree"
    FALSE_GRANT = "false_grant"
    FALSE_DENY = "false_deny"
    LEASE_DIVERGED = "lease_diverged"
    MARKER_MISMATCH = "marker_mismatch"
    NOISE = "noise"
    ERROR_H = "error_h"
    ERROR_R = "error_r"
    TIMEOUT_H = "timeout_h"
    TIMEOUT_R = "timeout_r"
    DROPPED = "dropped"
    STALE = "stale"
    UNCOMPARED = "uncompared"

    @property
    def is_mismatch(self) -> bool:
        return self in MISMATCHES

    @property
    def is_error(self) -> bool:
        return self in ERRORS


MISMATCHES = frozenset({Verdict.FALSE_GRANT, Verdict.FALSE_DENY, Verdict.LEASE_DIVERGED,
                        Verdict.MARKER_MISMATCH})
ERRORS = frozenset({Verdict.ERROR_H, Verdict.ERROR_R, Verdict.TIMEOUT_H, Verdict.TIMEOUT_R, Verdict.DROPPED})
TIMING = frozenset({Verdict.FALSE_GRANT, Verdict.FALSE_DENY, Verdict.LEASE_DIVERGED})


def _is_timeout(error: str) -> bool:
    text = error.lower()
    return "timed out" in text or "timeout" in text


def _error_verdict(h: Side, r: Side) -> Verdict | None:
    if DROPPED in (h.error, r.error):
        return Verdict.DROPPED
    for side, (err, slow) in ((h, (Verdict.ERROR_H, Verdict.TIMEOUT_H)), (r, (Verdict.ERROR_R, Verdict.TIMEOUT_R))):
        if side.error is not None:
            return slow if _is_timeout(side.error) else err
    return None


EXPLAIN: dict[Verdict, str] = {
    Verdict.AGREE: "both backends decided the same.",
    Verdict.FALSE_GRANT: "H denied and R granted: R alone would have let two holders in. Blocks every "
                         "advance beyond the allowed count (default 0).",
    Verdict.FALSE_DENY: "H granted and R denied: the application would wait or skip more on R. Blocks when "
                        "the rate over compared acquires exceeds the bound (default 0.1%).",
    Verdict.LEASE_DIVERGED: "a release or extend that one side still held and the other did not (a lease "
                            "lost on one side). Counted with the mismatches; investigate the examples.",
    Verdict.MARKER_MISMATCH: "a done marker on one side only. Expected for markers written before shadow began "
                             "and until `migrate backfill` ran; after the backfill it blocks advancing from "
                             "dual or cutover.",
    Verdict.NOISE: "a difference explained by timing (an expiry or a hand-off within the noise window, or a "
                   "done marker still on its way to the shadow): kept apart, never blocks.",
    Verdict.ERROR_H: "H raised an error. Counted in the error rate (blocks above 1% by default).",
    Verdict.ERROR_R: "R raised an error. Counted in the error rate (blocks above 1% by default).",
    Verdict.TIMEOUT_H: "H timed out. Counted in the error rate.",
    Verdict.TIMEOUT_R: "R timed out. Counted in the error rate.",
    Verdict.DROPPED: "the shadow queue was full and the replay was shed. Counted in the error rate; "
                     "a steady stream means R is too slow for the load.",
    Verdict.STALE: "the replay ran more than max_lag behind the application, so it was not compared (not "
                   "counted as agreement). Blocks when the replay's lag exceeds --max-lag.",
    Verdict.UNCOMPARED: "only one side was asked (dual denies on H before asking R; the shadow release of a "
                        "lease the shadow never granted). Not a problem by itself; never blocks.",
}
"""One line per class, shown on the report page."""


def raw_verdict(record: Record, max_lag: float | None = None) -> Verdict:
    """The class of one record on its own (no noise analysis)."""
    h, r = record.h, record.r
    if record.detail == STALE or (max_lag is not None and (record.shadow_delay or 0.0) > max_lag):
        return Verdict.STALE
    error = _error_verdict(h, r)
    if error is not None:
        return error
    if h.decision is None or r.decision is None:
        return Verdict.UNCOMPARED
    if record.detail.startswith("done:") and record.detail != "done:hr":
        return Verdict.MARKER_MISMATCH
    if h.decision == r.decision:
        return Verdict.AGREE
    pair = (h.decision, r.decision)
    if pair == (DENIED, GRANTED):
        return Verdict.FALSE_GRANT
    if pair == (GRANTED, DENIED):
        return Verdict.FALSE_DENY
    if pair in ((TRUE, FALSE), (FALSE, TRUE)):
        return Verdict.LEASE_DIVERGED
    if pair in ((DONE, ABSENT), (ABSENT, DONE)):
        return Verdict.MARKER_MISMATCH
    return Verdict.AGREE


def _changes_state(record: Record) -> bool:
    sides = (record.h.decision, record.r.decision)
    return bool(record.holder) and (GRANTED in sides or (record.op.endswith("release") and TRUE in sides))


def _one_sided_grant(record: Record) -> bool:
    """An acquire that only one side granted: its holder's lease exists on one backend only."""
    is_acquire = record.op.endswith("acquire") or record.op == "acquire_many"
    return is_acquire and (record.h.decision == GRANTED) != (record.r.decision == GRANTED)


@dataclass(frozen=True, slots=True)
class Classified:
    """One record with its verdict."""

    record: Record
    verdict: Verdict
    raw: Verdict
    """The class before noise analysis (equal to ``verdict`` unless the record is noise)."""


class _NameHistory:
    """State-changing records of one name, sorted by time, for the hand-off and echo rules."""

    def __init__(self, records: list[Record]) -> None:
        self.records = sorted(records, key=lambda r: r.ts)
        self.times = [r.ts for r in self.records]

    def around(self, start: float, end: float) -> list[Record]:
        return self.records[bisect.bisect_left(self.times, start):bisect.bisect_right(self.times, end)]


def _denier(record: Record, raw: Verdict) -> Side:
    return record.h if raw is Verdict.FALSE_GRANT else record.r


def is_noise(record: Record, raw: Verdict, history: _NameHistory | None, window: float, longest_ttl: float) -> bool:
    delay = record.shadow_delay or 0.0
    retry = _denier(record, raw).retry_after
    if raw is not Verdict.LEASE_DIVERGED and retry is not None and retry <= window + delay:
        return True
    if history is None:
        return False
    for other in history.around(record.ts - window - longest_ttl, record.ts + delay + window):
        if other.holder == record.holder:
            continue
        other_delay = other.shadow_delay or 0.0
        if record.ts - window - other_delay <= other.ts and _changes_state(other):
            return True
        if _one_sided_grant(other) and other.ts + (other.ttl or 0.0) + window >= record.ts:
            return True
    return False


def _marker_in_flight(record: Record, marks: list[Record] | None, window: float) -> bool:
    return any(m.ts <= record.ts + window and m.ts + (m.shadow_delay or 0.0) + window >= record.ts
               for m in marks or ())


def classify(records: Iterable[Record], *, window: float = NOISE_WINDOW,
             max_lag: float | None = None) -> list[Classified]:
    """Classify every record, in input order, with the noise rules applied across the whole fleet;
    with ``max_lag``, a record whose shadow ran later than that is ``stale``."""
    records = list(records)
    by_name: dict[str, list[Record]] = defaultdict(list)
    marks: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        if _changes_state(record):
            by_name[record.name].append(record)
        if record.op == "mark_done":
            marks[record.name].append(record)
    histories = {name: _NameHistory(recs) for name, recs in by_name.items()}
    longest_ttl = max((r.ttl or 0.0 for r in records), default=0.0)
    out: list[Classified] = []
    for record in records:
        raw = raw_verdict(record, max_lag)
        timing = (raw in TIMING and is_noise(record, raw, histories.get(record.name), window, longest_ttl)) or (
            raw is Verdict.MARKER_MISMATCH and _marker_in_flight(record, marks.get(record.name), window))
        out.append(Classified(record, Verdict.NOISE if timing else raw, raw))
    return out
