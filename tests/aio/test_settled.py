"""Core's side of a backend whose plain attempt settles (``AsyncBackend.settles_cancelled_attempts``): the
attempt runs in the caller's task, without a guard task, and a cancellation at each of its awaits is safe:

* before the request is "sent" (the attempt raises CancelledError: nothing was granted);
* while the request is in flight (the attempt settles: its grant is given back, the cancellation raised);
* twice while in flight, and once more while the grant is being given back;
* as the reply comes (the reply is in hand, the task not yet woken);
* an attempt that fails after the cancellation (the cancellation wins, so ``asyncio.timeout`` works).

The PostgreSQL backend's own settling (each await of its pool and of psycopg's wait) is covered on a real
server by tests/sql/test_asyncio_faults.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from lockapi_memory import AsyncMemoryBackend

import lockapi.aio
import lockapi.plugins
from lockapi.spi import Attempt, BackendUnavailable

pytestmark = pytest.mark.timeout(60)


class Settling(AsyncMemoryBackend):
    """The in-memory backend as a settling backend: a plain attempt waits at ``before`` (nothing sent: a
    cancellation there raises), grants, then waits at ``reply`` for its "reply", which a cancellation does
    not interrupt (counted in ``settled``). ``fail`` makes the attempt raise BackendUnavailable instead
    of returning; ``release_gate`` holds give-backs."""

    settles_cancelled_attempts = True

    def setup(self) -> None:
        self.before = asyncio.Event()
        self.reply = asyncio.Event()
        self.release_gate = asyncio.Event()
        self.release_gate.set()
        self.releasing = asyncio.Event()
        self.at: asyncio.Event = asyncio.Event()
        self.where = ""
        self.settled = 0
        self.fail = False
        self.tasks: list[asyncio.Task[Any] | None] = []

    async def _settle(self, event: asyncio.Event) -> None:
        while not event.is_set():
            try:
                await event.wait()
            except asyncio.CancelledError:
                self.settled += 1

    async def try_acquire(self, name: str, holder: str, ttl: float, *, queue_ttl: float | None = None) -> Attempt:
        self.tasks.append(asyncio.current_task())
        if queue_ttl is not None:
            return await super().try_acquire(name, holder, ttl, queue_ttl=queue_ttl)
        self.where = "before"
        self.at.set()
        await self.before.wait()  # not sent yet: a cancellation interrupts
        attempt = await super().try_acquire(name, holder, ttl)
        self.where = "in flight"
        self.at.set()
        await self._settle(self.reply)
        if self.fail:
            raise BackendUnavailable("the reply was lost (test)")
        return attempt

    async def try_acquire_permit(self, name: str, permits: int, holder: str, ttl: float) -> Attempt:
        self.tasks.append(asyncio.current_task())
        return await super().try_acquire_permit(name, permits, holder, ttl)

    async def release(self, name: str, holder: str, token: int) -> bool:
        self.releasing.set()
        await self.release_gate.wait()
        return await super().release(name, holder, token)


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(main())  # type: ignore[arg-type]


def start() -> tuple[Settling, lockapi.aio.AsyncLockManager]:
    backend = Settling(lockapi.plugins.backend_config(f"memory://{uuid.uuid4().hex}", {}))
    backend.setup()
    return backend, lockapi.aio.AsyncLockManager(backend)


async def plain(mgr: lockapi.aio.AsyncLockManager, name: str) -> Any:
    return await mgr.try_acquire(name, ttl=30)


async def generic(mgr: lockapi.aio.AsyncLockManager, name: str) -> Any:
    return await mgr.try_acquire(name, ttl=30, on_lost=lambda *_: None)  # not the plain path


async def waiting(mgr: lockapi.aio.AsyncLockManager, name: str) -> Any:
    return await mgr.acquire(name, ttl=30, wait=30)


CALLS: dict[str, Callable[[lockapi.aio.AsyncLockManager, str], Awaitable[Any]]] = {
    "plain try_acquire": plain, "generic try_acquire": generic, "acquire(wait=)": waiting}


async def reach(backend: Settling, where: str) -> None:
    async with asyncio.timeout(10):
        while backend.where != where:
            backend.at.clear()
            await backend.at.wait()


@pytest.mark.parametrize("call", list(CALLS))
def test_the_attempt_runs_in_the_callers_task(call: str) -> None:
    async def main() -> None:
        backend, mgr = start()
        backend.before.set()
        backend.reply.set()
        lease = await CALLS[call](mgr, "n")
        assert lease is not None
        assert backend.tasks == [asyncio.current_task()], "the attempt ran in a task of its own"
        await lease.release()
        await mgr.aclose()

    run(main)


@pytest.mark.parametrize("call", list(CALLS))
def test_cancelled_before_the_request_was_sent(call: str) -> None:
    async def main() -> None:
        backend, mgr = start()
        task = asyncio.create_task(CALLS[call](mgr, "n"))
        await reach(backend, "before")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await backend.inspect("n") is None, "granted although cancelled before it was sent"
        assert not mgr._background._tasks
        await mgr.aclose()

    run(main)


@pytest.mark.parametrize("cancels", [1, 2])
@pytest.mark.parametrize("call", list(CALLS))
def test_cancelled_while_in_flight_settles_and_gives_the_grant_back(call: str, cancels: int) -> None:
    async def main() -> None:
        backend, mgr = start()
        backend.before.set()
        task = asyncio.create_task(CALLS[call](mgr, "n"))
        await reach(backend, "in flight")
        for _ in range(cancels):
            task.cancel()
            await asyncio.sleep(0)  # delivered: the attempt settles on
        assert backend.settled == cancels
        assert (await backend.inspect("n")) is not None  # granted on the store, the reply not read yet
        backend.reply.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()
        assert await backend.inspect("n") is None, "the settled grant was not given back before the cancellation"
        await mgr.aclose()

    run(main)


def test_cancelled_again_while_the_grant_is_given_back() -> None:
    """The give-back runs on in the background; aclose() waits for it."""
    async def main() -> None:
        backend, mgr = start()
        backend.before.set()
        backend.release_gate.clear()
        task = asyncio.create_task(mgr.try_acquire("n", ttl=30))
        await reach(backend, "in flight")
        task.cancel()
        await asyncio.sleep(0)
        backend.reply.set()
        await backend.releasing.wait()  # the give-back, held at release_gate
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await backend.inspect("n") is not None
        backend.release_gate.set()
        await mgr._background.drain()
        assert await backend.inspect("n") is None, "the give-back cancelled half-way did not complete"
        await mgr.aclose()

    run(main)


@pytest.mark.parametrize("call", list(CALLS))
def test_cancelled_as_the_reply_came(call: str) -> None:
    """The reply is in hand, but the cancellation comes before the caller's task wakes up to take it."""
    async def main() -> None:
        backend, mgr = start()
        backend.before.set()
        task = asyncio.create_task(CALLS[call](mgr, "n"))
        await reach(backend, "in flight")
        backend.reply.set()
        task.cancel()  # in the same turn: the task wakes up to a cancellation, its reply ready
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await backend.inspect("n") is None, "a grant whose caller was cancelled was kept"
        await mgr.aclose()

    run(main)


@pytest.mark.parametrize("call", list(CALLS))
def test_asyncio_timeout_and_taskgroup_see_the_settled_cancellation(call: str) -> None:
    async def settle_later(backend: Settling) -> None:
        await reach(backend, "in flight")
        await asyncio.sleep(0.1)
        backend.reply.set()

    async def main_later() -> None:
        backend, mgr = start()
        backend.before.set()
        later = asyncio.create_task(settle_later(backend))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await CALLS[call](mgr, "n")
        await later
        assert backend.settled == 1
        assert await backend.inspect("n") is None, "the grant of the timed-out call is held"
        backend.reply.clear()
        backend.where = ""
        later = asyncio.create_task(settle_later(backend))

        async def fail() -> None:
            await reach(backend, "in flight")
            raise ValueError("a sibling failed")

        with pytest.raises(ExceptionGroup):
            async with asyncio.TaskGroup() as group:
                group.create_task(CALLS[call](mgr, "m"))
                group.create_task(fail())
        await later
        assert backend.settled == 2
        assert await backend.inspect("m") is None, "the grant of the task cancelled by its group is held"
        await mgr.aclose()

    run(main_later)


@pytest.mark.parametrize("call", list(CALLS))
def test_an_attempt_that_fails_after_the_cancellation_raises_the_cancellation(call: str) -> None:
    async def main() -> None:
        backend, mgr = start()
        backend.before.set()
        backend.fail = True
        task = asyncio.create_task(CALLS[call](mgr, "n"))
        await reach(backend, "in flight")
        task.cancel()
        await asyncio.sleep(0)
        backend.reply.set()
        with pytest.raises(asyncio.CancelledError) as raised:
            await task
        assert isinstance(raised.value.__cause__, BackendUnavailable) or task.cancelled()
        await mgr.aclose()

    run(main)


def test_fair_attempts_and_permits_keep_the_guard() -> None:
    async def main() -> None:
        backend, mgr = start()
        backend.before.set()
        backend.reply.set()
        lease = await mgr.try_acquire("n", ttl=30, fair=True)
        assert lease is not None
        assert backend.tasks and backend.tasks[0] is not asyncio.current_task(), "a fair attempt lost its guard"
        await lease.release()
        backend.tasks.clear()
        permit = await mgr.semaphore("s", permits=2).try_acquire(ttl=30)
        assert permit is not None
        assert backend.tasks and backend.tasks[0] is not asyncio.current_task(), "a permit attempt lost its guard"
        await permit.release()
        await mgr.aclose()

    run(main)
