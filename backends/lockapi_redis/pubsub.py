"""Release notifications: one shared pub/sub connection (per server node) with one reader thread.

:class:`PubSubHub` reference-counts subscriptions per channel (the table and the meaning of replies are
:mod:`lockapi_redis.subscriptions`, shared with the asyncio hub): the first watcher of a channel sends
SUBSCRIBE (SSUBSCRIBE with sharded pub/sub), the last one to leave sends UNSUBSCRIBE, and
:meth:`PubSubHub.watch` returns only once the server confirmed the subscription. A standalone or
sentinel backend uses one connection; a cluster uses one per master that owns a watched channel's slot
(sharded channels live on their slot's node).

When a connection breaks, every watcher on it is woken (a message may have been lost) and the reader
reconnects and re-subscribes. A subscription that is not confirmed within ``timeout`` fails that watch
and re-routes the channel: the hub forgets it, retires a reader that cannot reach its node (a failed
cluster master), and asks the backend to refresh its view of the cluster, so the next watch
subscribes on the slot's current owner. Waiters never rely on a message alone: lockapi re-checks after
subscribing and bounds every wait by the holder's remaining ttl.

A child process after ``fork`` calls :meth:`PubSubHub.after_fork`: it forgets the parent's connections
and reader threads (which it must not touch) and subscribes afresh on its own. With ``idle_timeout``,
:meth:`PubSubHub.close_idle` closes connections that carried no subscription for that long.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from redis.connection import AbstractConnection
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from lockapi.spi import BackendUnavailable, Wake

from .subscriptions import RECONNECT_BACKOFF, Channel, Entry, Routing, Subscriptions, call

log = logging.getLogger("lockapi.redis.pubsub")

ConnectionFactory = Callable[[], AbstractConnection]


class _Subscriber:
    """One pub/sub connection and its reader thread. All state is guarded by the hub's lock."""

    def __init__(self, hub: PubSubHub, node: str, factory: ConnectionFactory) -> None:
        self.hub = hub
        self.node = node
        self.factory = factory
        self.conn: AbstractConnection | None = None
        self.retired = False
        self.last_used = time.monotonic()
        self.thread = threading.Thread(target=self._run, name=f"lockapi-redis-pubsub-{node}", daemon=True)
        self.thread.start()

    @property
    def connected(self) -> bool:
        return self.conn is not None

    def send(self, *args: str) -> None:
        if self.conn is not None:
            try:
                self.conn.send_packed_command(self.conn.pack_command(*args), check_health=False)
            except (RedisError, RedisClusterException, OSError):
                self.drop()

    def drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.disconnect()

    def retire(self) -> None:
        self.retired = True
        self.drop()

    def _run(self) -> None:
        hub = self.hub
        first, longest = RECONNECT_BACKOFF
        backoff = first
        while not hub.closed and not self.retired:
            try:
                conn = self.factory()
                conn.connect()  # connect and handshake are bounded by the timeout; reads then block
                conn._sock.settimeout(None)  # type: ignore[attr-defined]  # until a message or a close
            except (RedisError, RedisClusterException, OSError) as exc:
                log.debug("pub/sub connect to %s failed: %s", self.node, exc)
                hub.stop_event.wait(backoff)
                backoff = min(backoff * 2, longest)
                continue
            backoff = first
            with hub.lock:
                if hub.closed or self.retired:
                    conn.disconnect()
                    return
                self.conn = conn
                for channel in hub.subs.resubscribe(self.node):
                    self.send(hub.subs.subscribe_cmd, channel)
            self._read(conn)
            with hub.lock:
                if self.conn is conn:
                    self.drop()
                wakes = hub.subs.wakes_on(self.node)
            call(wakes)

    def _read(self, conn: AbstractConnection) -> None:
        while not self.hub.closed:
            try:
                reply: Any = conn.read_response(disconnect_on_error=False)
            except ResponseError as exc:  # e.g. MOVED for a sharded subscribe: that watch times out
                log.debug("pub/sub on %s: %s", self.node, exc)
                continue
            except Exception as exc:  # broken, or closed under us by close() or a failed watch
                log.debug("pub/sub connection to %s ended: %s", self.node, exc)
                return
            if isinstance(reply, list) and len(reply) >= 2:
                with self.hub.lock:
                    wakes = self.hub.subs.dispatch(reply)
                call(wakes)


class PubSubHub:
    """Reference-counted subscriptions over shared connections; see the module docstring."""

    def __init__(self, *, sharded: bool, timeout: float,
                 node_for: Callable[[str], tuple[str, ConnectionFactory]],
                 refresh: Callable[[], None] = lambda: None) -> None:
        self.sharded = sharded
        self.timeout = timeout
        self.node_for = node_for
        self.refresh = refresh
        self.closed = False
        self.after_fork()

    def after_fork(self) -> None:
        """Start from nothing: no channels, connections or reader threads (also right after a fork,
        where the parent's belong to the parent)."""
        self.lock = threading.Lock()
        self.subs = Subscriptions(sharded=self.sharded, confirmation=threading.Event)
        self.routing: Routing[_Subscriber] = Routing(self.subs, lambda node, factory: _Subscriber(self, node, factory))
        self.stop_event = threading.Event()

    # -- used by the backend ----------------------------------------------------------------------
    @contextlib.contextmanager
    def watch(self, channel: str, wake: Wake, holder: str | None = None) -> Iterator[None]:
        """Call ``wake`` on every message on ``channel`` addressed to everyone (empty) or to ``holder``,
        while open; subscribed when entered."""
        entry = (wake, None if holder is None else holder.encode())
        state = self._join(channel, entry)
        try:
            if not state.confirmed.wait(self.timeout):
                with self.lock:
                    self.routing.reroute(channel, state)
                with contextlib.suppress(Exception):
                    self.refresh()
                raise BackendUnavailable(
                    f"redis did not confirm the subscription within {self.timeout:g}s")
            yield
        finally:
            with self.lock:
                self.routing.detach(channel, state, entry)

    def watcher_count(self) -> int:
        with self.lock:
            return self.subs.watcher_count()

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.stop_event.set()
            subscribers = list(self.routing.readers.values())
            for sub in subscribers:
                sub.drop()
        for sub in subscribers:
            sub.thread.join(5)

    def close_idle(self, unused_for: float) -> int:
        """Close the connections that carried no subscription for ``unused_for`` seconds; return how many."""
        with self.lock:
            return self.routing.close_idle(unused_for)

    def _join(self, channel: str, entry: Entry) -> Channel:
        with self.lock:
            if self.closed:
                raise BackendUnavailable("the redis backend is closed")
            state = self.subs.channels.get(channel)
            if state is None:
                node, factory = self.node_for(channel)
                state = self.routing.attach(channel, node, factory)
            state.wakes.append(entry)
            return state
