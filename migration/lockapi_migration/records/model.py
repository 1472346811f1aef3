"""Decision records: one per operation and name, with each backend's side of it.

A record is written for every operation a migrating node performs on a name (acquire, release, extend,
permits, done markers, batches), in every phase that talks to both backends (shadow, dual, cutover).
Records never contain URLs; error texts are passed through :func:`clean_error` first.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from lockapi.spi import Attempt, LockError

GRANTED = "granted"
DENIED = "denied"
TRUE = "true"
FALSE = "false"
OK = "ok"
DONE = "done"
ABSENT = "absent"
DROPPED = "dropped: shadow queue full"
STALE = "stale"
"""``Record.detail`` of a replay that ran more than the node's ``max_lag`` behind its primary decision:
the shadow's side (if it ran at all) is not compared."""

ERROR_LIMIT = 300
_URL_SECRET = re.compile(r"(\w[\w+.-]*://[^/\s:@]*):[^@\s/]*@")

T = TypeVar("T")


def clean_error(exc: BaseException) -> str:
    """A short, password-free description of ``exc`` for records and reports."""
    text = f"{type(exc).__name__}: {exc}"
    return _URL_SECRET.sub(r"\1:***@", text)[:ERROR_LIMIT]


@dataclass(frozen=True, slots=True)
class Side:
    """One backend's part of a record. ``decision`` None: that backend was not asked."""

    decision: str | None = None
    token: int | None = None
    latency: float | None = None
    error: str | None = None
    retry_after: float | None = None

    @property
    def asked(self) -> bool:
        return self.decision is not None or self.error is not None

    def __reduce__(self) -> tuple[type[Side], tuple[Any, ...]]:
        """Pickle as ``Side(*fields)``: every shadow replay ships one Side to the replay worker, and the
        default of a frozen slots dataclass (``__getstate__`` calling ``dataclasses.fields()``) cost
        ~2.7 µs per replay on the sender thread of the application's process against ~0.6 µs for this."""
        return (Side, (self.decision, self.token, self.latency, self.error, self.retry_after))


NOT_ASKED = Side()


def timed(call: Callable[[], T], decide: Callable[[Any, float], Side]
          ) -> tuple[Side, T | None, LockError | None]:
    """Run ``call``; return its Side (``decide(result, latency in seconds)``), result and error.

    Only :class:`LockError` is caught (backends translate their errors into it); the caller decides
    whether to re-raise it. ``decide`` builds the one Side of the call (it is on the caller's path in
    shadow: one object, not two).
    """
    started = time.perf_counter()
    try:
        result = call()
    except LockError as exc:
        return outcome_side(exc, time.perf_counter() - started, decide), None, exc
    return decide(result, time.perf_counter() - started), result, None


def outcome_side(outcome: Any, latency: float, decide: Callable[[Any, float], Side]) -> Side:
    """The Side of a call that returned ``outcome`` (or raised it: a :class:`LockError`) after ``latency``."""
    if isinstance(outcome, LockError):
        return Side(error=clean_error(outcome), latency=latency)
    return decide(outcome, latency)


def attempt_side(attempt: Attempt, latency: float | None = None) -> Side:
    if attempt.token is None:
        return Side(DENIED, None, latency, None, attempt.retry_after)
    return Side(GRANTED, attempt.token, latency)


def bool_side(ok: bool, latency: float | None = None) -> Side:
    return Side(TRUE if ok else FALSE, None, latency)


def ok_side(_: object, latency: float | None = None) -> Side:
    return Side(OK, None, latency)


def granted_side(_: object, latency: float | None = None) -> Side:
    """A batch call that returned (its per-name decisions are in its result)."""
    return Side(GRANTED, None, latency)


def done_side(_: object, latency: float | None = None) -> Side:
    """A marker read that returned (its per-name answers are in its result)."""
    return Side(DONE, None, latency)


@dataclass(frozen=True, slots=True)
class Record:
    """One operation on one name, as seen by H (the source) and R (the target).

    ``ts`` is the wall-clock time of the primary decision; ``shadow_delay`` the seconds the background
    side waited in the shadow queue; ``detail`` extra facts for classification (e.g. ``done:h``).
    """

    ts: float
    node: str
    phase: str
    op: str
    name: str
    holder: str = ""
    ttl: float | None = None
    h: Side = field(default=NOT_ASKED)
    r: Side = field(default=NOT_ASKED)
    shadow_delay: float | None = None
    detail: str = ""

    def to_values(self) -> list[Any]:
        """The record as one flat list in :data:`ROW_COLUMNS` order (the compact stored form)."""
        h, r = self.h, self.r
        return [self.ts, self.node, self.phase, self.op, self.name, self.holder, self.ttl, self.shadow_delay,
                self.detail, h.decision, h.token, h.latency, h.error, h.retry_after,
                r.decision, r.token, r.latency, r.error, r.retry_after]

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> Record:
        (ts, node, phase, op, name, holder, ttl, delay, detail, *sides) = values
        return cls(ts, node, phase, op, name, holder or "", ttl, Side(*sides[:5]), Side(*sides[5:]), delay,
                   detail or "")

    def to_row(self) -> dict[str, Any]:
        """A flat dict (the columns of the record store)."""
        return dict(zip(ROW_COLUMNS, self.to_values(), strict=True))

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Record:
        return cls.from_values([row.get(column) for column in ROW_COLUMNS])


ROW_COLUMNS: list[str] = [
    "ts", "node", "phase", "op", "name", "holder", "ttl", "shadow_delay", "detail",
    *(f"{label}_{f.name}" for label in ("h", "r") for f in fields(Side)),
]
"""Column names of a record row, in a stable order (that of :meth:`Record.to_values`)."""
