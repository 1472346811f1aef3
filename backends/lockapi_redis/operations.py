"""Every backend operation as data, without I/O: the sync and the async backend run the same operations.

An operation is a :data:`Step` — run a script on the keys of a name with arguments and decode the reply
(:class:`Eval`), run a plain command (:class:`Command`), read many keys (:class:`MultiGet`), or run a
script followed by ``WAIT`` on one connection (:class:`Replicated`) — or, for the few operations with
more than one round trip (``wait_replicas`` checks, batches over several cluster slots), a :data:`Plan`:
a generator that yields steps, receives each step's decoded result (or has its error thrown in) and
returns the operation's result. :class:`Operations` builds them from the backend's settings; a runner
executes them: :class:`lockapi_redis.backend.RedisBackend` with redis-py,
:class:`lockapi_redis.aio_backend.AsyncRedisBackend` with redis.asyncio. Only the I/O differs, so the
key building, arguments, reply decoding, replica checks and error messages exist once, here.
"""

from __future__ import annotations

import contextlib
import functools
from collections import defaultdict
from collections.abc import Callable, Generator, Sequence
from typing import Any, Generic, TypeVar

from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError

from lockapi.spi import Attempt, BackendUnavailable, LockInfo, pause_point

from .keys import Keys
from .scripts import Script, Scripts
from .settings import Settings

T = TypeVar("T")

CLIENT_ERRORS = (RedisError, RedisClusterException)
"""What redis-py raises for an unreachable or failing server (the cluster client's own error is not a
RedisError); a runner turns them into :func:`unavailable`."""


def unavailable(where: str, exc: BaseException) -> BackendUnavailable:
    """The error for a failed round trip (``where`` is the redacted URL; chain nothing from the driver)."""
    return BackendUnavailable(f"redis at {where}: {type(exc).__name__}: {exc}")


def ms(seconds: float) -> int:
    """Seconds as the whole milliseconds Redis takes (at least 1)."""
    return max(1, round(seconds * 1000))


# -- steps ---------------------------------------------------------------------------------------------
class Eval(Generic[T]):
    """Run ``script`` (EVALSHA, EVAL on NOSCRIPT) on ``keys`` with ``args``; the result is ``decode(reply)``."""

    __slots__ = ("args", "decode", "keys", "script")

    def __init__(self, script: Script, keys: list[str], args: list[str | int], decode: Callable[[Any], T]) -> None:
        self.script = script
        self.keys = keys
        self.args = args
        self.decode = decode


class Command(Generic[T]):
    """Run one command (routed by its key on a cluster); the result is ``decode(reply)``."""

    __slots__ = ("args", "decode")

    def __init__(self, args: tuple[str | int, ...], decode: Callable[[Any], T]) -> None:
        self.args = args
        self.decode = decode


class MultiGet(Generic[T]):
    """Read ``keys`` (MGET; one per slot on a cluster); the result is ``decode(values)``."""

    __slots__ = ("decode", "keys")

    def __init__(self, keys: list[str], decode: Callable[[list[Any]], T]) -> None:
        self.keys = keys
        self.decode = decode


class Replicated(Generic[T]):
    """Run ``call`` then ``WAIT replicas timeout_ms`` in one pipeline on one connection (the master of the
    keys' slot); the result is ``(call.decode(reply), replicas that acknowledged)``."""

    __slots__ = ("call", "replicas", "timeout_ms")

    def __init__(self, call: Eval[T], replicas: int, timeout_ms: int) -> None:
        self.call = call
        self.replicas = replicas
        self.timeout_ms = timeout_ms


Step = Eval[Any] | Command[Any] | MultiGet[Any] | Replicated[Any]
STEPS = (Eval, Command, MultiGet, Replicated)
Plan = Generator[Step, Any, T]
"""A multi-step operation: yields steps, is sent each step's result (or thrown its error), returns T."""
Operation = Eval[T] | Command[T] | MultiGet[T] | Plan[T]




def _done_with(value: T) -> Plan[T]:
    """A plan that needs no round trip."""
    return value
    yield  # makes this a generator


# -- reply decoding --------------------------------------------------------------------------------------
def decode_attempt(reply: bytes | int) -> Attempt:
    """An acquire script's reply: a token (bulk string), or the integer ``-1 - retry_after_ms``."""
    if isinstance(reply, bytes):
        return Attempt(int(reply))
    return Attempt(None, (-1 - reply) / 1000.0)


def decode_flag(reply: Any) -> bool:
    """A script's 1 (done) or 0 (not held)."""
    return bool(reply == 1)


def decode_nothing(reply: Any) -> None:
    return None


def decode_info(name: str, reply: Any) -> LockInfo | None:
    """INSPECT's ``false`` or ``{"<token>:<holder>", pttl_ms}``."""
    if not reply:
        return None
    value, pttl = reply
    token, _, holder = value.decode().partition(":")
    return LockInfo(name=name, holder=holder, token=int(token), ttl_remaining=max(pttl, 0) / 1000.0)


def _equals(expected: bytes, reply: Any) -> bool:
    return bool(reply == expected)


def _present(names: list[str], values: list[Any]) -> set[str]:
    return {n for n, v in zip(names, values, strict=True) if v is not None}


def _tokens(reply: list[Any]) -> list[int]:
    return [int(t) for t in reply]


# -- the operations --------------------------------------------------------------------------------------
class Operations:
    """The backend SPI's operations for one backend's settings, as :data:`Operation` values."""

    def __init__(self, settings: Settings, where: str) -> None:
        self.keys = Keys(settings.prefix)
        self.where = where
        fence_ttl_ms = ms(settings.fence_ttl) if settings.fence_ttl > 0 else 0
        self.scripts = Scripts.compile("SPUBLISH" if settings.sharded_pubsub else "PUBLISH", fence_ttl_ms)
        self.replicas = settings.wait_replicas
        self.replicas_timeout = settings.wait_replicas_timeout
        self.cluster = settings.kind == "cluster"

    def _eval(self, script: Script, name: str, args: list[str | int], decode: Callable[[Any], T]) -> Eval[T]:
        return Eval(script, self.keys.of(name, script.suffixes), args, decode)

    # -- locks ---------------------------------------------------------------------------------------
    def try_acquire(self, name: str, holder: str, ttl: float, queue_ttl: float | None) -> Operation[Attempt]:
        s = self.scripts
        if queue_ttl is None:
            call = self._eval(s.acquire, name, [holder, ms(ttl)], decode_attempt)
        else:
            call = self._eval(s.fair_acquire, name, [holder, ms(ttl), ms(queue_ttl)], decode_attempt)
        if not self.replicas:
            return call
        return self._replicated(call, functools.partial(self.release, name, holder))

    def release(self, name: str, holder: str, token: int) -> Eval[bool]:
        return self._eval(self.scripts.release, name, [f"{token}:{holder}"], decode_flag)

    def extend(self, name: str, holder: str, token: int, ttl: float) -> Eval[bool]:
        return self._eval(self.scripts.extend, name, [f"{token}:{holder}", ms(ttl)], decode_flag)

    def inspect(self, name: str) -> Eval[LockInfo | None]:
        return self._eval(self.scripts.inspect, name, [], functools.partial(decode_info, name))

    def holds(self, name: str, holder: str, token: int) -> Command[bool]:
        return Command(("GET", self.keys.key(name, "lock")), functools.partial(_equals, f"{token}:{holder}".encode()))

    def cancel_wait(self, name: str, holder: str) -> Eval[None]:
        return self._eval(self.scripts.cancel_wait, name, [holder], decode_nothing)

    def try_acquire_many(self, names: Sequence[str], holder: str, ttl: float, skip_done: bool) -> Plan[dict[str, int]]:
        """One script per hash slot (one round trip off a cluster); every grant is given back if a later
        group fails, and the error is raised."""
        script = self.scripts.acquire_many
        args: list[str | int] = [holder, ms(ttl), "1" if skip_done else "0"]
        granted: dict[str, int] = {}
        try:
            for number, group in enumerate(self._by_slot(names)):
                if number:
                    pause_point("acquire_many:group-granted")  # a cluster batch: one script per slot
                call = Eval(script, [key for name in group for key in self.keys.of(name, script.suffixes)], args,
                            _tokens)
                if self.replicas:
                    tokens, acked = yield Replicated(call, self.replicas, ms(self.replicas_timeout))
                else:
                    tokens, acked = (yield call), None
                granted.update((n, t) for n, t in zip(group, tokens, strict=True) if t != 0)
                if acked is not None and acked < self.replicas:
                    raise self._too_few(acked)
        except BackendUnavailable:
            for name, token in granted.items():
                with contextlib.suppress(BackendUnavailable):  # else it expires at its ttl
                    yield self.release(name, holder, token)
            raise
        return granted

    @property
    def pause_points(self) -> frozenset[str]:
        """The operations that take more than one round trip: a batch over several cluster slots."""
        return frozenset({"acquire_many:group-granted"}) if self.cluster else frozenset()

    def _by_slot(self, names: Sequence[str]) -> list[list[str]]:
        unique = list(dict.fromkeys(names))
        if not self.cluster:
            return [unique]
        groups: dict[int, list[str]] = defaultdict(list)
        for name in unique:
            groups[key_slot(self.keys.base(name).encode())].append(name)
        return list(groups.values())

    # -- semaphores ----------------------------------------------------------------------------------
    def try_acquire_permit(self, name: str, permits: int, holder: str, ttl: float) -> Operation[Attempt]:
        call = self._eval(self.scripts.sem_acquire, name, [holder, permits, ms(ttl)], decode_attempt)
        if not self.replicas:
            return call
        return self._replicated(call, functools.partial(self.release_permit, name, holder))

    def release_permit(self, name: str, holder: str, token: int) -> Eval[bool]:
        return self._eval(self.scripts.sem_release, name, [f"{token}:{holder}"], decode_flag)

    def extend_permit(self, name: str, holder: str, token: int, ttl: float) -> Eval[bool]:
        return self._eval(self.scripts.sem_extend, name, [f"{token}:{holder}", ms(ttl)], decode_flag)

    def holds_permit(self, name: str, holder: str, token: int) -> Eval[bool]:
        return self._eval(self.scripts.sem_holds, name, [f"{token}:{holder}"], decode_flag)

    # -- done markers --------------------------------------------------------------------------------
    def mark_done(self, name: str, ttl: float) -> Command[None]:
        return Command(("SET", self.keys.done(name), "1", "PX", ms(ttl)), decode_nothing)

    def done(self, names: Sequence[str]) -> Operation[set[str]]:
        names = list(names)
        if not names:
            return _done_with(set())
        return MultiGet([self.keys.done(n) for n in names], functools.partial(_present, names))

    # -- administration ------------------------------------------------------------------------------
    def set_fence_floor(self, name: str, token: int, semaphore: bool) -> Eval[None]:
        script = self.scripts.set_sem_fence_floor if semaphore else self.scripts.set_fence_floor
        return self._eval(script, name, [str(int(token))], decode_nothing)

    def force_release(self, name: str) -> Eval[bool]:
        return self._eval(self.scripts.force_release, name, [], decode_flag)

    def ping(self) -> Command[None]:
        return Command(("PING",), decode_nothing)

    # -- wait_replicas -------------------------------------------------------------------------------
    def _replicated(self, call: Eval[Attempt], undo: Callable[[int], Eval[bool]]) -> Plan[Attempt]:
        """Grant with WAIT; if too few replicas acknowledged, give the grant back and raise."""
        attempt: Attempt
        attempt, acked = yield Replicated(call, self.replicas, ms(self.replicas_timeout))
        if attempt.token is not None and acked < self.replicas:
            with contextlib.suppress(BackendUnavailable):  # else it expires at its ttl
                yield undo(attempt.token)
            raise self._too_few(acked)
        return attempt

    def _too_few(self, acked: int) -> BackendUnavailable:
        return BackendUnavailable(
            f"redis at {self.where}: only {acked} of {self.replicas} replicas acknowledged the grant within "
            f"{self.replicas_timeout:g}s; released it")
