"""AsyncRedisBackend: the Redis backend for :mod:`lockapi.aio`, natively on redis.asyncio.

It runs the same operations as :class:`lockapi_redis.RedisBackend` (:mod:`lockapi_redis.operations`:
scripts, keys, arguments, reply decoding, ``wait_replicas`` checks, error messages) from the same
settings (:mod:`lockapi_redis.settings`); only the I/O differs: commands on the asyncio pool
(:mod:`lockapi_redis.aio_pool`, standalone/TLS/sentinel) or redis.asyncio's cluster client, wake-ups
from one pub/sub connection per node read by a task (:mod:`lockapi_redis.aio_pubsub`), idle sweeps from
a task. No thread is started. Use a backend from one event loop; it is not fork-safe (asyncio objects
are not): a child process opens its own.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any, TypeVar

from redis.asyncio.cluster import RedisCluster

from lockapi.aio.spi import AsyncBackend, drive_async
from lockapi.spi import Attempt, BackendConfig, BackendUnavailable, Capability, LockInfo, Wake

from .aio_clients import ASYNC, cluster_mget, cluster_script, command, node_pipeline, pipeline, run_script
from .aio_pool import AsyncBoundedPool
from .aio_pubsub import AsyncPubSubHub, ConnectionFactory
from .backend import RedisBackend
from .clients import connector, pubsub_connection
from .idle import AsyncIdleSweeper
from .operations import (
    CLIENT_ERRORS,
    Command,
    Eval,
    MultiGet,
    Operation,
    Operations,
    Replicated,
    Step,
    unavailable,
)
from .settings import Settings, parse

T = TypeVar("T")


class AsyncRedisBackend(AsyncBackend):
    """Locks on Redis for asyncio code (redis, rediss, redis+sentinel, redis+cluster); see the module."""

    capabilities = RedisBackend.capabilities - {Capability.ITER_DONE}  # iter_done is not in the async SPI
    description = "Redis / Redis Sentinel / Redis Cluster on redis.asyncio (Lua scripts, pub/sub wake-ups, fencing)"

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        config.options.int("async_threads", 8, minimum=1)  # lockapi.aio's option for adapted backends: no pool here
        self.settings: Settings = parse(config)
        self._where = config.redacted_url
        self.ops = Operations(self.settings, self._where)
        self.pause_points = self.ops.pause_points
        self.keys = self.ops.keys
        target = connector(self.settings, config.timeout, ASYNC)  # no I/O
        self._cluster: RedisCluster | None = target if self.settings.kind == "cluster" else None
        self._pool: AsyncBoundedPool | None = None if self._cluster is not None else target
        self._hub = AsyncPubSubHub(sharded=self.settings.sharded_pubsub, timeout=config.timeout,
                                   node_for=self._node_for, refresh=self._refresh_topology)
        self._closed = False
        self._last_call = time.monotonic()
        self._sweeper: AsyncIdleSweeper | None = None

    # -- running operations -----------------------------------------------------------------------
    async def _run(self, op: Operation[T]) -> T:
        if type(op) is Eval:  # the hot path: one script
            return op.decode(await self._eval(op))
        if isinstance(op, (Command, MultiGet)):
            return await self._step(op)  # type: ignore[no-any-return]
        return await drive_async(op, self._step)  # type: ignore[arg-type]

    async def _eval(self, call: Eval[Any]) -> Any:
        self._using()
        try:
            if self._pool is not None:
                return await run_script(self._pool, call.script, call.keys, call.args)
            assert self._cluster is not None
            return await cluster_script(self._cluster, call.script, call.keys, call.args)
        except CLIENT_ERRORS as exc:
            raise unavailable(self._where, exc) from None

    async def _step(self, step: Step) -> Any:
        if type(step) is Eval:
            return step.decode(await self._eval(step))
        self._using()
        try:
            return await self._step_io(step)
        except CLIENT_ERRORS as exc:
            raise unavailable(self._where, exc) from None

    async def _step_io(self, step: Step) -> Any:
        pool, cluster = self._pool, self._cluster
        if type(step) is Command:
            if pool is not None:
                return step.decode(await command(pool, *step.args))
            assert cluster is not None
            return step.decode(await cluster.execute_command(*step.args))
        if type(step) is MultiGet:
            if pool is not None:
                return step.decode(await command(pool, "MGET", *step.keys))
            assert cluster is not None
            return step.decode(await cluster_mget(cluster, step.keys))
        assert type(step) is Replicated
        call = step.call
        commands = (("EVAL", call.script.text, len(call.keys), *call.keys, *call.args),
                    ("WAIT", step.replicas, step.timeout_ms))
        if pool is not None:
            reply, acked = await pipeline(pool, *commands)
        else:
            assert cluster is not None
            reply, acked = await node_pipeline(cluster, call.keys[0], *commands)
        return call.decode(reply), int(acked)

    def _using(self) -> None:
        """Before any I/O: refuse once closed; note the time (idle sweeps); start the idle sweeper."""
        if self._closed:
            raise BackendUnavailable(f"the redis backend for {self._where} is closed")
        self._last_call = time.monotonic()
        if self._sweeper is None and self.settings.idle_timeout > 0:
            self._sweeper = AsyncIdleSweeper(self.settings.idle_timeout, [self._close_idle_commands,
                                                                          self._hub.close_idle])

    # -- plumbing ---------------------------------------------------------------------------------
    async def _node_for(self, channel: str) -> tuple[str, ConnectionFactory]:
        """The node that serves ``channel`` and a factory of pub/sub connections to it."""
        self._using()
        retry = ASYNC.no_retry()
        if self._cluster is None:
            pool = self._pool
            return "server", lambda: pubsub_connection(pool, retry)
        cluster = self._cluster
        try:
            await cluster.initialize()
            node = cluster.get_node_from_key(channel)
        except CLIENT_ERRORS as exc:
            raise unavailable(self._where, exc) from None
        if node is None:
            raise BackendUnavailable(f"redis at {self._where}: no cluster node serves the slot of {channel!r}")
        return node.name, lambda: pubsub_connection(node, retry)

    async def _refresh_topology(self) -> None:
        """Re-read which node owns which slot (after a failover); nothing to do off a cluster."""
        if self._cluster is not None:
            await self._cluster.nodes_manager.initialize()

    async def _close_idle_commands(self, unused_for: float) -> None:
        """Close command connections unused for ``unused_for`` seconds (``idle_timeout``); on a cluster,
        every idle one once the backend made no call for that long (as the blocking backend does)."""
        if self._pool is not None:
            self._pool.close_idle(unused_for)
        elif self._cluster is not None and time.monotonic() - self._last_call >= unused_for:
            for node in self._cluster.get_nodes():
                free = list(node._free)  # redis-py keeps no use times per cluster connection
                for conn in free:
                    await conn.disconnect()

    # -- locks ------------------------------------------------------------------------------------
    async def try_acquire(self, name: str, holder: str, ttl: float, *, queue_ttl: float | None = None) -> Attempt:
        return await self._run(self.ops.try_acquire(name, holder, ttl, queue_ttl))

    async def release(self, name: str, holder: str, token: int) -> bool:
        return await self._run(self.ops.release(name, holder, token))

    async def extend(self, name: str, holder: str, token: int, ttl: float) -> bool:
        return await self._run(self.ops.extend(name, holder, token, ttl))

    async def inspect(self, name: str) -> LockInfo | None:
        return await self._run(self.ops.inspect(name))

    async def holds(self, name: str, holder: str, token: int) -> bool:
        return await self._run(self.ops.holds(name, holder, token))

    async def cancel_wait(self, name: str, holder: str) -> None:
        await self._run(self.ops.cancel_wait(name, holder))

    async def try_acquire_many(
        self, names: Sequence[str], holder: str, ttl: float, *, skip_done: bool = False
    ) -> dict[str, int]:
        return await self._run(self.ops.try_acquire_many(names, holder, ttl, skip_done))

    # -- semaphores -------------------------------------------------------------------------------
    async def try_acquire_permit(self, name: str, permits: int, holder: str, ttl: float) -> Attempt:
        return await self._run(self.ops.try_acquire_permit(name, permits, holder, ttl))

    async def release_permit(self, name: str, holder: str, token: int) -> bool:
        return await self._run(self.ops.release_permit(name, holder, token))

    async def extend_permit(self, name: str, holder: str, token: int, ttl: float) -> bool:
        return await self._run(self.ops.extend_permit(name, holder, token, ttl))

    async def holds_permit(self, name: str, holder: str, token: int) -> bool:
        return await self._run(self.ops.holds_permit(name, holder, token))

    # -- done markers -----------------------------------------------------------------------------
    async def mark_done(self, name: str, ttl: float) -> None:
        await self._run(self.ops.mark_done(name, ttl))

    async def done(self, names: Sequence[str]) -> set[str]:
        return await self._run(self.ops.done(names))

    # -- administration ---------------------------------------------------------------------------
    async def set_fence_floor(self, name: str, token: int, *, semaphore: bool = False) -> None:
        await self._run(self.ops.set_fence_floor(name, token, semaphore))

    async def force_release(self, name: str) -> bool:
        return await self._run(self.ops.force_release(name))

    # -- waiting ----------------------------------------------------------------------------------
    def watch(
        self, name: str, wake: Wake, *, semaphore: bool = False, holder: str | None = None
    ) -> contextlib.AbstractAsyncContextManager[None]:
        return self._hub.watch(self.keys.channel(name, semaphore=semaphore), wake, holder)

    def watcher_count(self) -> int:
        """Live watch() contexts (for tests and diagnostics)."""
        return self._hub.watcher_count()

    def pubsub_connections(self) -> int:
        """Open pub/sub connections (for tests and diagnostics)."""
        return self._hub.connection_count()

    # -- lifecycle --------------------------------------------------------------------------------
    async def ping(self) -> None:
        await self._run(self.ops.ping())

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._sweeper is not None:
            await self._sweeper.aclose()
        await self._hub.aclose()
        with contextlib.suppress(Exception):
            if self._cluster is not None:
                await self._cluster.aclose()
            elif self._pool is not None:
                await self._pool.aclose()
                for sentinel in getattr(getattr(self._pool, "sentinel_manager", None), "sentinels", ()):
                    await sentinel.aclose()
