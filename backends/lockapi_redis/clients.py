"""Build the redis-py client for a :class:`~lockapi_redis.settings.Settings` and run commands on it.

No retries anywhere (``Retry(NoBackoff(), 0)``): every call is one attempt bounded by the timeouts,
and every redis-py error becomes :class:`BackendUnavailable` (with a redacted URL) in the backend.

The hot path (:func:`command`, used by every script on standalone, TLS and sentinel servers) takes a
connection from the client's pool (:mod:`lockapi_redis.pool`) and talks to it directly, skipping
redis-py's per-command client layer (retry wrapper, response callbacks, metrics hooks). Together with
the pool's short hand-out path that is 20-30 µs less per command than ``Redis.execute_command``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis import Redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import AbstractConnection, SSLConnection
from redis.exceptions import NoScriptError, ResponseError
from redis.retry import Retry
from redis.sentinel import Sentinel

from .pool import BoundedPool, BoundedSentinelPool
from .scripts import Script
from .settings import Settings

Client = Redis | RedisCluster


def no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


def build(settings: Settings, timeout: float) -> Client:
    """The command client. Standalone and sentinel clients make no I/O here; a cluster client
    connects to discover the slots (call it lazily)."""
    conn = dict(settings.connection)
    if settings.kind == "standalone":
        if "ssl_cert_reqs" in conn:
            conn["connection_class"] = SSLConnection
        host, port = settings.hosts[0]
        pool = BoundedPool(host=host, port=port, max_connections=settings.max_connections,
                           max_idle=settings.max_idle_connections, wait_timeout=timeout, retry=no_retry(),
                           **conn)
        return Redis(connection_pool=pool, retry=no_retry())
    if settings.kind == "sentinel":
        ssl = "ssl_cert_reqs" in conn
        sentinel = Sentinel(settings.hosts, sentinel_kwargs=dict(settings.sentinel_connection,
                                                                 retry=no_retry()),
                            retry=no_retry(), ssl=ssl, **conn)
        assert settings.service_name is not None
        master: Redis = sentinel.master_for(settings.service_name, connection_pool_class=BoundedSentinelPool,
                                            max_connections=settings.max_connections, wait_timeout=timeout,
                                            max_idle=settings.max_idle_connections, retry=no_retry())
        return master
    if "ssl_cert_reqs" in conn:
        conn["ssl"] = True
    nodes = [ClusterNode(host, port) for host, port in settings.hosts]
    return RedisCluster(startup_nodes=nodes, max_connections=settings.max_connections,
                        retry=no_retry(), require_full_coverage=True, **conn)


def pubsub_connection(client: Redis) -> AbstractConnection:
    """A fresh connection (not from the pool) to the server behind ``client``'s pool."""
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs["health_check_interval"] = 0
    kwargs["retry"] = no_retry()
    conn: AbstractConnection = pool.connection_class(**kwargs)
    return conn


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
        conn.send_packed_command(conn.pack_command(*args))
        return conn.read_response()
    except ResponseError:
        raise
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
