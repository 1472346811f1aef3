"""Waiting on the event loop: the sync API's policy (:class:`lockapi.waiting.Backoff`), without a thread.

Two things differ from the sync API:

* **One turn per name and manager.** Waiters of one manager on the same name queue locally (FIFO) and
  only the head of that queue talks to the backend; it passes the turn on when it is granted or gives
  up. A thousand waiting tasks are then one waiter to the store, and each hand-off costs one attempt,
  not a thousand. Fair waiters are the exception: each joins the backend's fair queue when it arrives
  (a backend with push wake-ups wakes only the head), so that arrival order holds across managers.
* **Cancellation never orphans a grant.** An attempt in flight when its task is cancelled is left to
  finish; if it was granted, the grant is given back in the background. A backend whose plain attempt
  settles by itself (:attr:`~lockapi.aio.spi.AsyncBackend.settles_cancelled_attempts`) runs it in the
  caller's task instead (:func:`settled`): no task per attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Hashable
from typing import Any, TypeVar

from lockapi.aio.spi import AsyncBackend
from lockapi.errors import LockError
from lockapi.spi import Attempt, Capability, pause_point
from lockapi.waiting import Backoff, BusKey, LocalBus, timed_out

T = TypeVar("T")

GiveBack = Callable[[int], Awaitable[object]]
"""Returns a grant nobody will see (its attempt's task was cancelled): release(token)."""


class Turns:
    """Per key, a FIFO turn (``asyncio.Lock``) among the waiters of one manager."""

    def __init__(self) -> None:
        self._turns: dict[Hashable, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def turn(self, key: Hashable, deadline: float | None, what: str, name: str, wait: float | None,
                   on_queued: Callable[[], None] | None = None, *, exclusive: bool = True) -> AsyncIterator[None]:
        """Wait for ``key``'s turn (counted in :meth:`waiting` meanwhile); ``on_queued`` is called if the
        caller has to queue. With ``exclusive=False`` the waiter is only counted: a fair waiter must join
        the backend's queue when it arrives, since a waiter of another manager that arrives later must
        not overtake it (rule 7)."""
        lock, users = self._turns.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._turns[key] = (lock, users + 1)
        if on_queued is not None and lock.locked():
            on_queued()
        try:
            if not exclusive:
                yield
                return
            if users == 0:  # nobody holds or awaits this turn: taken without waiting, so without a timeout
                await lock.acquire()
            else:
                try:
                    async with asyncio.timeout_at(_loop_time(deadline)):
                        await lock.acquire()
                except TimeoutError:
                    raise timed_out(what, name, wait) from None
            try:
                yield
            finally:
                lock.release()
        finally:
            lock, users = self._turns[key]
            if users == 1:
                del self._turns[key]
            else:
                self._turns[key] = (lock, users - 1)

    def waiting(self) -> int:
        """Waiters queued or holding a turn (for tests and metrics)."""
        return sum(users for _, users in self._turns.values())


def _loop_time(deadline: float | None) -> float | None:
    """``deadline`` (time.monotonic) in the running loop's clock."""
    if deadline is None:
        return None
    return asyncio.get_running_loop().time() + (deadline - time.monotonic())


class Background:
    """Tasks a manager started and must not lose (give-backs, renewals); awaited by ``aclose``."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()

    def spawn(self, coro: Awaitable[object]) -> asyncio.Task[object]:
        task: asyncio.Task[object] = asyncio.ensure_future(coro)
        self.track(task)
        return task

    def track(self, task: asyncio.Task[Any]) -> None:
        """Count ``task`` in (kept referenced, awaited by :meth:`drain`) until it ends."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        while self._tasks:
            tasks = list(self._tasks)
            # a finished task leaves the set by a callback not run yet; from Python 3.12 gather() of
            # finished tasks returns without a turn of the loop, so without this the loop would spin
            self._tasks.difference_update(task for task in tasks if task.done())
            await asyncio.gather(*tasks, return_exceptions=True)


if sys.version_info >= (3, 12):
    def _start_task(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A task that starts at once, in this call, until its first real wait (a request sent, its
        reply awaited), instead of at the loop's next turn: a turn of the loop less per attempt, and
        none at all when the attempt never waits (``memory://``)."""
        return asyncio.Task(coro, loop=loop, eager_start=True)
else:
    def _start_task(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return loop.create_task(coro)


async def finish_anyway(work: Awaitable[T], background: Background,
                        orphan: Callable[[T], Awaitable[object]] | None = None,
                        in_flight: list[asyncio.Task[object]] | None = None) -> T:
    """Await ``work`` so that cancelling the caller does not cancel it: ``work`` runs to its end as a
    task, and if the caller was cancelled first, its result goes to ``orphan`` (a grant nobody will see
    is given back) and the task to ``background`` and ``in_flight``. One task and one future: cheaper
    than ``asyncio.shield``. (While the caller awaits the answer, the caller's frame keeps the task
    referenced; ``background`` needs it only once nobody awaits it.)"""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[T] = loop.create_future()

    async def run() -> None:
        try:
            result = await work
        except BaseException as exc:  # handed to the caller; if it is gone, nothing was granted
            if not answer.done():
                answer.set_exception(exc)
            return
        if not answer.done():
            answer.set_result(result)
        elif orphan is not None:
            await orphan(result)

    running = _start_task(loop, run())
    try:
        return await answer
    except asyncio.CancelledError:
        if answer.done() and not answer.cancelled():
            # answered, but the caller was cancelled before it woke up to take the answer (in the same
            # turn of the loop): nobody will see this result either
            if orphan is not None and answer.exception() is None:
                giving_back = background.spawn(orphan(answer.result()))
                if in_flight is not None:
                    in_flight.append(giving_back)
        elif not running.done():
            background.track(running)
            if in_flight is not None:
                in_flight.append(running)
        raise


def guarded(attempt: Callable[[], Awaitable[Attempt]], give_back: GiveBack,
            background: Background, in_flight: list[asyncio.Task[object]] | None = None
            ) -> Coroutine[Any, Any, Attempt]:
    """Run one attempt so that cancelling the caller cannot lose a grant: the attempt runs on (tracked
    by ``background``), and a grant it returns after the caller was cancelled is given back.

    ``in_flight`` collects the background task that finishes such an attempt: whatever must follow the
    attempt (leaving a fair queue, which the attempt may still be joining) waits for it. (A plain
    function returning :func:`finish_anyway`'s coroutine: no frame of its own for the reply to pass.)"""
    return finish_anyway(attempt(), background, functools.partial(_give_back_grant, give_back), in_flight)


async def settled(attempt: Callable[[], Awaitable[Attempt]], give_back: GiveBack,
                  background: Background, in_flight: list[asyncio.Task[object]] | None = None) -> Attempt:
    """:func:`guarded`'s guarantee for an attempt that settles by itself
    (:attr:`AsyncBackend.settles_cancelled_attempts`), without its task: the attempt runs in the
    caller's task; if the caller was cancelled meanwhile (its ``cancelling()`` count grew), a grant is
    given back (in this task, or in ``background`` if cancelled again meanwhile) and the cancellation
    is raised, also over the attempt's own error, so ``asyncio.timeout`` and ``TaskGroup`` see it.
    (``in_flight``: nothing runs on after this returns or raises.)"""
    task = asyncio.current_task()
    assert task is not None
    before = task.cancelling()
    try:
        result = await attempt()
    except LockError as exc:
        if task.cancelling() > before:
            raise asyncio.CancelledError from exc
        raise
    if task.cancelling() > before:
        if result.token is not None:
            with contextlib.suppress(LockError):
                await finish_anyway(give_back(result.token), background)
        raise asyncio.CancelledError
    return result


def attempts(backend: AsyncBackend, *, semaphore: bool = False, fair: bool = False) -> Callable[
        [Callable[[], Awaitable[Attempt]], GiveBack, Background, list[asyncio.Task[object]] | None],
        Awaitable[Attempt]]:
    """How core runs an attempt: :func:`settled` for a plain lock attempt on a backend whose attempt
    settles, else :func:`guarded` (fair attempts, permits, every other backend)."""
    if backend.settles_cancelled_attempts and not (semaphore or fair):
        return settled
    return guarded


async def _give_back_grant(give_back: GiveBack, attempt: Attempt) -> None:
    """:func:`guarded`'s orphan: an attempt nobody will see returned ``attempt``; give a grant back."""
    if attempt.token is not None:
        await give_back(attempt.token)


async def wait_for_grant(
    backend: AsyncBackend,
    bus: LocalBus,
    key: BusKey,
    attempt: Callable[[], Awaitable[Attempt]],
    deadline: float | None,
    wait: float | None,
    give_back: GiveBack,
    background: Background,
    *,
    fair_holder: str | None = None,
    on_wait: Callable[[], None] | None = None,
    in_flight: list[asyncio.Task[object]] | None = None,
) -> tuple[int, float]:
    """Attempt until granted; (token, ``time.monotonic()`` just before the granting attempt was sent).

    Raises :class:`lockapi.LockTimeout` at ``deadline`` (``time.monotonic()``; None: never).
    ``on_wait`` is called once, when the first attempt was denied and the caller starts to wait.
    ``in_flight`` as in :func:`guarded`.
    """
    # As the sync API: a free lock is granted without subscribing; a denied caller subscribes and
    # then checks again, so a release between the two checks is never missed.
    semaphore, name = key
    run = attempts(backend, semaphore=semaphore, fair=fair_holder is not None)
    sent = time.monotonic()
    result = await run(attempt, give_back, background, in_flight)
    if result.token is not None:
        return result.token, sent
    what = "semaphore" if semaphore else "lock"
    if deadline is not None and time.monotonic() >= deadline:
        raise timed_out(what, name, wait)
    if on_wait is not None:
        on_wait()
    # what waiting needs, made only by a caller that waits
    push = Capability.PUSH_WAKEUP in backend.capabilities
    fair = fair_holder is not None
    backoff = Backoff(push=push, fair=fair)
    loop = asyncio.get_running_loop()
    woken = asyncio.Event()

    def wake() -> None:  # from any thread
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting any more
            loop.call_soon_threadsafe(woken.set)

    local: contextlib.AbstractContextManager[None] = (
        contextlib.nullcontext() if fair and push else bus.register(key, wake))
    async with backend.watch(name, wake, semaphore=semaphore, holder=fair_holder):
        with local:
            pause_point("acquire:watching")
            while True:
                woken.clear()
                sent = time.monotonic()
                result = await run(attempt, give_back, background, in_flight)
                if result.token is not None:
                    return result.token, sent
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    raise timed_out(what, name, wait)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(backoff.pause(result, now, deadline)):
                        await woken.wait()


def once(fn: Callable[[], None] | None) -> Callable[[], None] | None:
    """``fn`` callable at most once (None stays None)."""
    if fn is None:
        return None
    called = False

    def call() -> None:
        nonlocal called
        if not called:
            called = True
            fn()

    return call
