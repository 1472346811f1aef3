"""Writes decision records and lag samples to the record store in the background, in batches, never
blocking callers.

``put`` is a non-blocking append to a bounded queue; when the queue is full the record is dropped and
counted (``dropped``). One writer thread wakes every ``interval`` seconds, runs the ``tick`` callbacks
(e.g. the lag meter closing a minute) and writes what is queued as batches of up to :data:`BATCH`
records, one store call each; a failed batch is dropped and counted (``failed``) so an unreachable
record store never grows memory or delays the application.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable

from lockapi.spi import LockError
from lockapi_migration.records.model import Record
from lockapi_migration.records.store import LagSample, RecordStore

log = logging.getLogger("lockapi.migration." + __name__.removeprefix("lockapi_migration."))

BATCH = 500


class RecordSink:
    """The background writer of one node's records and lag samples (see the module docstring)."""

    def __init__(self, store: RecordStore, *, capacity: int = 100_000, interval: float = 0.2) -> None:
        self._store = store
        self._capacity = capacity
        self._records: collections.deque[Record] = collections.deque()
        self._lag: collections.deque[LagSample] = collections.deque()
        self._interval = interval
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        self.ticks: list[Callable[[], None]] = []
        self.dropped = 0
        self.failed = 0
        self.written = 0
        self._thread = threading.Thread(target=self._run, name="lockapi-migration-records", daemon=True)
        self._thread.start()

    def put(self, record: Record) -> None:
        """Queue ``record`` (never blocks; dropped and counted when the queue is full)."""
        if len(self._records) >= self._capacity:
            self.dropped += 1
        else:
            self._records.append(record)  # deque.append is atomic: no lock on the caller's path

    def put_lag(self, sample: LagSample) -> None:
        self._lag.append(sample)

    def _batch(self) -> list[Record]:
        batch: list[Record] = []
        pop = self._records.popleft
        try:
            while len(batch) < BATCH:
                batch.append(pop())
        except IndexError:
            pass
        return batch

    def flush(self) -> None:
        """Run the ticks and write everything queued so far (on the caller's thread)."""
        with self._write_lock:
            for tick in self.ticks:
                tick()
            samples = []
            with contextlib.suppress(IndexError):
                while True:
                    samples.append(self._lag.popleft())
            if samples:
                try:
                    self._store.append_lag(samples)
                except LockError as exc:
                    log.warning("lockapi migration: %d lag samples lost: %s", len(samples), exc,
                                extra={"lockapi_event": "migration_records_lost", "lockapi_count": len(samples),
                                       "lockapi_what": "lag", "lockapi_error": str(exc)})
            while batch := self._batch():
                try:
                    self._store.append(batch)
                    self.written += len(batch)
                except LockError as exc:
                    self.failed += len(batch)
                    log.warning("lockapi migration: %d records lost: %s", len(batch), exc,
                                extra={"lockapi_event": "migration_records_lost", "lockapi_count": len(batch),
                                       "lockapi_what": "records", "lockapi_error": str(exc)})

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the writer and write what is left, for at most ``timeout`` seconds."""
        self._stop.set()
        self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        self.flush()
        while self._records and time.monotonic() < deadline:
            self.flush()
