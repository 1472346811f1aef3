"""Pause injection: stop one holder between two backend round trips while another proceeds.

Backends call :func:`lockapi.spi.pause_point` between the round trips of a multi-step operation and
declare those points in ``Backend.pause_points``; core adds :data:`CORE_PAUSE_POINTS` on every backend.
A test stops a thread at a point, lets another holder act, then resumes it::

    with pause_at("extend:read", thread=holder_thread) as pause:
        holder_thread.start()              # calls lease.extend()
        pause.wait_reached()
        ...                                # another holder proceeds meanwhile
        pause.resume()

:func:`record_points` lists the points a block of code passes through (to check the declarations).
Nothing here costs anything outside a test: without an installed pause, ``pause_point`` is one global read.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator

from lockapi.spi import PAUSE_OPERATIONS, set_pause_hook

__all__ = ["ACTOR", "CORE_PAUSE_POINTS", "Pause", "operation_of", "pause_at", "record_points"]

ACTOR: contextvars.ContextVar[threading.Thread] = contextvars.ContextVar("lockapi_pause_actor")
"""The thread on whose behalf code runs, when that is not the current thread: set by whoever hands work
to another thread or an event loop (the asyncio adapters copy context variables along)."""

CORE_PAUSE_POINTS = frozenset({
    "acquire:watching",    # a waiter has subscribed to wake-ups and is about to re-check the lock
    "job_lock:acquired",   # JobLockManager.lock holds the lease and has not yet read the done marker
    "job_done:marked",     # successfully_processed wrote the done marker and has not yet released
})
"""Pause points of core's own multi-step operations, present on every backend."""

_CORE_OPERATIONS = ("job_lock", "job_done")

RESUME_TIMEOUT = 300.0
"""A paused thread resumes on its own after this many seconds, so a failed test never hangs a run."""


def operation_of(point: str) -> str:
    """The operation a point belongs to (the part before ``:``); ValueError for a malformed point."""
    operation, sep, step = point.partition(":")
    if not sep or not step or operation not in (*PAUSE_OPERATIONS, *_CORE_OPERATIONS):
        raise ValueError(f"pause point {point!r} is not '<operation>:<step>' with a known operation")
    return operation


class Pause:
    """One armed pause: the first matching thread to reach ``point`` stops there until :meth:`resume`."""

    def __init__(self, point: str, thread: threading.Thread | None) -> None:
        operation_of(point)
        self.point = point
        self._thread = thread
        self._reached = threading.Event()
        self._go = threading.Event()
        self._taken = False
        self._guard = threading.Lock()

    def _claim(self, point: str) -> bool:
        if point != self.point:
            return False
        if self._thread is not None and ACTOR.get(threading.current_thread()) is not self._thread:
            return False
        with self._guard:
            if self._taken:
                return False
            self._taken = True
        return True

    def _stop_here(self) -> None:
        self._reached.set()
        self._go.wait(RESUME_TIMEOUT)

    @property
    def reached(self) -> bool:
        """True once a thread has stopped at the point."""
        return self._reached.is_set()

    def wait_reached(self, timeout: float = 60.0) -> None:
        """Block until a thread stops at the point; AssertionError if none does within ``timeout``."""
        if not self._reached.wait(timeout):
            raise AssertionError(f"no thread reached pause point {self.point!r} within {timeout:g} s")

    def resume(self) -> None:
        """Let the stopped thread (or the one that will reach the point) go on."""
        self._go.set()


class _Hook:
    """The installed pause hook: armed pauses and recorders, shared by every thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pauses: list[Pause] = []
        self.recorders: list[set[str]] = []

    def __call__(self, point: str) -> None:
        with self.lock:
            for seen in self.recorders:
                seen.add(point)
            pause = next((p for p in self.pauses if p._claim(point)), None)
        if pause is not None:
            pause._stop_here()

    def install_if_needed(self) -> None:
        if self.pauses or self.recorders:
            set_pause_hook(self)
        else:
            set_pause_hook(None)


_hook = _Hook()


@contextlib.contextmanager
def pause_at(point: str, *, thread: threading.Thread | None = None) -> Iterator[Pause]:
    """Arm a pause at ``point`` (for ``thread`` only, if given: that thread, or work it handed to an
    event loop or a worker thread with its context variables) for the duration of the block.

    On exit the pause is disarmed and a thread still stopped there is resumed.
    """
    pause = Pause(point, thread)
    with _hook.lock:
        _hook.pauses.append(pause)
        _hook.install_if_needed()
    try:
        yield pause
    finally:
        pause.resume()
        with _hook.lock:
            _hook.pauses.remove(pause)
            _hook.install_if_needed()


@contextlib.contextmanager
def record_points() -> Iterator[set[str]]:
    """Collect every pause point any thread passes through during the block."""
    seen: set[str] = set()
    with _hook.lock:
        _hook.recorders.append(seen)
        _hook.install_if_needed()
    try:
        yield seen
    finally:
        with _hook.lock:
            _hook.recorders.remove(seen)
            _hook.install_if_needed()
