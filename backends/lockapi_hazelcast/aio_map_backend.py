"""Map mode for :mod:`lockapi.aio` on ``hazelcast.asyncio`` (entry point ``hazelcast`` of the group
``lockapi.async_backends``): the plans of :mod:`.map_protocol`, run in the caller's task.

The same data layout, requests, conditions, pause points, settings, capabilities and errors as
:class:`~lockapi_hazelcast.MapBackend` (they are the same code), so sync and asyncio clients of one
cluster share every lock. What differs is only the I/O: requests are awaited on the event loop, entry
events arrive on it, and no thread is started (not per call, not per waiter, not per lease: core renews
leases and wakes waiters on the loop).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from lockapi.aio.spi import AsyncBackend
from lockapi.spi import Attempt, BackendConfig, LockInfo, Wake

from . import done
from .aio_client import AsyncClientHolder, AsyncSession, loop_time
from .errors import no_answer
from .map_protocol import CAPABILITIES, DESCRIPTION, MAX_PERMITS, PAUSE_POINTS, MapProtocol
from .protocol import LOCKS, MAP_ROLES, PERMITS
from .settings import describe, read_settings
from .watch import registries

__all__ = ["AsyncMapBackend"]


class AsyncMapBackend(AsyncBackend):
    """IMap leases through the asyncio client; push wake-ups from one entry listener per map."""

    mode = "map"
    capabilities = CAPABILITIES
    description = DESCRIPTION
    pause_points = PAUSE_POINTS
    max_permits = MAX_PERMITS

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self.settings = read_settings(config, self.mode)
        self.where = describe(config, self.mode)
        self._protocol = MapProtocol(self.settings, self.where)
        self._holder = AsyncClientHolder(self.settings, self.where, MAP_ROLES, self._set_up)
        self._watches = registries()

    # -- connection --------------------------------------------------------------------------------
    async def _set_up(self, session: AsyncSession, previous: AsyncSession | None, deadline: float) -> None:
        for kind in previous.listening if previous else ():
            await self._listen(session, kind, deadline)

    async def _listen(self, session: AsyncSession, kind: str, deadline: float) -> None:
        await self._holder.run_on(session, self._protocol.listen(kind, self._watches[kind].on_event), deadline)
        session.listening.add(kind)

    async def _ensure_listener(self, kind: str) -> None:
        """Return once the session's listener for ``kind`` is registered. The registration runs as its
        own task, shared by every waiter that needs it: a waiter cancelled while it is under way does not
        stop it half-way (registered on the cluster but not recorded, so that the next waiter would add
        a second listener); a registration that failed is retried by the next waiter."""
        deadline = self._holder.deadline()
        session = await self._holder.session(deadline)
        if kind in session.listening:
            return
        task = session.registering.get(kind)
        if task is None:
            task = asyncio.ensure_future(self._listen(session, kind, deadline))
            session.registering[kind] = task

            def done(task: asyncio.Task[None]) -> None:
                del session.registering[kind]
                if not task.cancelled():
                    task.exception()  # retrieved: the waiters awaiting it have it; none may be left

            task.add_done_callback(done)
        try:
            async with asyncio.timeout_at(loop_time(deadline)):
                await asyncio.shield(task)
        except TimeoutError:
            raise no_answer(self.where, "register entry listener", self.settings.timeout) from None

    async def aclose(self) -> None:
        await self._holder.aclose()

    # -- locks -------------------------------------------------------------------------------------
    async def try_acquire(self, name: str, holder: str, ttl: float, *, queue_ttl: float | None = None) -> Attempt:
        deadline = self._holder.deadline()
        return await self._holder.run(self._protocol.try_acquire(name, holder, ttl, queue_ttl, deadline), deadline)

    async def cancel_wait(self, name: str, holder: str) -> None:
        deadline = self._holder.deadline()
        await self._holder.run(self._protocol.cancel_wait(name, holder, deadline), deadline)

    async def release(self, name: str, holder: str, token: int) -> bool:
        return await self._holder.run(self._protocol.release(name, holder, token))

    async def extend(self, name: str, holder: str, token: int, ttl: float) -> bool:
        deadline = self._holder.deadline()
        return await self._holder.run(self._protocol.extend(name, holder, token, ttl, deadline), deadline)

    async def inspect(self, name: str) -> LockInfo | None:
        return await self._holder.run(self._protocol.inspect(name))

    async def holds(self, name: str, holder: str, token: int) -> bool:
        return await self._holder.run(self._protocol.holds(name, holder, token))

    # -- semaphores --------------------------------------------------------------------------------
    async def try_acquire_permit(self, name: str, permits: int, holder: str, ttl: float) -> Attempt:
        deadline = self._holder.deadline()
        return await self._holder.run(self._protocol.try_acquire_permit(name, permits, holder, ttl, deadline),
                                      deadline)

    async def release_permit(self, name: str, holder: str, token: int) -> bool:
        return await self._holder.run(self._protocol.release_permit(name, holder, token))

    async def extend_permit(self, name: str, holder: str, token: int, ttl: float) -> bool:
        deadline = self._holder.deadline()
        return await self._holder.run(self._protocol.extend_permit(name, holder, token, ttl, deadline), deadline)

    async def holds_permit(self, name: str, holder: str, token: int) -> bool:
        return await self._holder.run(self._protocol.holds_permit(name, holder, token))

    # -- done markers ------------------------------------------------------------------------------
    async def mark_done(self, name: str, ttl: float) -> None:
        await self._holder.run(done.mark(name, ttl))

    async def done(self, names: Sequence[str]) -> set[str]:
        return await self._holder.run(done.live(names))

    # -- administration ----------------------------------------------------------------------------
    async def set_fence_floor(self, name: str, token: int, *, semaphore: bool = False) -> None:
        deadline = self._holder.deadline()
        await self._holder.run(self._protocol.set_fence_floor(name, token, semaphore, deadline), deadline)

    async def force_release(self, name: str) -> bool:
        return await self._holder.run(self._protocol.force_release(name))

    # -- waiting -----------------------------------------------------------------------------------
    def watch(self, name: str, wake: Wake, *, semaphore: bool = False, holder: str | None = None
              ) -> contextlib.AbstractAsyncContextManager[None]:
        """A release wakes every watcher of the name, fair waiters included (``holder`` is not used).
        ``__aenter__`` returns once the cluster confirmed the listener."""
        return self._watching(PERMITS if semaphore else LOCKS, name, wake)

    @contextlib.asynccontextmanager
    async def _watching(self, kind: str, name: str, wake: Wake) -> AsyncIterator[None]:
        with self._watches[kind].register(name, wake):
            await self._ensure_listener(kind)
            yield
