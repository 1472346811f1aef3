"""Functions the conformance suite runs in child processes (importable, so 'spawn' can pickle them)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lockapi
from lockapi.observers import Observer, Operation


def contend(url: str, options: dict[str, Any], name: str, rounds: int, out: str, ttl: float) -> None:
    """Take ``name`` ``rounds`` times; append "start end token" (monotonic ns, system-wide) per grant."""
    lines = []
    with lockapi.connect(url, **options) as mgr:
        for _ in range(rounds):
            with mgr.acquire(name, ttl=ttl, wait=120) as lease:
                start = time.monotonic_ns()
                time.sleep(0.002)
                end = time.monotonic_ns()
                lines.append(f"{start} {end} {lease.token}\n")
    Path(out).write_text("".join(lines))


class _SetOnWait(Observer):
    """Sets ``event`` when an acquire starts to wait (its first attempt was denied)."""

    def __init__(self, event: Any) -> None:
        self.event = event

    def waiting(self, op: Operation, state: Any) -> None:
        self.event.set()


def wait_then_report(url: str, options: dict[str, Any], name: str, waiting: Any, out: str) -> None:
    """Wait for ``name``, signalling ``waiting`` once the first attempt was denied (the waiter is then
    subscribed to wake-ups); write the monotonic ns of the grant."""
    with lockapi.connect(url, **options) as mgr:
        mgr.add_observer(_SetOnWait(waiting))
        lease = mgr.acquire(name, ttl=30, wait=60)
        granted = time.monotonic_ns()
        lease.release()
    Path(out).write_text(str(granted))


def hold_forever(url: str, options: dict[str, Any], name: str, ttl: float, ready: Any, out: str) -> None:
    """Take ``name`` for ``ttl`` seconds, report the grant's monotonic ns, then never release it."""
    mgr = lockapi.connect(url, **options)
    lease = mgr.acquire(name, ttl=ttl, wait=60)
    Path(out).write_text(f"{time.monotonic_ns()} {lease.token}")
    ready.set()
    while True:
        time.sleep(3600)
