"""RedisBackend: locks, fair locks, semaphores and done markers on Redis (standalone, TLS, sentinel,
cluster), every operation one Lua script; see docs/backends/redis.md.

The operations themselves (scripts, keys, arguments, reply decoding, replica checks) are
:mod:`lockapi_redis.operations`, shared with the asyncio backend; this module runs them with redis-py.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from redis import Redis
from redis.cluster import RedisCluster
from redis.connection import AbstractConnection
from redis.exceptions import NoScriptError

from lockapi.spi import (
    Attempt,
    Backend,
    BackendConfig,
    BackendUnavailable,
    Call,
    Capability,
    LockError,
    LockInfo,
    Wake,
    check_calls,
    drive,
)

from .clients import Client, build, command, no_retry, pipelined, pubsub_connection, run_script
from .idle import IdleSweeper
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
from .pool import BoundedPool, BoundedSentinelPool
from .pubsub import ConnectionFactory, PubSubHub
from .settings import Settings, parse

T = TypeVar("T")

_LIVE: weakref.WeakSet[RedisBackend] = weakref.WeakSet()
"""Open backends, so a forked child can give each its own pub/sub and idle-sweeping threads."""


def _after_fork_in_child() -> None:
    for backend in list(_LIVE):
        backend._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


_PIPELINED: dict[str, Callable[..., Any]] = {
    "try_acquire": lambda ops, name, holder, ttl, *, queue_ttl=None: ops.try_acquire(name, holder, ttl, queue_ttl),
    "release": Operations.release,
    "extend": Operations.extend,
    "try_acquire_permit": Operations.try_acquire_permit,
    "release_permit": Operations.release_permit,
    "extend_permit": Operations.extend_permit,
    "mark_done": Operations.mark_done,
    "set_fence_floor": lambda ops, name, token, *, semaphore=False: ops.set_fence_floor(name, token, semaphore),
}
"""The :meth:`RedisBackend.run_calls` methods that can go into one pipeline (when their operation is one
script or command: not with ``wait_replicas``)."""


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
        self._where = config.redacted_url
        self.ops = Operations(self.settings, self._where)
        self.pause_points = self.ops.pause_points
        self.keys = self.ops.keys
        self._client_lock = threading.Lock()
        self._client_obj: Client | None = None
        if self.settings.kind != "cluster":  # no I/O: build now, keep the hot path free of checks
            self._client_obj = build(self.settings, config.timeout)
        self._hub = PubSubHub(sharded=self.settings.sharded_pubsub, timeout=config.timeout,
                              node_for=self._node_for, refresh=self._refresh_topology)
        self._closed = False
        self._loaded: set[str] = set()
        """SHA1s of the scripts a pipeline found on the server (sent as EVALSHA; the others as EVAL)."""
        self._last_call = time.monotonic()
        self._sweeper = None if self.settings.idle_timeout <= 0 else IdleSweeper(
            self.settings.idle_timeout, [self._close_idle_commands, self._hub.close_idle])
        _LIVE.add(self)

    # -- running operations -----------------------------------------------------------------------
    @property
    def client(self) -> Client:
        """The redis-py client this backend runs on (built from the URL and options exactly as for the
        locks), for tools that keep their own keys next to them, e.g. the migration record store."""
        return self._client

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

    def _run(self, op: Operation[T]) -> T:
        if type(op) is Eval:  # the hot path: one script
            return op.decode(self._eval(op))
        if isinstance(op, (Command, MultiGet)):
            return self._step(op)  # type: ignore[no-any-return]
        return drive(op, self._step)  # type: ignore[arg-type]

    def _eval(self, call: Eval[Any]) -> Any:
        self._last_call = time.monotonic()
        try:
            return run_script(self._client, call.script, call.keys, call.args)
        except CLIENT_ERRORS as exc:
            raise unavailable(self._where, exc) from None

    def _step(self, step: Step) -> Any:
        if type(step) is Eval:
            return step.decode(self._eval(step))
        return self._io(lambda: self._step_io(step))

    def _step_io(self, step: Step) -> Any:
        client = self._client
        if type(step) is Command:
            return step.decode(command(client, *step.args))
        if type(step) is MultiGet:
            get = client.mget_nonatomic if isinstance(client, RedisCluster) else client.mget
            return step.decode(get(step.keys))
        assert type(step) is Replicated
        call = step.call
        pipe = self._node_client(call.keys[0]).pipeline(transaction=False)
        pipe.execute_command("EVAL", call.script.text, len(call.keys), *call.keys, *call.args)
        pipe.execute_command("WAIT", step.replicas, step.timeout_ms)
        reply, acked = pipe.execute()
        return call.decode(reply), int(acked)

    def _io(self, fn: Callable[[], T]) -> T:
        self._last_call = time.monotonic()
        try:
            return fn()
        except CLIENT_ERRORS as exc:
            raise unavailable(self._where, exc) from None

    # -- plumbing ---------------------------------------------------------------------------------
    def _node_client(self, key: str) -> Any:
        """A client bound to the one server that owns ``key`` (the master itself on a cluster)."""
        client = self._client
        if isinstance(client, RedisCluster):
            return client.get_redis_connection(client.get_node_from_key(key))
        return client

    def _node_for(self, channel: str) -> tuple[str, ConnectionFactory]:
        node_client = self._io(lambda: self._node_client(channel))

        def factory() -> AbstractConnection:
            conn: AbstractConnection = pubsub_connection(node_client.connection_pool, no_retry())
            return conn

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

    # -- locks ------------------------------------------------------------------------------------
    def try_acquire(self, name: str, holder: str, ttl: float, *, queue_ttl: float | None = None) -> Attempt:
        return self._run(self.ops.try_acquire(name, holder, ttl, queue_ttl))

    def release(self, name: str, holder: str, token: int) -> bool:
        return self._run(self.ops.release(name, holder, token))

    def extend(self, name: str, holder: str, token: int, ttl: float) -> bool:
        return self._run(self.ops.extend(name, holder, token, ttl))

    def inspect(self, name: str) -> LockInfo | None:
        return self._run(self.ops.inspect(name))

    def holds(self, name: str, holder: str, token: int) -> bool:
        return self._run(self.ops.holds(name, holder, token))

    def cancel_wait(self, name: str, holder: str) -> None:
        self._run(self.ops.cancel_wait(name, holder))

    def try_acquire_many(
        self, names: Sequence[str], holder: str, ttl: float, *, skip_done: bool = False
    ) -> dict[str, int]:
        """One script per hash slot (so one round trip on standalone/sentinel); see the docs."""
        return self._run(self.ops.try_acquire_many(names, holder, ttl, skip_done))

    # -- semaphores -------------------------------------------------------------------------------
    def try_acquire_permit(self, name: str, permits: int, holder: str, ttl: float) -> Attempt:
        return self._run(self.ops.try_acquire_permit(name, permits, holder, ttl))

    def release_permit(self, name: str, holder: str, token: int) -> bool:
        return self._run(self.ops.release_permit(name, holder, token))

    def extend_permit(self, name: str, holder: str, token: int, ttl: float) -> bool:
        return self._run(self.ops.extend_permit(name, holder, token, ttl))

    def holds_permit(self, name: str, holder: str, token: int) -> bool:
        return self._run(self.ops.holds_permit(name, holder, token))

    # -- done markers -----------------------------------------------------------------------------
    def mark_done(self, name: str, ttl: float) -> None:
        self._run(self.ops.mark_done(name, ttl))

    def done(self, names: Sequence[str]) -> set[str]:
        return self._run(self.ops.done(names))

    def iter_done(self) -> Iterator[tuple[str, float]]:
        """SCAN the done markers (every master on a cluster), then PTTL them in one pipeline per batch."""
        pattern = self.keys.done_pattern()
        client = self._client
        batch: list[bytes] = []

        def flush() -> list[tuple[str, float]]:
            pipe = client.pipeline(transaction=False)
            for key in batch:
                pipe.pttl(key)
            ttls = self._io(pipe.execute)
            out = []
            for key, pttl in zip(batch, ttls, strict=True):
                name = self.keys.name_of_done(key.decode())
                if name is not None and pttl > 0:
                    out.append((name, pttl / 1000.0))
            batch.clear()
            return out

        keys = iter(self._io(lambda: client.scan_iter(match=pattern, count=1000)))
        while True:
            key = self._io(lambda: next(keys, None))
            if key is None:
                break
            batch.append(key)
            if len(batch) >= 500:
                yield from flush()
        if batch:
            yield from flush()

    # -- several calls at once --------------------------------------------------------------------
    def run_calls(self, calls: Sequence[Call]) -> list[Any]:
        """One pipeline (one write, one connection) on a standalone or sentinel server when every call is
        one script or command; otherwise one call after the other. A script the server does not have
        (restarted or flushed since this backend last ran it) fails its own call with
        :class:`BackendUnavailable` (it did not run; it is sent in full next time) rather than run out of
        order; a connection lost during the pipeline fails every call of it."""
        check_calls(calls)
        try:
            client = self._client
        except LockError as exc:  # closed
            return [exc] * len(calls)
        if len(calls) < 2 or not isinstance(client, Redis):
            return super().run_calls(calls)
        steps: list[Eval[Any] | Command[Any]] = []
        commands: list[tuple[str | int, ...]] = []
        for method, args, kwargs in calls:
            build_step = _PIPELINED.get(method)
            step = None if build_step is None else build_step(self.ops, *args, **kwargs)
            if type(step) is Command:
                commands.append(step.args)
            elif type(step) is Eval:
                script = step.script
                head = ("EVALSHA", script.sha) if script.sha in self._loaded else ("EVAL", script.text)
                commands.append((*head, len(step.keys), *step.keys, *step.args))
            else:  # several round trips (wait_replicas, a batch): one call after the other
                return super().run_calls(calls)
            steps.append(step)
        self._last_call = time.monotonic()
        try:
            replies = pipelined(client, commands)
        except CLIENT_ERRORS as exc:
            return [unavailable(self._where, exc)] * len(calls)
        results: list[Any] = []
        for step, reply in zip(steps, replies, strict=True):
            if isinstance(reply, NoScriptError) and type(step) is Eval:
                self._loaded.discard(step.script.sha)
                results.append(BackendUnavailable(
                    f"redis at {self._where} lost its scripts (restarted or SCRIPT FLUSH): this call did not "
                    "run; try it again"))
            elif isinstance(reply, CLIENT_ERRORS):
                results.append(unavailable(self._where, reply))
            else:
                if type(step) is Eval:
                    self._loaded.add(step.script.sha)
                results.append(step.decode(reply))
        return results

    # -- administration ---------------------------------------------------------------------------
    def set_fence_floor(self, name: str, token: int, *, semaphore: bool = False) -> None:
        self._run(self.ops.set_fence_floor(name, token, semaphore))

    def force_release(self, name: str) -> bool:
        return self._run(self.ops.force_release(name))

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
        self._run(self.ops.ping())

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
