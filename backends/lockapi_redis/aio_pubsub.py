"""Release notifications for the asyncio backend: one shared pub/sub connection (per server node) read
by one task, on the event loop.

The policy is the thread hub's (:mod:`lockapi_redis.pubsub`) and the channel table is the same
(:mod:`lockapi_redis.subscriptions`): subscriptions are reference-counted per channel, the first watcher
of a channel sends SUBSCRIBE (SSUBSCRIBE with sharded pub/sub), the last to leave sends UNSUBSCRIBE, and
:meth:`AsyncPubSubHub.watch`'s ``__aenter__`` returns only once the server confirmed the subscription; a
standalone or sentinel backend uses one connection, a cluster one per master that owns a watched
channel's slot. A watcher that leaves, by cancellation too, is gone at once, and with it the channel's
subscription if it was the last. When a connection breaks (a server restart) every watcher on it is
woken, the reader reconnects and re-subscribes. A subscription not confirmed within ``timeout`` fails
that watch with :class:`BackendUnavailable` and re-routes the channel (the reader reconnects, a cluster
refreshes its slot map). Wake-up callbacks run on the loop, from the reader task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

from lockapi.spi import BackendUnavailable, Wake

from .aio_pool import close_now
from .subscriptions import RECONNECT_BACKOFF, Channel, Entry, Routing, Subscriptions, call

log = logging.getLogger("lockapi.redis.pubsub")

ConnectionFactory = Callable[[], AbstractConnection]
NodeFor = Callable[[str], Awaitable[tuple[str, ConnectionFactory]]]
"""Resolve a channel to (node name, factory of a fresh pub/sub connection to that node)."""


class _Reader:
    """One pub/sub connection and the task that reads it."""

    def __init__(self, hub: AsyncPubSubHub, node: str, factory: ConnectionFactory) -> None:
        self.hub = hub
        self.node = node
        self.factory = factory
        self.conn: AbstractConnection | None = None
        self.retired = False
        self.last_used = time.monotonic()
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"lockapi-redis-pubsub-{node}")

    @property
    def connected(self) -> bool:
        return self.conn is not None

    def send(self, *args: str) -> None:
        """The write is buffered, never awaited: commands keep their order, and a cancelled watcher can
        still leave."""
        conn = self.conn
        writer = None if conn is None else conn._writer
        if conn is None or writer is None:
            return
        try:
            writer.writelines(conn.pack_command(*args))
        except Exception:
            self.drop()

    def drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            close_now(conn)

    def retire(self) -> None:
        self.retired = True
        self.drop()
        self.task.cancel()

    async def _run(self) -> None:
        hub = self.hub
        first, longest = RECONNECT_BACKOFF
        backoff = first
        try:
            while not hub.closed and not self.retired:
                try:
                    conn = self.factory()
                    await conn.connect()  # connect and handshake are bounded by the timeouts; reads then block
                except Exception as exc:  # the reader must outlive any failure: it is the node's only one
                    log.debug("pub/sub connect to %s failed: %s", self.node, exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, longest)
                    continue
                backoff = first
                if hub.closed or self.retired:
                    close_now(conn)
                    return
                conn.socket_timeout = None  # until a message or a close
                self.conn = conn
                for channel in hub.subs.resubscribe(self.node):
                    self.send(hub.subs.subscribe_cmd, channel)
                await self._read(conn)
                if self.conn is conn:
                    self.drop()
                call(hub.subs.wakes_on(self.node))
        finally:
            self.drop()

    async def _read(self, conn: AbstractConnection) -> None:
        while not self.hub.closed:
            try:
                reply: Any = await conn.read_response(disconnect_on_error=False)
            except ResponseError as exc:  # e.g. MOVED for a sharded subscribe: that watch times out
                log.debug("pub/sub on %s: %s", self.node, exc)
                continue
            except Exception as exc:  # broken, or closed under us by drop()
                log.debug("pub/sub connection to %s ended: %s", self.node, exc)
                return
            if isinstance(reply, list) and len(reply) >= 2:
                call(self.hub.subs.dispatch(reply))


class AsyncPubSubHub:
    """Reference-counted subscriptions over shared connections, on one event loop; see the module."""

    def __init__(self, *, sharded: bool, timeout: float, node_for: NodeFor,
                 refresh: Callable[[], Awaitable[object]]) -> None:
        self.subs = Subscriptions(sharded=sharded, confirmation=asyncio.Event)
        self.routing: Routing[_Reader] = Routing(self.subs, lambda node, factory: _Reader(self, node, factory))
        self.timeout = timeout
        self.node_for = node_for
        self.refresh = refresh
        self.closed = False
        self._refreshing: asyncio.Task[object] | None = None

    @contextlib.asynccontextmanager
    async def watch(self, channel: str, wake: Wake, holder: str | None = None) -> AsyncIterator[None]:
        """Call ``wake`` on every message on ``channel`` addressed to everyone (empty) or to ``holder``,
        while open; subscribed when entered."""
        entry = (wake, None if holder is None else holder.encode())
        state = await self._join(channel, entry)
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    await state.confirmed.wait()
            except TimeoutError:
                self.routing.reroute(channel, state)
                if self._refreshing is None or self._refreshing.done():
                    self._refreshing = asyncio.get_running_loop().create_task(self._refresh())
                raise BackendUnavailable(
                    f"redis did not confirm the subscription within {self.timeout:g}s") from None
            yield
        finally:
            self.routing.detach(channel, state, entry)

    def watcher_count(self) -> int:
        return self.subs.watcher_count()

    def connection_count(self) -> int:
        """Open pub/sub connections (for tests and diagnostics)."""
        return self.routing.connections()

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        readers = list(self.routing.readers.values())
        self.routing.readers.clear()
        for reader in readers:
            reader.retire()
        tasks = [r.task for r in readers] + ([self._refreshing] if self._refreshing is not None else [])
        await asyncio.gather(*tasks, return_exceptions=True)

    def close_idle(self, unused_for: float) -> int:
        """Close the connections that carried no subscription for ``unused_for`` seconds; return how many."""
        return self.routing.close_idle(unused_for)

    async def _refresh(self) -> None:
        with contextlib.suppress(Exception):
            await self.refresh()

    async def _join(self, channel: str, entry: Entry) -> Channel:
        if self.closed:
            raise BackendUnavailable("the redis backend is closed")
        state = self.subs.channels.get(channel)
        if state is None:
            node, factory = await self.node_for(channel)
            if self.closed:
                raise BackendUnavailable("the redis backend is closed")
            state = self.subs.channels.get(channel)  # another watcher may have joined meanwhile
            if state is None:
                state = self.routing.attach(channel, node, factory)
        state.wakes.append(entry)
        return state
