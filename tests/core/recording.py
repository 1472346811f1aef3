"""A records-only observer for tests of what a manager reports: each operation's name and result, and
each lease end's cause."""

from __future__ import annotations

from lockapi.observers import EndRecord, Observer, Record


class OutcomeRecorder(Observer):
    records_only = True

    def __init__(self) -> None:
        self.ops: list[tuple[str, str]] = []
        self.ends: list[str] = []

    def record(self, record: Record) -> None:
        self.ops.append((str(record[0]), str(record[3])))

    def record_end(self, record: EndRecord) -> None:
        self.ends.append(str(record[5]))
