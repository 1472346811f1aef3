"""The one waiting policy every backend shares.

A waiter subscribes to wake-ups first (the backend's push channel, if any, and the in-process bus),
then re-checks, then sleeps until woken, bounded by the current holder's remaining ttl (so a lost
wake-up costs at most one ttl) and by the caller's deadline. Backends without push wake-ups are
polled with jittered exponential backoff.

A fair waiter on a push backend listens to the backend alone, under its holder id, so a release wakes
only the head of the queue; the other fair waiters make one attempt per QUEUE_REFRESH to keep their
place. (The in-process bus cannot know the head: it would wake every local waiter.)
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable

from lockapi.errors import LockTimeout
from lockapi.spi import Attempt, Backend, Capability, Watchers, pause_point

POLL_FIRST = 0.002
"""First pause of a polling waiter, in seconds."""
POLL_MAX = 0.05
"""Longest pause of a polling waiter: bounds the hand-off latency on backends without push."""
PUSH_MAX = 2.0
"""Longest pause of a push-woken waiter when the holder's remaining ttl is unknown."""
QUEUE_TTL = 1.0
"""How long a fair waiter's place in the queue lives without being refreshed."""
QUEUE_REFRESH = QUEUE_TTL / 4

BusKey = tuple[bool, str]
"""(is_semaphore, name)."""


class LocalBus(Watchers[BusKey]):
    """Wakes waiters in this process as soon as a lease or permit of the same manager is released."""


class Backoff:
    """How long a waiter sleeps after a denied attempt: the one policy of the sync and async APIs.

    Push-woken waiters sleep up to PUSH_MAX (a wake-up ends the sleep early); polling waiters back off
    from POLL_FIRST to POLL_MAX with jitter. Every pause is capped by the holder's remaining ttl
    (``retry_after``), by QUEUE_REFRESH for a fair waiter (to keep its place), and by the deadline.
    """

    def __init__(self, *, push: bool, fair: bool) -> None:
        self._push = push
        self._fair = fair
        self._poll = POLL_FIRST

    def pause(self, result: Attempt, now: float, deadline: float | None) -> float:
        if self._push:
            pause = PUSH_MAX
        else:
            pause = random.uniform(self._poll / 2, self._poll)
            self._poll = min(self._poll * 2, POLL_MAX)
        if result.retry_after is not None:
            pause = min(pause, max(result.retry_after, 0.001))
        if self._fair:
            pause = min(pause, QUEUE_REFRESH)
        if deadline is not None:
            pause = min(pause, deadline - now)
        return pause


def timed_out(kind: str, name: str, wait: float | None) -> LockTimeout:
    """The error of a wait that ran out (``kind``: lock or semaphore)."""
    return LockTimeout(f"{kind} {name!r} not granted within {wait:g} s")


def wait_for_grant(
    backend: Backend,
    bus: LocalBus,
    key: BusKey,
    attempt: Callable[[], Attempt],
    wait: float | None,
    *,
    fair_holder: str | None = None,
    on_wait: Callable[[], None] | None = None,
) -> tuple[int, float]:
    """Call ``attempt`` until it grants; return (token, time.monotonic() just before the granting
    attempt was sent), or raise :class:`LockTimeout` after ``wait``.

    ``wait`` None waits forever. ``fair_holder`` (the holder id of a fair waiter): attempts are
    repeated at least every QUEUE_REFRESH to keep the waiter's place in the backend's queue, and
    wake-ups are those the backend addresses to this holder. ``on_wait`` is called once, when the
    first attempt was denied and the caller is about to wait (instrumentation: waiting callers).
    """
    started = time.monotonic()
    # A free lock is granted without subscribing to wake-ups (which costs round trips, and on a backend
    # that is down would fail only at the subscription's timeout); a denied caller subscribes and then
    # checks again, so a release between the two checks is never missed.
    result = attempt()
    if result.token is not None:
        return result.token, started
    deadline = None if wait is None else started + wait
    semaphore, name = key
    what = "semaphore" if semaphore else "lock"
    if deadline is not None and time.monotonic() >= deadline:
        raise timed_out(what, name, wait)
    if on_wait is not None:
        on_wait()
    # what waiting needs, made only by a caller that waits
    push = Capability.PUSH_WAKEUP in backend.capabilities
    fair = fair_holder is not None
    backoff = Backoff(push=push, fair=fair)
    woken = threading.Event()
    local: contextlib.AbstractContextManager[None] = (
        contextlib.nullcontext() if fair and push else bus.register(key, woken.set))
    with backend.watch(name, woken.set, semaphore=semaphore, holder=fair_holder), local:
        pause_point("acquire:watching")
        while True:
            woken.clear()
            sent = time.monotonic()
            result = attempt()
            if result.token is not None:
                return result.token, sent
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise timed_out(what, name, wait)
            woken.wait(backoff.pause(result, now, deadline))
