"""Who watches which pub/sub channel on which node, and what a pub/sub reply means: the bookkeeping both
hubs share (threads: :mod:`lockapi_redis.pubsub`; asyncio: :mod:`lockapi_redis.aio_pubsub`).

No I/O and no locking: the thread hub holds its lock around every call, the asyncio hub calls it from its
one event loop. Subscriptions are reference-counted per channel: the first watcher of a channel makes the
hub send SUBSCRIBE (SSUBSCRIBE with sharded pub/sub), the last one to leave makes it send UNSUBSCRIBE, and
a watch is in effect once the server's confirmation for it arrived (:attr:`Channel.confirmed`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

from lockapi.spi import Wake

log = logging.getLogger("lockapi_redis.pubsub")

Entry = tuple[Wake, bytes | None]
"""A watcher: its callback and, for a fair waiter, its holder id."""


class Confirmation(Protocol):
    """``threading.Event`` or ``asyncio.Event``: set once the server confirmed the subscription."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...


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


def call(wakes: list[Wake]) -> None:
    """Call each wake-up callback; one that raises is logged and the others still run."""
    for wake in wakes:
        try:
            wake()
        except Exception:
            log.exception("a lockapi wake-up callback failed")
