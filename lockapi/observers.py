"""Observers: the explicit hook core calls around every operation, for metrics and tracing adapters.

An :class:`Observer` sees each operation **start** (before its first backend round trip, on the
caller's thread) and **finish** (after its last one, on the same thread), so a tracing adapter can make
its span the current one while the backend client runs: a client that instruments itself then parents
its own spans under it. An observer also sees each lease **end** (released or lost, with how long it
was held and why it was lost) and one-off **signals** (facts without a duration, e.g. a migration
mismatch, sent by plugins through :func:`lockapi.spi.signal`).

An observer that needs no span (a metrics-only one) sets :attr:`Observer.records_only`: core then
builds no :class:`Operation` for it and calls no ``start``/``waiting``/``finish``/``lease_ended``;
it hands over each finished operation as one plain tuple (:data:`Record`, to :meth:`Observer.record`),
each lease end likewise (:data:`EndRecord`, to :meth:`Observer.record_end`) and each caller that starts
to wait as ``(op, name, backend)`` (:meth:`Observer.record_waiting`). Observers that trace keep the
full protocol; both kinds may be installed together.

Observers are installed process-wide (:func:`add`, seen by every manager, existing and future) or on
one manager (:meth:`lockapi.LockManager.add_observer`). Core imports no telemetry library: the
OpenTelemetry and Prometheus adapters live in :mod:`lockapi.observability`. With no observer installed,
an operation pays two attribute reads and their tests; hooks are called only when one is.

Every hook runs inside the operation: it must be quick and must not raise (an exception is logged
and dropped, never reaches the caller).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from lockapi import spi
from lockapi.errors import InvalidArgumentType

log = logging.getLogger(__name__)

# Outcomes of an operation (Operation.outcome).
GRANTED = "granted"
"""An acquire granted the lock or permit (acquire_many: at least one name)."""
DENIED = "denied"
"""A no-wait acquire (try_acquire, ``wait=0``) found it held; acquire_many granted no name."""
TIMEOUT = "timeout"
"""An acquire that waited was not granted within ``wait``."""
ERROR = "error"
"""The operation raised (``Operation.error`` says what; mostly :class:`BackendUnavailable`)."""
RELEASED = "released"
"""A release freed a lease that was still held."""
EXTENDED = "extended"
"""An extend or renewal moved the expiry of a lease that was still held."""
NOT_HELD = "not_held"
"""A release, extend or renewal found the lease no longer held (expired or taken over)."""
OK = "ok"
"""A plugin step that finished without an outcome of its own."""

# How a lease ended (LeaseEnd.end) and why a lost one was lost (LeaseEnd.cause).
END_RELEASED = "released"
END_LOST = "lost"
CAUSE_EXPIRED = "expired"
"""The backend no longer knew the lease at a release or extend: it had expired or been taken over."""
CAUSE_RENEW_FAILED = "renew_failed"
"""An auto-renewal was refused by the backend."""
CAUSE_BACKEND_ERROR = "backend_error"
"""Auto-renewal could not reach the backend until the lease's ttl ran out."""
CAUSE_AT_MOST = "at_most"
"""The lease ran out at its ``at_most`` cap while still held: renewals never extend past it."""

Attributes = Mapping[str, "str | int | float | bool"]

Record = tuple[str, str, str, str, float, float, "float | None", "int | None", "BaseException | None",
               tuple[str, ...], tuple[str, ...]]
"""A finished operation as a records-only observer gets it: ``(op, name, backend, outcome, started,
ended, waited, token, error, names, granted)``, the fields of :class:`Operation` in that order
(``names``/``granted`` are empty but for acquire_many)."""
EndRecord = tuple[str, str, str, int, float, str, "str | None"]
"""A lease end as a records-only observer gets it: ``(kind, name, backend, token, held, end, cause)``,
the fields of :class:`LeaseEnd` in that order."""


class Operation:
    """One operation in progress. Core fills in the result fields before calling ``finish``.

    ``op`` is one of acquire, try_acquire, permit_acquire, permit_try_acquire, acquire_many, release,
    extend, renew (an auto-renewal), permit_release, permit_extend, or a plugin step
    (``migration.shadow``...). Times are ``time.monotonic()`` seconds. (A plain class with class-level
    defaults: building one on every observed operation is the cost that matters here.)
    """

    names: tuple[str, ...] = ()
    """acquire_many: every name asked for (``name`` is then ``"<N names>"``)."""
    attributes: Attributes | None = None
    """Plugin steps: what the plugin told about the step."""
    parent: Any = None
    """Plugin steps: a context captured with :func:`lockapi.spi.trace_context` on another thread."""
    waited: float | None = None
    """When the caller started to wait (its first attempt was denied); None if it never waited."""
    ended: float = 0.0
    outcome: str = ""
    token: int | None = None
    error: BaseException | None = None
    granted: tuple[str, ...] = ()
    """acquire_many: the names granted."""
    observer: Observer | None = None
    """The observer that saw it start (core keeps it, and hands ``finish`` to the same one)."""
    state: Any = None
    """The observer's own state for this operation (what its ``start`` returned); core keeps it."""

    def __init__(self, op: str, name: str, backend: str, started: float, names: tuple[str, ...] = (),
                 *, attributes: Attributes | None = None, parent: Any = None) -> None:
        self.op = op
        self.name = name
        self.backend = backend
        """The backend's URL scheme (redis, postgresql, memory, migration...)."""
        self.started = started
        if names:
            self.names = names
        if attributes is not None:
            self.attributes = attributes
        if parent is not None:
            self.parent = parent

    def __repr__(self) -> str:
        return f"<Operation {self.op} {self.name!r} {self.outcome or 'running'}>"

    @property
    def seconds(self) -> float:
        """From start to finish (for an acquire: the wait time, whatever its outcome)."""
        return self.ended - self.started


@dataclass(slots=True)
class LeaseEnd:
    """A lease (``kind`` lock) or permit (``kind`` permit) that stopped being held by this process."""

    kind: str
    name: str
    backend: str
    token: int
    held: float
    """Seconds from the grant to the release, or to the last moment it can have been held if lost."""
    end: str
    """released or lost."""
    cause: str | None = None
    """For a lost lease: expired, renew_failed, backend_error or at_most."""


@dataclass(frozen=True, slots=True)
class Signal:
    """A fact without a duration, e.g. ``migration_mismatch`` (sent with :func:`lockapi.spi.signal`)."""

    kind: str
    name: str
    attributes: Attributes


class Observer:
    """Base class of observers: every hook does nothing; adapters override the ones they need.

    ``start`` returns the observer's own state for the operation (e.g. its span), which is handed back
    to ``waiting`` and ``finish``. An observer with :attr:`records_only` set gets ``record``,
    ``record_waiting`` and ``record_end`` instead of ``start``, ``waiting``, ``finish`` and
    ``lease_ended``; ``signal`` and ``context`` are called for both kinds.
    """

    records_only: ClassVar[bool] = False
    """True for an observer that needs no span and no hook at an operation's start (metrics): core then
    hands it plain tuples once things are over, which costs the caller far less than the
    :class:`Operation` protocol. Read when the observer is installed."""

    def start(self, op: Operation) -> Any:
        return None

    def waiting(self, op: Operation, state: Any) -> None:
        """The caller of an acquire starts to wait: its first attempt was denied (``op.waited`` is set)."""

    def finish(self, op: Operation, state: Any) -> None:
        """The operation is over: ``op.ended``, ``op.outcome`` and the rest are filled in."""

    def lease_ended(self, end: LeaseEnd) -> None:
        """A lease granted while this observer was installed was released or lost (once per lease)."""

    def signal(self, signal: Signal) -> None:
        """A one-off fact from core or a plugin."""

    def record(self, record: Record) -> None:
        """Records-only observers: an operation is over (on the caller's thread, after its last round trip)."""

    def record_waiting(self, record: tuple[str, str, str]) -> None:
        """Records-only observers: the caller of an acquire starts to wait, ``(op, name, backend)``; the
        operation's :data:`Record` then has ``waited`` set."""

    def record_end(self, record: EndRecord) -> None:
        """Records-only observers: a lease granted while this observer was installed was released or lost
        (once per lease)."""

    def context(self) -> Any:
        """What :func:`lockapi.spi.trace_context` captures for this observer (e.g. the current span)."""
        return None


def _guarded(what: str, observer: Observer) -> None:
    log.exception("lockapi observer %r failed in %s", observer, what,
                  extra={"lockapi_event": "observer_failed", "lockapi_hook": what})


class Fanout(Observer):
    """Several observers behind one: states travel as a tuple in the same order."""

    def __init__(self, observers: tuple[Observer, ...]) -> None:
        self.observers = observers

    def start(self, op: Operation) -> Any:
        states = []
        parents = op.parent
        for i, observer in enumerate(self.observers):
            if parents is not None:
                op.parent = parents[i]
            try:
                states.append(observer.start(op))
            except Exception:
                _guarded("start", observer)
                states.append(None)
        op.parent = parents
        return tuple(states)

    def waiting(self, op: Operation, state: Any) -> None:
        for observer, one in zip(self.observers, state, strict=True):
            try:
                observer.waiting(op, one)
            except Exception:
                _guarded("waiting", observer)

    def finish(self, op: Operation, state: Any) -> None:
        for observer, one in zip(self.observers, state, strict=True):
            try:
                observer.finish(op, one)
            except Exception:
                _guarded("finish", observer)

    def lease_ended(self, end: LeaseEnd) -> None:
        for observer in self.observers:
            try:
                observer.lease_ended(end)
            except Exception:
                _guarded("lease_ended", observer)

    def signal(self, signal: Signal) -> None:
        for observer in self.observers:
            try:
                observer.signal(signal)
            except Exception:
                _guarded("signal", observer)

    def context(self) -> Any:
        return tuple(observer.context() for observer in self.observers)


def _combine(observers: tuple[Observer, ...]) -> Observer | None:
    if not observers:
        return None
    return observers[0] if len(observers) == 1 else Fanout(observers)


Observers = tuple["Observer | None", tuple["Observer", ...]]
"""(the full-protocol observer, or None; the records-only observers), as a :class:`Chain` has them."""


def _split(observers: tuple[Observer, ...]) -> Observers:
    """(the full-protocol observers combined into one, or None; the records-only ones)."""
    return (_combine(tuple(o for o in observers if not o.records_only)),
            tuple(o for o in observers if o.records_only))


class Chain:
    """The observers one manager reports to: the process-wide ones, then its own.

    ``observer`` is None when no full-protocol observer is installed (the hot path tests only that before
    it builds an :class:`Operation`), the observer itself when there is one, else a :class:`Fanout`.
    ``recorders`` are the records-only observers, in the same order (empty when there are none).
    ``current`` is both, or None when there are no observers at all (what a lease keeps).
    """

    def __init__(self) -> None:
        self._own: tuple[Observer, ...] = ()
        self.observer: Observer | None = None
        self.recorders: tuple[Observer, ...] = ()
        self.current: Observers | None = None
        with _lock:
            _chains.add(self)
            self._refresh()

    def add(self, observer: Observer) -> None:
        with _lock:
            if observer not in self._own:
                self._own = (*self._own, observer)
            self._refresh()

    def remove(self, observer: Observer) -> None:
        with _lock:
            self._own = tuple(o for o in self._own if o is not observer)
            self._refresh()

    def _refresh(self) -> None:
        current = _split(_process + tuple(o for o in self._own if o not in _process))
        self.observer, self.recorders = current
        self.current = current if current[0] is not None or current[1] else None


_lock = threading.RLock()
_process: tuple[Observer, ...] = ()
_chains: weakref.WeakSet[Chain] = weakref.WeakSet()


def add(observer: Observer) -> None:
    """Install ``observer`` for every manager of this process, existing and future (and for plugins'
    steps and signals). Adding the same observer twice installs it once."""
    global _process
    if not isinstance(observer, Observer):
        raise InvalidArgumentType(f"observer must be a lockapi.observers.Observer, got {type(observer).__name__}")
    with _lock:
        if observer not in _process:
            _process = (*_process, observer)
        _changed()


def remove(observer: Observer) -> None:
    """Uninstall a process-wide observer (no-op if it is not installed)."""
    global _process
    with _lock:
        _process = tuple(o for o in _process if o is not observer)
        _changed()


def installed() -> tuple[Observer, ...]:
    """The process-wide observers, in installation order."""
    return _process


def _changed() -> None:
    for chain in list(_chains):
        chain._refresh()
    spi.set_observer_hook(_PluginHooks(_process) if _process else None)


class _PluginHooks:
    """What :mod:`lockapi.spi`'s plugin-facing functions call while process-wide observers exist."""

    def __init__(self, observers: tuple[Observer, ...]) -> None:
        self.all = _combine(observers)
        self.observer, self.recorders = _split(observers)

    @contextlib.contextmanager
    def step(self, op: str, name: str, backend: str, parent: Any, attributes: Attributes) -> Iterator[spi.Step]:
        observer, recorders = self.observer, self.recorders
        operation = Operation(op, name, backend, time.monotonic(), attributes=attributes, parent=parent)
        state = None if observer is None else _start(observer, operation)
        step = spi.Step()
        try:
            yield step
        except BaseException as exc:
            operation.outcome, operation.error = ERROR, exc
            raise
        else:
            operation.outcome = step.outcome or OK
        finally:
            operation.ended = time.monotonic()
            if observer is not None:
                _finish(observer, operation, state)
            if recorders:
                tell(recorders, as_record(operation))

    def signal(self, kind: str, name: str, attributes: Attributes) -> None:
        observer = self.all
        assert observer is not None
        try:
            observer.signal(Signal(kind, name, attributes))
        except Exception:
            _guarded("signal", observer)

    def context(self) -> Any:
        observer = self.observer  # records-only observers take no parent
        if observer is None:
            return None
        try:
            return observer.context()
        except Exception:
            _guarded("context", observer)
            return None


def as_record(op: Operation) -> Record:
    """``op`` as a records-only observer gets it."""
    return (op.op, op.name, op.backend, op.outcome, op.started, op.ended, op.waited, op.token, op.error,
            op.names, op.granted)


def tell(recorders: tuple[Observer, ...], record: Record) -> None:
    """Hand a finished operation to each records-only observer (one that raises is logged and skipped)."""
    for recorder in recorders:
        try:
            recorder.record(record)
        except Exception:
            _guarded("record", recorder)


def tell_waiting(recorders: tuple[Observer, ...], record: tuple[str, str, str]) -> None:
    """Tell each records-only observer that a caller, ``(op, name, backend)``, starts to wait."""
    for recorder in recorders:
        try:
            recorder.record_waiting(record)
        except Exception:
            _guarded("record_waiting", recorder)


def _start(observer: Observer, op: Operation) -> Any:
    try:
        return observer.start(op)
    except Exception:
        _guarded("start", observer)
        return None


def _finish(observer: Observer, op: Operation, state: Any) -> None:
    try:
        observer.finish(op, state)
    except Exception:
        _guarded("finish", observer)
