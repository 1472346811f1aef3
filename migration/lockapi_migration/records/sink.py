"""Writes decision records to the record store in the background, in batches, never blocking callers.

``put`` is a non-blocking append to a bounded queue; when the queue is full the record is dropped and
counted (``dropped``). One writer thread flushes batches every ``interval`` seconds; a failed batch is
dropped and counted (``failed``) so an unreachable record store never grows memory or delays the app.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from lockapi.spi import LockError
from lockapi_migration.records.model import Record
from lockapi_migration.records.store import RecordStore

log = logging.getLogger("lockapi.migration")

BATCH = 500


class RecordSink:
    def __init__(self, store: RecordStore, *, capacity: int = 100_000, interval: float = 0.2) -> None:
        self._store = store
        self._queue: queue.Queue[Record] = queue.Queue(capacity)
        self._interval = interval
        self._stop = threading.Event()
        self.dropped = 0
        self.failed = 0
        self.written = 0
        self._thread = threading.Thread(target=self._run, name="lockapi-migration-records", daemon=True)
        self._thread.start()

    def put(self, record: Record) -> None:
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def _drain(self) -> list[Record]:
        batch: list[Record] = []
        while len(batch) < BATCH:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def flush(self) -> None:
        """Write everything queued so far (on the caller's thread)."""
        while batch := self._drain():
            try:
                self._store.append(batch)
                self.written += len(batch)
            except LockError as exc:
                self.failed += len(batch)
                log.warning("lockapi migration: %d records lost: %s", len(batch), exc)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the writer and write what is left, for at most ``timeout`` seconds."""
        self._stop.set()
        self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        while not self._queue.empty() and time.monotonic() < deadline:
            self.flush()
