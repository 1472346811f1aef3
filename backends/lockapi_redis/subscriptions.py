"""Who watches which pub/sub channel on which node, what a pub/sub reply means, and which reader a channel
is subscribed on: the bookkeeping and policy both hubs share (threads: :mod:`lockapi_redis.pubsub`;
asyncio: :mod:`lockapi_redis.aio_pubsub`), which differ only in how a reader does its I/O.

No I/O and no locking here: the thread hub holds its lock around every call, the asyncio hub calls from
its one event loop. Subscriptions are reference-counted per channel: the first watcher of a channel makes
the node's reader send SUBSCRIBE (SSUBSCRIBE with sharded pub/sub), the last one to leave makes it send
UNSUBSCRIBE, and a watch is in effect once the server's confirmation for it arrived
(:attr:`Channel.confirmed`). A reader that (re)connects subscribes every channel of its node; one whose
connection breaks wakes every watcher of its node (a message may have been lost).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from lockapi.spi import Wake

log = logging.getLogger("lockapi.redis.pubsub")

Entry = tuple[Wake, bytes | None]
"""A watcher: its callback and, for a fair waiter, its holder id."""


class Confirmation(Protocol):
    """``threading.Event`` or ``asyncio.Event``: set once the server confirmed the subscription (each hub
    waits on it in its own way)."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...

    def wait(self, *args: Any) -> Any: ...


class Channel:
    """One watched channel: the node it is subscribed on, its watchers, and whether it is confirmed."""

    __slots__ = ("confirmed", "node", "wakes")

    def __init__(self, node: str, confirmed: Confirmation) -> None:
        self.node = node
        self.wakes: list[Entry] = []
        self.confirmed = confirmed

    def addressed(self, message: bytes) -> list[Wake]:
        """The callbacks a message wakes: a holder id wakes that fair waiter (and every watcher without
        a holder); an empty message wakes all."""
        return [w for w, holder in self.wakes if not message or holder is None or holder == message]


class Subscriptions:
    """The channel table of one hub; see the module docstring."""

    def __init__(self, *, sharded: bool, confirmation: Callable[[], Confirmation]) -> None:
        self.subscribe_cmd = "SSUBSCRIBE" if sharded else "SUBSCRIBE"
        self.unsubscribe_cmd = "SUNSUBSCRIBE" if sharded else "UNSUBSCRIBE"
        self._confirmation = confirmation
        self.channels: dict[str, Channel] = {}
        self._pending: dict[str, int] = {}
        """SUBSCRIBE confirmations still owed per channel (one per SUBSCRIBE sent on a live connection)."""

    def add(self, channel: str, node: str) -> Channel:
        """Start watching ``channel`` (not watched yet) on ``node``; the hub then subscribes it."""
        state = self.channels[channel] = Channel(node, self._confirmation())
        return state

    def owe(self, channel: str) -> None:
        """A SUBSCRIBE for ``channel`` was just sent on a live connection: its confirmation is owed."""
        self._pending[channel] = self._pending.get(channel, 0) + 1

    def leave(self, channel: str, state: Channel, entry: Entry) -> bool:
        """Remove a watcher; True if it was the channel's last (the hub then sends UNSUBSCRIBE on
        ``state.node``)."""
        with contextlib.suppress(ValueError):
            state.wakes.remove(entry)
        if not state.wakes and self.channels.get(channel) is state:
            del self.channels[channel]
            return True
        return False

    def forget(self, channel: str, state: Channel) -> None:
        """Drop a channel whose subscription was never confirmed (the next watch routes it afresh)."""
        if self.channels.get(channel) is state:
            del self.channels[channel]

    def resubscribe(self, node: str) -> list[str]:
        """The channels to subscribe on ``node``'s new connection; each owes one confirmation (replies
        owed on the old connection died with it)."""
        channels = [channel for channel, state in self.channels.items() if state.node == node]
        for channel in channels:
            self._pending[channel] = 1
        return channels

    def wakes_on(self, node: str) -> list[Wake]:
        """Every watcher of a channel on ``node`` (its connection broke: a message may have been lost)."""
        return [w for state in self.channels.values() if state.node == node for w, _ in state.wakes]

    def busy_nodes(self) -> set[str]:
        return {state.node for state in self.channels.values()}

    def watcher_count(self) -> int:
        return sum(len(state.wakes) for state in self.channels.values())

    def dispatch(self, reply: list[Any]) -> list[Wake]:
        """Take in one pub/sub reply; return the callbacks to call (outside any lock)."""
        kind = reply[0]
        raw = reply[1]
        channel = raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else str(raw)
        if kind in (b"message", b"smessage"):
            message = reply[2] if len(reply) > 2 and isinstance(reply[2], bytes) else b""
            state = self.channels.get(channel)
            return state.addressed(message) if state is not None else []
        if kind in (b"subscribe", b"ssubscribe"):
            left = self._pending.get(channel, 1) - 1
            if left > 0:
                self._pending[channel] = left
            else:
                self._pending.pop(channel, None)
                state = self.channels.get(channel)
                if state is not None:
                    state.confirmed.set()
        elif kind == b"sunsubscribe":
            # Also sent unasked when the channel's slot moved to another node: forget the channel
            # (the next watch subscribes on the slot's new owner) and wake its watchers to re-check.
            state = self.channels.get(channel)
            if state is not None and state.confirmed.is_set():
                del self.channels[channel]
            return [w for w, _ in state.wakes] if state is not None else []
        return []


RECONNECT_BACKOFF = (0.05, 1.0)
"""A reader that cannot connect retries after 0.05 s, doubling up to 1 s."""


class Reader(Protocol):
    """What :class:`Routing` needs of a hub's reader (one pub/sub connection to one node)."""

    node: str
    last_used: float
    """When a subscription on its connection last ended (or the reader was made)."""

    @property
    def connected(self) -> bool: ...

    def send(self, *args: str) -> None:
        """Send a command if connected (else it subscribes every channel of its node once it connects)."""

    def drop(self) -> None:
        """Close the connection: the reader wakes its node's watchers and reconnects."""

    def retire(self) -> None:
        """Stop for good and close the connection."""


R = TypeVar("R", bound=Reader)


class Routing(Generic[R]):
    """A hub's readers, one per node, and the policy that puts channels on them; see the module."""

    def __init__(self, subs: Subscriptions, start: Callable[[str, Any], R]) -> None:
        self.subs = subs
        self.readers: dict[str, R] = {}
        self._start = start
        """Start a reader for (node, connection factory)."""

    def attach(self, channel: str, node: str, factory: Any) -> Channel:
        """Watch ``channel`` (nobody watches it yet) on ``node``'s reader, started here if there is none."""
        state = self.subs.add(channel, node)
        reader = self.readers.get(node)
        if reader is None:
            self.readers[node] = self._start(node, factory)
        elif reader.connected:
            self.subs.owe(channel)
            reader.send(self.subs.subscribe_cmd, channel)
        return state

    def detach(self, channel: str, state: Channel, entry: Entry) -> None:
        """A watcher left; unsubscribe the channel if it was the last."""
        if self.subs.leave(channel, state, entry):
            reader = self.readers.get(state.node)
            if reader is not None:
                reader.last_used = time.monotonic()
                reader.send(self.subs.unsubscribe_cmd, channel)

    def reroute(self, channel: str, state: Channel) -> None:
        """After an unconfirmed subscription: forget the channel's node (the next watch routes it afresh)
        and retire a reader that cannot reach its node (a failed cluster master), or make a silent one
        reconnect. The hub then asks the backend to refresh its view of the cluster."""
        self.subs.forget(channel, state)
        reader = self.readers.get(state.node)
        if reader is not None:
            if reader.connected:
                reader.drop()
            else:
                self.retire(reader)

    def retire(self, reader: R) -> None:
        """Stop ``reader``; the next watch on its node starts another."""
        del self.readers[reader.node]
        reader.retire()

    def close_idle(self, unused_for: float) -> int:
        """Retire the readers whose connection carried no subscription for ``unused_for`` seconds."""
        cutoff = time.monotonic() - unused_for
        busy = self.subs.busy_nodes()
        idle = [r for node, r in self.readers.items() if node not in busy and r.last_used <= cutoff]
        for reader in idle:
            self.retire(reader)
        return len(idle)

    def connections(self) -> int:
        """Readers connected right now."""
        return sum(1 for r in self.readers.values() if r.connected)


def call(wakes: list[Wake]) -> None:
    """Call each wake-up callback; one that raises is logged and the others still run."""
    for wake in wakes:
        try:
            wake()
        except Exception:
            log.exception("a lockapi wake-up callback failed")
