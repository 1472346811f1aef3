"""Build the redis-py client for a :class:`~lockapi_redis.settings.Settings` and run commands on it.

No retries anywhere (``Retry(NoBackoff(), 0)``): every call is one attempt bounded by the timeouts,
and every redis-py error becomes :class:`BackendUnavailable` (with a redacted URL) in the backend.

The hot path (:func:`command`, used by every script on standalone, TLS and sentinel servers) takes a
connection from the client's pool (:mod:`lockapi_redis.pool`) and talks to it directly, skipping
redis-py's per-command client layer (retry wrapper, response callbacks, metrics hooks). Together with
the pool's short hand-out path that is 20-30 µs less per command than ``Redis.execute_command``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis import Redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import Connection, SSLConnection
from redis.exceptions import NoScriptError, ResponseError
from redis.retry import Retry
from redis.sentinel import Sentinel

from .pool import BoundedPool, BoundedSentinelPool
from .scripts import Script
from .settings import Settings

Client = Redis | RedisCluster

_CLUSTER_NO_RETRY: dict[str, Any] = {"cluster_error_retry_attempts": 0} if int(redis.__version__.split(".")[0]) < 6 \
    else {}
"""redis-py < 6 retries cluster errors (a node down) 3 times besides its ``retry`` object; newer ones take
the count from ``retry`` alone (and warn about the old argument)."""


@dataclass(frozen=True)
class Flavour:
    """The redis-py classes of one I/O style: blocking (:data:`BLOCKING`), or redis.asyncio
    (:data:`lockapi_redis.aio_clients.ASYNC`). :func:`connector` builds either from the same settings."""

    connection: type[Any]
    ssl_connection: type[Any]
    pool: type[Any]
    """A bounded pool for one server: lockapi_redis.pool.BoundedPool or its asyncio twin."""
    sentinel_pool: type[Any]
    sentinel: type[Any]
    cluster: type[Any]
    cluster_node: type[Any]
    retry: type[Any]

    def no_retry(self) -> Any:
        """Every call is one attempt, bounded by the timeouts."""
        return self.retry(NoBackoff(), 0)


BLOCKING = Flavour(connection=Connection, ssl_connection=SSLConnection, pool=BoundedPool,
                   sentinel_pool=BoundedSentinelPool, sentinel=Sentinel, cluster=RedisCluster,
                   cluster_node=ClusterNode, retry=Retry)


def no_retry() -> Retry:
    return BLOCKING.no_retry()  # type: ignore[no-any-return]


def connector(settings: Settings, timeout: float, flavour: Flavour) -> Any:
    """The command connection pool (standalone, TLS, sentinel: connections find the master through the
    sentinels) or the cluster client, in ``flavour``. No I/O, except that a blocking cluster client
    discovers the slots when it is constructed (build it lazily)."""
    conn = dict(settings.connection)
    retry = flavour.no_retry()
    tls = "ssl_cert_reqs" in conn
    if settings.kind == "standalone":
        host, port = settings.hosts[0]
        connection_class = flavour.ssl_connection if tls else flavour.connection
        return flavour.pool(host=host, port=port, connection_class=connection_class,
                            max_connections=settings.max_connections, max_idle=settings.max_idle_connections,
                            wait_timeout=timeout, retry=retry, **conn)
    if settings.kind == "sentinel":
        assert settings.service_name is not None
        sentinel = flavour.sentinel(settings.hosts, sentinel_kwargs=dict(settings.sentinel_connection, retry=retry))
        return flavour.sentinel_pool(settings.service_name, sentinel, ssl=tls, max_connections=settings.max_connections,
                                     wait_timeout=timeout, max_idle=settings.max_idle_connections, retry=retry, **conn)
    nodes = [flavour.cluster_node(host, port) for host, port in settings.hosts]
    return flavour.cluster(startup_nodes=nodes, max_connections=settings.max_connections, retry=retry,
                           require_full_coverage=True, ssl=tls, **_CLUSTER_NO_RETRY, **conn)


def build(settings: Settings, timeout: float) -> Client:
    """The blocking command client. Standalone and sentinel clients make no I/O here; a cluster client
    connects to discover the slots (call it lazily)."""
    target = connector(settings, timeout, BLOCKING)
    if settings.kind == "cluster":
        cluster: RedisCluster = target
        return cluster
    return Redis(connection_pool=target, retry=no_retry())


def pubsub_connection(pool: Any, retry: Any) -> Any:
    """A fresh connection (not from the pool) to the server behind ``pool`` (blocking or asyncio), for
    pub/sub: no health checks (it only reads), no retries."""
    kwargs = dict(pool.connection_kwargs)
    kwargs["health_check_interval"] = 0
    kwargs["retry"] = retry
    return pool.connection_class(**kwargs)


_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:  # hiredis (lockapi[redis] installs it) packs a command in C, ten times faster than redis-py
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # hiredis missing, or older than 2.1
    _hiredis_pack = None


def pack(conn: Any, args: tuple[str | int, ...]) -> list[bytes]:
    """``args`` as the bytes of one command for ``conn`` (a blocking or asyncio redis-py connection)."""
    if _hiredis_pack is not None:
        return [_hiredis_pack(args)]
    packed: list[bytes] = conn.pack_command(*args)
    return packed


def command(client: Any, *args: str | int) -> Any:
    """Run one command and return its reply as the protocol parser decoded it (no response callback).

    On a standalone or sentinel client it runs on a connection of the client's pool directly; an error
    reply (:class:`ResponseError`) leaves the connection clean, any other failure disconnects it. A
    cluster client routes the command itself.
    """
    if not isinstance(client, Redis):
        return client.execute_command(*args)
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command(pack(conn, args))
        return conn.read_response()
    except ResponseError:
        raise
    except BaseException:
        conn.disconnect()  # a half-read reply must never reach the next caller
        raise
    finally:
        pool.release(conn)


def pipelined(client: Redis, commands: Sequence[tuple[str | int, ...]]) -> list[Any]:
    """Send ``commands`` in one write on one connection of a standalone or sentinel client's pool and read
    their replies in order; an error reply is returned in its command's place (a :class:`ResponseError`),
    and leaves the connection clean. Any other failure disconnects the connection and is raised (which of
    the commands ran is then unknown)."""
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command([b"".join(part for args in commands for part in pack(conn, args))])  # one write
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(conn.read_response())
            except ResponseError as exc:
                replies.append(exc)
        return replies
    except BaseException:
        conn.disconnect()  # a half-read reply must never reach the next caller
        raise
    finally:
        pool.release(conn)


def run_script(client: Client, script: Script, keys: Sequence[str], args: Sequence[str | int]) -> Any:
    """EVALSHA ``script``; on NOSCRIPT (a new or restarted server) EVAL, which caches it again."""
    try:
        return command(client, "EVALSHA", script.sha, len(keys), *keys, *args)
    except NoScriptError:
        return command(client, "EVAL", script.text, len(keys), *keys, *args)
