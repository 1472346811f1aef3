"""redis.asyncio for the asyncio backend: the classes (:data:`ASYNC`, built by
:func:`lockapi_redis.clients.connector` from the same settings as the blocking client) and the I/O of
one step on a pooled connection.

As in the blocking backend, a command on standalone, TLS and sentinel servers runs on a connection of the
pool (:mod:`lockapi_redis.aio_pool`) directly: packed, written to the stream, its reply read with the
connection's ``socket_timeout``, without redis.asyncio's per-command client layer (retry wrapper,
response callbacks, metrics hooks, and on Python 3.11 a task per write for its write timeout: a write
that the kernel does not take at once waits for the stream to drain, within the timeout). A cluster
client routes commands itself (MOVED, ASK); lockapi never uses its pipelines (they need the cluster
retries lockapi turns off).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.crc import key_slot
from redis.exceptions import AskError, ConnectionError, MovedError, NoScriptError, ResponseError, TimeoutError

from .aio_pool import AsyncBoundedPool, AsyncBoundedSentinelPool
from .clients import Flavour, pack
from .scripts import Script

ASYNC = Flavour(connection=Connection, ssl_connection=SSLConnection, pool=AsyncBoundedPool,
                sentinel_pool=AsyncBoundedSentinelPool, sentinel=Sentinel, cluster=RedisCluster,
                cluster_node=ClusterNode, retry=Retry)

_BUFFERED = 64 * 1024
"""Bytes left unsent in a connection's buffer after which a write waits for it to drain."""

def _write(conn: AbstractConnection, packed: list[bytes]) -> bool:
    """Write to a connected connection; False if the kernel left more than :data:`_BUFFERED` bytes
    unsent (the server is not reading): then :func:`_drain`."""
    writer = conn._writer  # connected (the pool hands out connected connections only)
    assert writer is not None
    writer.writelines(packed)
    return bool(writer.transport.get_write_buffer_size() <= _BUFFERED)


async def _drain(conn: AbstractConnection) -> None:
    writer = conn._writer
    assert writer is not None
    try:
        async with asyncio.timeout(conn.socket_timeout):
            await writer.drain()
    except BaseException:
        await conn.disconnect(nowait=True)
        raise TimeoutError("Timeout writing to socket") from None


async def command(pool: AsyncBoundedPool, *args: str | int) -> Any:
    """Run one command on a pooled connection; return its reply as the parser decoded it. A failed read
    disconnects the connection (redis.asyncio does), so no half-read reply reaches the next caller."""
    conn = pool.take_ready() or await pool.take()
    try:
        if conn.health_check_interval:
            await conn.check_health()
        if not _write(conn, pack(conn, args)):
            await _drain(conn)
        return await conn.read_response()
    finally:
        pool.give(conn)


async def run_script(pool: AsyncBoundedPool, script: Script, keys: Sequence[str], args: Sequence[str | int]) -> Any:
    """EVALSHA ``script``; on NOSCRIPT (a new or restarted server) EVAL, which caches it again."""
    try:
        return await command(pool, "EVALSHA", script.sha, len(keys), *keys, *args)
    except NoScriptError:
        return await command(pool, "EVAL", script.text, len(keys), *keys, *args)


async def cluster_script(client: RedisCluster, script: Script, keys: Sequence[str], args: Sequence[str | int]) -> Any:
    """:func:`run_script` on a cluster (the client routes it to the keys' slot)."""
    try:
        return await client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
    except NoScriptError:
        return await client.execute_command("EVAL", script.text, len(keys), *keys, *args)


async def pipeline(pool: AsyncBoundedPool, *commands: tuple[str | int, ...]) -> list[Any]:
    """Run ``commands`` back to back on one pooled connection; every reply is read before the first error
    reply is raised."""
    conn = await pool.take()
    try:
        if not _write(conn, conn.pack_commands(commands)):
            await _drain(conn)
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await conn.read_response())
            except ResponseError as exc:
                replies.append(exc)
    finally:
        pool.give(conn)
    return _raise_first(replies)


async def cluster_mget(client: RedisCluster, keys: list[str]) -> list[Any]:
    """MGET of ``keys`` on a cluster: one MGET per slot, sent as one pipeline per master (concurrently);
    a slot whose MGET was redirected (resharding) is read again through the client, which follows
    MOVED/ASK. (redis.asyncio's own ``mget_nonatomic`` needs cluster retries, which lockapi turns off.)"""
    await client.initialize()
    by_slot: dict[int, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        by_slot[key_slot(key.encode())].append(i)
    by_node: dict[str, tuple[ClusterNode, list[tuple[list[int], PipelineCommand]]]] = {}
    for slot, indexes in by_slot.items():
        node = client.nodes_manager.get_node_from_slot(slot)
        batch = by_node.setdefault(node.name, (node, []))[1]
        batch.append((indexes, PipelineCommand(len(batch), "MGET", *(keys[i] for i in indexes))))
    await asyncio.gather(*(node.execute_pipeline([c for _, c in batch]) for node, batch in by_node.values()))
    values: list[Any] = [None] * len(keys)
    for _, batch in by_node.values():
        for indexes, cmd in batch:
            result = cmd.result
            if isinstance(result, (MovedError, AskError)):
                result = await client.execute_command("MGET", *(keys[i] for i in indexes))
            elif isinstance(result, Exception):
                raise result
            for i, value in zip(indexes, result, strict=True):
                values[i] = value
    return values


async def node_pipeline(client: RedisCluster, key: str, *commands: tuple[str | int, ...]) -> list[Any]:
    """:func:`pipeline` on one connection to the master that owns ``key``'s slot."""
    await client.initialize()
    node = client.get_node_from_key(key)
    if node is None:
        raise ConnectionError(f"no cluster node serves the slot of {key!r} (cluster state not ok?)")
    batch = [PipelineCommand(i, *args) for i, args in enumerate(commands)]
    await node.execute_pipeline(batch)
    return _raise_first([c.result for c in batch])


def _raise_first(replies: list[Any]) -> list[Any]:
    error = next((r for r in replies if isinstance(r, Exception)), None)
    if error is not None:
        raise error
    return replies
