"""RedisBackend: locks, fair locks, semaphores and done markers on Redis (standalone, TLS, sentinel,
cluster), every operation one Lua script; see docs/backends/redis.md."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from redis.cluster import RedisCluster
from redis.connection import AbstractConnection
from redis.exceptions import RedisClusterException, RedisError

from lockapi.spi import (
    Attempt,
    Backend,
    BackendConfig,
    BackendUnavailable,
    Capability,
    LockInfo,
    Wake,
)

from .clients import Client, build, command, pubsub_connection, run_script
from .idle import IdleSweeper
from .keys import Keys
from .pool import BoundedPool, BoundedSentinelPool
from .pubsub import ConnectionFactory, PubSubHub
from .scripts import Script, Scripts
from .settings import Settings, parse

T = TypeVar("T")


def _attempt(result: bytes | int) -> Attempt:
    """Decode an acquire script's reply: a token (bulk string), or the integer ``-1 - retry_after_ms``."""
    if isinstance(result, bytes):
        return Attempt(int(result))
    return Attempt(None, (-1 - result) / 1000.0)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


CLIENT_ERRORS = (RedisError, RedisClusterException)
"""What redis-py raises for an unreachable or failing server (the cluster client's own error is not a
RedisError)."""

_LIVE: weakref.WeakSet[RedisBackend] = weakref.WeakSet()
"""Open backends, so a forked child can give each its own pub/sub and idle-sweeping threads."""


def _after_fork_in_child() -> None:
    for backend in list(_LIVE):
        backend._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class RedisBackend(Backend):
    """Locks on Redis. Thread-safe; one command connection pool and one pub/sub connection (per node)."""

    capabilities = frozenset({
        Capability.FAIR, Capability.PUSH_WAKEUP, Capability.ATOMIC_BATCH, Capability.MULTI_PROCESS,
        Capability.MULTI_HOST, Capability.ITER_DONE, Capability.ADMIN, Capability.BACKEND_EXPIRY,
    })
    description = "Redis / Redis Sentinel / Redis Cluster (Lua scripts, pub/sub wake-ups, fencing)"

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self.settings: Settings = parse(config)
        self.keys = Keys(self.settings.prefix)
        self._where = config.redacted_url
        publish = "SPUBLISH" if self.settings.sharded_pubsub else "PUBLISH"
        fence_ttl_ms = _ms(self.settings.fence_ttl) if self.settings.fence_ttl > 0 else 0
        self.scripts = Scripts.compile(publish, fence_ttl_ms)
        self._client_lock = threading.Lock()
        self._client_obj: Client | None = None
        if self.settings.kind != "cluster":  # no I/O: build now, keep the hot path free of checks
            self._client_obj = build(self.settings, config.timeout)
        self._hub = PubSubHub(sharded=self.settings.sharded_pubsub, timeout=config.timeout,
                              node_for=self._node_for, refresh=self._refresh_topology)
        self._closed = False
        self._last_call = time.monotonic()
        self._sweeper = None if self.settings.idle_timeout <= 0 else IdleSweeper(
            self.settings.idle_timeout, [self._close_idle_commands, self._hub.close_idle])
        _LIVE.add(self)

    # -- plumbing ---------------------------------------------------------------------------------
    @property
    def _client(self) -> Client:
        client = self._client_obj
        if client is None:
            with self._client_lock:
                if self._closed:
                    raise BackendUnavailable(f"the redis backend for {self._where} is closed")
                if self._client_obj is None:
                    self._client_obj = build(self.settings, self.config.timeout)
                client = self._client_obj
        return client

    def _run(self, fn: Callable[[], T]) -> T:
        self._last_call = time.monotonic()
        try:
            return fn()
        except CLIENT_ERRORS as exc:
            raise BackendUnavailable(f"redis at {self._where}: {type(exc).__name__}: {exc}") from None

    def _eval(self, script: Script, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        self._last_call = time.monotonic()
        try:
            return run_script(self._client, script, keys, args)
        except CLIENT_ERRORS as exc:
            raise BackendUnavailable(f"redis at {self._where}: {type(exc).__name__}: {exc}") from None

    def _call(self, script: Script, name: str, args: Sequence[str | int]) -> Any:
        """Run ``script`` on the keys of ``name`` (the roles it declares) with ``args``."""
        return self._eval(script, self.keys.of(name, script.suffixes), args)

    def _node_client(self, key: str) -> Any:
        """A client bound to the one server that owns ``key`` (the master itself on a cluster)."""
        client = self._client
        if isinstance(client, RedisCluster):
            return client.get_redis_connection(client.get_node_from_key(key))
        return client

    def _node_for(self, channel: str) -> tuple[str, ConnectionFactory]:
        node_client = self._run(lambda: self._node_client(channel))

        def factory() -> AbstractConnection:
            return pubsub_connection(node_client)

        kwargs = node_client.connection_pool.connection_kwargs
        return f"{kwargs.get('host')}:{kwargs.get('port')}", factory

    def _refresh_topology(self) -> None:
        """Re-read which node owns which slot (after a failover); nothing to do off a cluster."""
        client = self._client_obj
        if isinstance(client, RedisCluster):
            client.nodes_manager.initialize()

    def _close_idle_commands(self, unused_for: float) -> None:
        """Close command connections unused for ``unused_for`` seconds (``idle_timeout``). redis-py's
        cluster pools keep no use times: there, every idle one is closed once the backend made no
        call for that long."""
        client = self._client_obj
        if isinstance(client, RedisCluster):
            if time.monotonic() - self._last_call >= unused_for:
                for node in client.get_nodes():
                    if node.redis_connection is not None:
                        node.redis_connection.connection_pool.disconnect(inuse_connections=False)
        elif client is not None and isinstance(client.connection_pool, (BoundedPool, BoundedSentinelPool)):
            client.connection_pool.close_idle(unused_for)

    def _after_fork(self) -> None:
        """In a forked child: fresh locks and threads; the parent's connections stay the parent's."""
        self._client_lock = threading.Lock()
        self._hub.after_fork()
        if self._sweeper is not None and not self._closed:
            self._sweeper.start()

    def _granting(self, script: Script, keys: list[str], args: list[str | int]) -> tuple[Any, int | None]:
        """Run an acquire script; returns its reply and, with ``wait_replicas``, how many replicas
        acknowledged (WAIT runs in the same pipeline, on the same connection, right after it)."""
        if not self.settings.wait_replicas:
            return self._eval(script, keys, args), None
        n, wait_ms = self.settings.wait_replicas, _ms(self.settings.wait_replicas_timeout)

        def run() -> tuple[Any, int]:
            pipe = self._node_client(keys[0]).pipeline(transaction=False)
            pipe.execute_command("EVAL", script.text, len(keys), *keys, *args)
            pipe.execute_command("WAIT", n, wait_ms)
            reply, acked = pipe.execute()
            return reply, int(acked)

        return self._run(run)

    def _check_replicas(self, acked: int | None, undo: Callable[[], object]) -> None:
        """Undo a grant and raise BackendUnavailable if too few replicas acknowledged it."""
        if acked is not None and acked < self.settings.wait_replicas:
            with contextlib.suppress(BackendUnavailable):
                undo()
            raise BackendUnavailable(
                f"redis at {self._where}: only {acked} of {self.settings.wait_replicas} replicas "
                f"acknowledged the grant within {self.settings.wait_replicas_timeout:g}s; released it")

    # -- locks ------------------------------------------------------------------------------------
    def try_acquire(self, name: str, holder: str, ttl: float, *, queue_ttl: float | None = None) -> Attempt:
        if queue_ttl is None:
            script, args = self.scripts.acquire, [holder, _ms(ttl)]
        else:
            script, args = self.scripts.fair_acquire, [holder, _ms(ttl), _ms(queue_ttl)]
        result, acked = self._granting(script, self.keys.of(name, script.suffixes), args)
        attempt = _attempt(result)
        if attempt.token is not None:
            token = attempt.token
            self._check_replicas(acked, lambda: self.release(name, holder, token))
        return attempt

    def release(self, name: str, holder: str, token: int) -> bool:
        return bool(self._call(self.scripts.release, name, [f"{token}:{holder}"]) == 1)

    def extend(self, name: str, holder: str, token: int, ttl: float) -> bool:
        return bool(self._call(self.scripts.extend, name, [f"{token}:{holder}", _ms(ttl)]) == 1)

    def inspect(self, name: str) -> LockInfo | None:
        reply = self._call(self.scripts.inspect, name, [])
        if not reply:
            return None
        value, pttl = reply
        token, _, holder = value.decode().partition(":")
        return LockInfo(name=name, holder=holder, token=int(token), ttl_remaining=max(pttl, 0) / 1000.0)

    def holds(self, name: str, holder: str, token: int) -> bool:
        value = self._run(lambda: command(self._client, "GET", self.keys.key(name, "lock")))
        return bool(value == f"{token}:{holder}".encode())

    def cancel_wait(self, name: str, holder: str) -> None:
        self._call(self.scripts.cancel_wait, name, [holder])

    def try_acquire_many(
        self, names: Sequence[str], holder: str, ttl: float, *, skip_done: bool = False
    ) -> dict[str, int]:
        """One script per hash slot (so one round trip on standalone/sentinel); see the docs."""
        groups: dict[int, list[str]] = defaultdict(list)
        client = self._client
        if isinstance(client, RedisCluster):
            for name in dict.fromkeys(names):
                groups[client.keyslot(self.keys.base(name))].append(name)
        else:
            groups[0] = list(dict.fromkeys(names))
        granted: dict[str, int] = {}
        args: list[str | int] = [holder, _ms(ttl), "1" if skip_done else "0"]
        script = self.scripts.acquire_many
        try:
            for group in groups.values():
                keys = [key for name in group for key in self.keys.of(name, script.suffixes)]
                tokens, acked = self._granting(script, keys, args)
                granted.update((n, int(t)) for n, t in zip(group, tokens, strict=True) if t != 0)
                self._check_replicas(acked, lambda: None)
        except BackendUnavailable:
            for name, token in granted.items():
                with contextlib.suppress(BackendUnavailable):
                    self.release(name, holder, token)
            raise
        return granted

    # -- semaphores -------------------------------------------------------------------------------
    def try_acquire_permit(self, name: str, permits: int, holder: str, ttl: float) -> Attempt:
        script = self.scripts.sem_acquire
        result, acked = self._granting(script, self.keys.of(name, script.suffixes), [holder, permits, _ms(ttl)])
        attempt = _attempt(result)
        if attempt.token is not None:
            token = attempt.token
            self._check_replicas(acked, lambda: self.release_permit(name, holder, token))
        return attempt

    def release_permit(self, name: str, holder: str, token: int) -> bool:
        return bool(self._call(self.scripts.sem_release, name, [f"{token}:{holder}"]) == 1)

    def extend_permit(self, name: str, holder: str, token: int, ttl: float) -> bool:
        return bool(self._call(self.scripts.sem_extend, name, [f"{token}:{holder}", _ms(ttl)]) == 1)

    def holds_permit(self, name: str, holder: str, token: int) -> bool:
        return bool(self._call(self.scripts.sem_holds, name, [f"{token}:{holder}"]) == 1)

    # -- done markers -----------------------------------------------------------------------------
    def mark_done(self, name: str, ttl: float) -> None:
        self._run(lambda: command(self._client, "SET", self.keys.done(name), "1", "PX", _ms(ttl)))

    def done(self, names: Sequence[str]) -> set[str]:
        if not names:
            return set()
        names = list(names)
        keys = [self.keys.done(n) for n in names]
        client = self._client
        if isinstance(client, RedisCluster):
            values = self._run(lambda: client.mget_nonatomic(keys))
        else:
            values = self._run(lambda: client.mget(keys))
        return {n for n, v in zip(names, values, strict=True) if v is not None}

    def iter_done(self) -> Iterator[tuple[str, float]]:
        """SCAN the done markers (every master on a cluster), then PTTL them in one pipeline per batch."""
        pattern = self.keys.done_pattern()
        client = self._client
        batch: list[bytes] = []

        def flush() -> list[tuple[str, float]]:
            pipe = client.pipeline(transaction=False)
            for key in batch:
                pipe.pttl(key)
            ttls = self._run(pipe.execute)
            out = []
            for key, pttl in zip(batch, ttls, strict=True):
                name = self.keys.name_of_done(key.decode())
                if name is not None and pttl > 0:
                    out.append((name, pttl / 1000.0))
            batch.clear()
            return out

        keys = iter(self._run(lambda: client.scan_iter(match=pattern, count=1000)))
        while True:
            key = self._run(lambda: next(keys, None))
            if key is None:
                break
            batch.append(key)
            if len(batch) >= 500:
                yield from flush()
        if batch:
            yield from flush()

    # -- administration ---------------------------------------------------------------------------
    def set_fence_floor(self, name: str, token: int, *, semaphore: bool = False) -> None:
        script = self.scripts.set_sem_fence_floor if semaphore else self.scripts.set_fence_floor
        self._call(script, name, [str(int(token))])

    def force_release(self, name: str) -> bool:
        return bool(self._call(self.scripts.force_release, name, []) == 1)

    # -- waiting ----------------------------------------------------------------------------------
    def watch(
        self, name: str, wake: Wake, *, semaphore: bool = False, holder: str | None = None
    ) -> contextlib.AbstractContextManager[None]:
        return self._hub.watch(self.keys.channel(name, semaphore=semaphore), wake, holder)

    def watcher_count(self) -> int:
        """Live watch() contexts (for tests and diagnostics)."""
        return self._hub.watcher_count()

    # -- lifecycle --------------------------------------------------------------------------------
    def ping(self) -> None:
        self._run(lambda: self._client.ping())

    def close(self) -> None:
        with self._client_lock:
            if self._closed:
                return
            self._closed = True
            client, self._client_obj = self._client_obj, None
        _LIVE.discard(self)
        if self._sweeper is not None:
            self._sweeper.close()
        self._hub.close()
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
            pool = getattr(client, "connection_pool", None)  # Redis.close() spares a pool passed in
            if pool is not None:
                with contextlib.suppress(Exception):
                    pool.disconnect()
