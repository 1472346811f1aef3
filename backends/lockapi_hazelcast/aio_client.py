"""The asyncio runner: one ``hazelcast.asyncio`` client per backend and event loop, connected lazily,
replaced when it shut itself down, and the plans of :mod:`.protocol` run on it: every step awaited in
the caller's task, bounded by the operation's deadline, failures translated by :mod:`.errors` exactly as
the blocking runner (:mod:`.client`) does.

Nothing here starts a thread: the client's connections, heartbeats and entry-listener events all run on
the event loop it was created on. That client is not thread-safe and belongs to that loop: a backend is
used from one loop (an :class:`lockapi.aio.AsyncLockManager` per loop); after that loop has closed, the
next call connects a new client on the caller's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hazelcast.asyncio import HazelcastClient, Map

from lockapi.aio.spi import drive_async
from lockapi.spi import BackendUnavailable, LockError

from .errors import no_answer, translated
from .protocol import Call, Plan, Step
from .settings import Settings

__all__ = ["AsyncClientHolder", "AsyncSession"]

log = logging.getLogger("lockapi.hazelcast.aio_client")

T = TypeVar("T")


@dataclass(eq=False)
class AsyncSession:
    """One connected asyncio client, its IMap proxies by role, the roles whose wake-up listener it has,
    the registrations under way (one task per role, which no waiter's cancellation stops), and its event
    loop."""

    client: HazelcastClient
    maps: dict[str, Map[str, str]]
    loop: asyncio.AbstractEventLoop
    listening: set[str] = field(default_factory=set)
    registering: dict[str, asyncio.Task[None]] = field(default_factory=dict)


NewClient = Callable[[AsyncSession, "AsyncSession | None", float], Awaitable[None]]


def loop_time(deadline: float) -> float:
    """``deadline`` (``time.monotonic()``) in the running loop's clock."""
    return asyncio.get_running_loop().time() + (deadline - time.monotonic())


class AsyncClientHolder:
    """Owns the asyncio client; ``await session(deadline)`` returns a running one or raises
    BackendUnavailable by ``deadline``; ``await run(plan)`` runs a plan on it.

    ``roles`` and ``on_new_client(session, previous, deadline)`` as in :class:`.client.ClientHolder`.
    """

    def __init__(self, settings: Settings, where: str, roles: tuple[str, ...],
                 on_new_client: NewClient | None = None) -> None:
        self.settings = settings
        self.where = where
        self._roles = roles
        self._on_new_client = on_new_client
        self._session: AsyncSession | None = None
        self._connecting: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._closed = False

    def deadline(self) -> float:
        return time.monotonic() + self.settings.timeout

    async def session(self, deadline: float) -> AsyncSession:
        session = self._session
        loop = asyncio.get_running_loop()
        if session is not None and session.loop is loop and session.client.lifecycle_service.is_running():
            return session
        lock = self._connect_lock(loop)
        try:
            async with asyncio.timeout_at(loop_time(deadline)):
                await lock.acquire()
        except TimeoutError:
            raise no_answer(self.where, "connect (another task is still connecting)", self.settings.timeout) from None
        try:
            if self._closed:
                raise BackendUnavailable(f"{self.where}: this backend is closed; connect again")
            previous = self._session
            if previous is not None and previous.loop is not loop:
                if not previous.loop.is_closed():
                    raise RuntimeError(f"{self.where}: this asyncio backend is in use on another event loop; "
                                       "open one lockapi.aio manager per event loop")
                previous = None  # its loop is gone, and its client with it
            session = self._session
            if previous is None or not previous.client.lifecycle_service.is_running():
                self._session = None
                session = self._session = await self._connect(loop, previous, deadline)
            assert session is not None
            return session
        finally:
            lock.release()

    def _connect_lock(self, loop: asyncio.AbstractEventLoop) -> asyncio.Lock:
        if self._connecting is None or self._connecting[0] is not loop:
            self._connecting = (loop, asyncio.Lock())
        return self._connecting[1]

    async def _connect(self, loop: asyncio.AbstractEventLoop, previous: AsyncSession | None, deadline: float
                       ) -> AsyncSession:
        with translated(self.where, "connect"):
            client = HazelcastClient(**self.settings.client_kwargs())
        try:
            async with asyncio.timeout_at(loop_time(deadline)):
                with translated(self.where, "connect"):
                    # hazelcast.asyncio's create_and_start() is exactly HazelcastClient(...) + _start(); split
                    # so that a start given up on (the deadline passed, the caller was cancelled) is shut
                    # down here: the client cleans up after an Exception, not after a CancelledError.
                    await client._start()  # type: ignore[no-untyped-call]
                with translated(self.where, "set up"):
                    prefix = self.settings.prefix
                    maps: dict[str, Map[str, str]] = {role: await client.get_map(f"{prefix}.{role}")
                                                      for role in self._roles}
                    session = AsyncSession(client, maps, loop)
                    if self._on_new_client is not None:
                        await self._on_new_client(session, previous, deadline)
            return session
        except TimeoutError:
            await _shut_down(client, self.settings.timeout)
            raise no_answer(self.where, "connect", self.settings.timeout) from None
        except BaseException:
            await _shut_down(client, self.settings.timeout)
            raise

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None and session.loop is asyncio.get_running_loop():
            await _shut_down(session.client, self.settings.timeout)

    # -- running plans -------------------------------------------------------------------------------
    async def run(self, plan: Plan[T], deadline: float | None = None) -> T:
        """Run ``plan`` in the calling task on the current client; every step must answer by
        ``deadline`` (monotonic; default: ``timeout`` from now)."""
        deadline = self.deadline() if deadline is None else deadline
        return await self.run_on(await self.session(deadline), plan, deadline)

    async def run_on(self, session: AsyncSession, plan: Plan[T], deadline: float) -> T:
        return await drive_async(plan, lambda step: self._step(session, step, deadline))

    async def _step(self, session: AsyncSession, step: Step, deadline: float) -> Any:
        if isinstance(step, Call):
            if not step.needs_answer:
                try:
                    await self.bounded(_call(session, step), deadline, step.what)
                except LockError as exc:
                    log.debug("lockapi: hazelcast %s failed (its answer was not needed): %s", step.what, exc)
                return None
            return await self.bounded(_call(session, step), deadline, step.what)
        return await self.bounded(asyncio.gather(*(_call(session, call) for call in step.calls)), deadline, step.what)

    async def bounded(self, awaitable: Awaitable[T], deadline: float, what: str) -> T:
        """``await awaitable`` with the client's errors translated; BackendUnavailable if it has not
        answered by ``deadline`` (monotonic)."""
        try:
            async with asyncio.timeout_at(loop_time(deadline)):
                with translated(self.where, what):
                    return await awaitable
        except TimeoutError:
            raise no_answer(self.where, what, self.settings.timeout) from None


async def _call(session: AsyncSession, call: Call) -> Any:
    return await getattr(session.maps[call.map], call.method)(*call.args, **(call.kwargs or {}))


async def _shut_down(client: HazelcastClient, timeout: float) -> None:
    """Shut ``client`` down, waiting at most ``timeout`` seconds; its errors are of no interest."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(timeout):
            await asyncio.shield(client.shutdown())
