"""Reporting: where a manager and its leases send what happened.

One :class:`Reporter` per manager routes each operation to the manager's listeners (a finished
:class:`~lockapi.events.Event`), to its observers (start/finish hooks; one tuple per finished
operation for records-only observers, :mod:`lockapi.observers`) and to the log (backend unavailable /
reachable again, lease lost; one line each, with structured ``extra`` fields prefixed ``lockapi_``).
Nothing is built for a destination nobody listens on.
"""

from __future__ import annotations

import logging
import time

from lockapi.errors import BackendUnavailable
from lockapi.events import Event, Listeners
from lockapi.observers import (
    Chain,
    EndRecord,
    LeaseEnd,
    Observer,
    Observers,
    Operation,
    _guarded,
    tell_waiting,
)

log = logging.getLogger(__name__)


class Reporter:
    """The listeners, observers and log of one manager (shared with every lease it grants)."""

    def __init__(self, backend: str, url: str) -> None:
        self.backend = backend
        """The backend's URL scheme: the ``backend`` of every operation and log line."""
        self.url = url
        """The manager's URL, password redacted."""
        self.listeners = Listeners()
        self.observers = Chain()
        self.down = False
        """True after an operation failed with BackendUnavailable, until one reaches the backend again."""

    @property
    def observer(self) -> Observer | None:
        return self.observers.observer

    # -- operations --------------------------------------------------------------------------------
    def start(self, op: str, name: str, started: float, names: tuple[str, ...] = ()) -> Operation | None:
        """An :class:`Operation` handed to the observers, or None when there are none."""
        observer = self.observers.observer
        if observer is None:
            return None
        operation = Operation(op, name, self.backend, started, names)
        operation.observer = observer
        try:
            operation.state = observer.start(operation)
        except Exception:
            _guarded("start", observer)
        return operation

    def waiting_hook(self, operation: Operation | None, op: str, name: str) -> Waiting | None:
        """The callback :func:`lockapi.waiting.wait_for_grant` calls when the caller starts to wait (None
        when nobody observes); hand it to :meth:`finish` as ``waiting``."""
        recorders = self.observers.recorders
        if operation is None and not recorders:
            return None
        return Waiting(operation, recorders, (op, name, self.backend))

    def finish(self, operation: Operation | None, op: str, name: str, started: float, outcome: str,
               decision: bool | None, token: int | None = None, error: BaseException | None = None,
               granted: tuple[str, ...] = (), names: tuple[str, ...] = (), waiting: Waiting | None = None) -> None:
        """The operation ended: tell the log (backend health), the observers and the listeners."""
        if error is None:
            if self.down:
                self._reachable()
        elif isinstance(error, BackendUnavailable):
            self._unavailable(op, error)
        now = 0.0
        if operation is not None:
            now = operation.ended = time.monotonic()
            operation.outcome, operation.token, operation.error = outcome, token, error
            if granted:
                operation.granted = granted
            observer = operation.observer
            if observer is not None:
                try:
                    observer.finish(operation, operation.state)
                except Exception:
                    _guarded("finish", observer)
        recorders = self.observers.recorders
        if recorders:
            if not now:
                now = time.monotonic()
            record = (op, name, self.backend, outcome, started, now, None if waiting is None else waiting.at, token,
                      error, names, granted)
            for recorder in recorders:  # tell(), inlined: this runs on every operation
                try:
                    recorder.record(record)
                except Exception:
                    _guarded("record", recorder)
        if self.listeners.items:
            self.listeners.emit(Event(op, name, decision, token, (now or time.monotonic()) - started,
                                      None if error is None else repr(error), outcome))

    def lease_ended(self, told: Observers, end: EndRecord) -> None:
        """A lease ended: tell the observers that saw it granted (``end`` as a :class:`LeaseEnd` to the
        full-protocol one)."""
        observer, recorders = told
        if observer is not None:
            try:
                observer.lease_ended(LeaseEnd(*end))
            except Exception:
                _guarded("lease_ended", observer)
        for recorder in recorders:  # inlined: this runs for every lease
            try:
                recorder.record_end(end)
            except Exception:
                _guarded("record_end", recorder)

    # -- backend health in the log -------------------------------------------------------------------
    def _unavailable(self, op: str, error: BaseException) -> None:
        fields = {"lockapi_event": "backend_unavailable", "lockapi_backend": self.backend,
                  "lockapi_url": self.url, "lockapi_op": op, "lockapi_error": str(error)}
        if self.down:
            log.debug("lockapi: %s still unavailable (%s): %s", self.url, op, error, extra=fields)
            return
        self.down = True
        log.warning("lockapi: backend %s unavailable (%s): %s", self.url, op, error, extra=fields)

    def _reachable(self) -> None:
        self.down = False
        log.info("lockapi: backend %s reachable again", self.url,
                 extra={"lockapi_event": "backend_reachable", "lockapi_backend": self.backend,
                        "lockapi_url": self.url})


class Waiting:
    """An acquire's "caller starts to wait" callback: stamps the time and tells the observers."""

    __slots__ = ("at", "operation", "recorders", "what")

    def __init__(self, operation: Operation | None, recorders: tuple[Observer, ...], what: tuple[str, str, str]
                 ) -> None:
        self.operation = operation
        self.recorders = recorders
        self.what = what
        self.at: float | None = None
        """When the caller started to wait (None: it did not)."""

    def __call__(self) -> None:
        self.at = now = time.monotonic()
        operation = self.operation
        if operation is not None:
            operation.waited = now
            observer = operation.observer
            if observer is not None:
                try:
                    observer.waiting(operation, operation.state)
                except Exception:
                    _guarded("waiting", observer)
        if self.recorders:
            tell_waiting(self.recorders, self.what)
