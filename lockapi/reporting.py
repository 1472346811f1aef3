"""Reporting: where a manager and its leases send what happened.

One :class:`Reporter` per manager routes each operation to the manager's listeners (a finished
:class:`~lockapi.events.Event`), to its observers (start/finish hooks, :mod:`lockapi.observers`) and to
the log (backend unavailable / reachable again, lease lost; one line each, with structured ``extra``
fields prefixed ``lockapi_``). Nothing is built for a destination nobody listens on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from lockapi.errors import BackendUnavailable
from lockapi.events import Event, Listeners
from lockapi.observers import Chain, LeaseEnd, Observer, Operation, _guarded

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

    def waiting_hook(self, operation: Operation | None) -> Callable[[], None] | None:
        """The callback :func:`lockapi.waiting.wait_for_grant` calls when the caller starts to wait."""
        if operation is None:
            return None
        observer = operation.observer

        def waiting() -> None:
            operation.waited = time.monotonic()
            if observer is not None:
                try:
                    observer.waiting(operation, operation.state)
                except Exception:
                    _guarded("waiting", observer)

        return waiting

    def finish(self, operation: Operation | None, op: str, name: str, started: float, outcome: str,
               decision: bool | None, token: int | None = None, error: BaseException | None = None,
               granted: tuple[str, ...] = ()) -> None:
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
        if self.listeners.items:
            self.listeners.emit(Event(op, name, decision, token, (now or time.monotonic()) - started,
                                      None if error is None else repr(error), outcome))

    def lease_ended(self, observer: Observer, end: LeaseEnd) -> None:
        try:
            observer.lease_ended(end)
        except Exception:
            _guarded("lease_ended", observer)

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

