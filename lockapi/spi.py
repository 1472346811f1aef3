"""The backend SPI: everything a backend plugin needs from lockapi, and the only module it may import.

A backend is a class registered in the entry-point group ``lockapi.backends`` under the URL scheme it
serves (``redis``, ``postgresql``, ...). lockapi constructs it as ``Backend(config)`` with a
:class:`BackendConfig` and calls the methods below. Each method is ONE attempt: it never waits for a lock
to become free (lockapi's core does the waiting, renewal, validation and job bookkeeping, once for every
backend), and it returns or raises :class:`BackendUnavailable` within ``config.timeout`` seconds.

Arguments reach a backend already validated: names are non-empty ``str`` of at most 1024 UTF-8 bytes
without NUL, ttls are finite floats in (0, 10 years], permits are ints >= 1. Holder ids are opaque
strings unique per lease (at most 128 ASCII characters).

Every backend keeps the rules of the lock contract, numbered once in docs/semantics.md (mutual
exclusion, expiry by the backend's clock, fencing tokens, no reentrance, idempotent release, waiting,
fair mode, semaphores, done markers, auto-renew); :mod:`lockapi.testing` checks each, its test names
carrying the rule's number. Where a method's docstring below says more, it is about the SPI call, not a
second list of rules.
"""

from __future__ import annotations

import abc
import builtins
import contextlib
import enum
import math
import threading
from collections.abc import Callable, Generator, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import unquote

from lockapi.errors import (
    BackendUnavailable,
    ConfigError,
    LockError,
    UnsupportedFeature,
)

__all__ = [
    "CALLS",
    "PAUSE_OPERATIONS",
    "Attempt",
    "Backend",
    "BackendConfig",
    "BackendUnavailable",
    "Call",
    "Capability",
    "ConfigError",
    "LockError",
    "LockInfo",
    "Options",
    "Step",
    "UnsupportedFeature",
    "Wake",
    "Watchers",
    "check_calls",
    "pause_point",
    "redact_url",
    "run_call",
    "signal",
    "step",
    "trace_context",
]


class Capability(enum.Enum):
    """What a backend can do beyond the required minimum. ``manager.capabilities`` lists them."""

    FAIR = "fair"
    """``try_acquire(..., queue_ttl=...)`` keeps a FIFO queue of waiters per name."""
    PUSH_WAKEUP = "push_wakeup"
    """``watch`` delivers release notifications, so waiters need not poll."""
    ATOMIC_BATCH = "atomic_batch"
    """``try_acquire_many`` takes many names in one round trip."""
    MULTI_PROCESS = "multi_process"
    """Several processes on one host share the locks."""
    MULTI_HOST = "multi_host"
    """Several hosts share the locks."""
    ITER_DONE = "iter_done"
    """``iter_done`` lists live done markers (needed to migrate them)."""
    ADMIN = "admin"
    """``force_release`` and ``set_fence_floor`` work (migration and operators)."""
    BACKEND_EXPIRY = "backend_expiry"
    """Leases expire by the store's clock even when the holder's process dies or stops (rule 2 in
    full). A backend without it frees a dead holder's lease later; its docs say when."""


@dataclass(frozen=True, slots=True, init=False)
class Attempt:
    """The outcome of one acquire attempt.

    ``token`` is the fencing token when granted, else None. ``retry_after`` is, when not granted and
    known, the seconds until the current holder's lease expires (by the backend's clock); waiters never
    sleep longer than that, so a lost wake-up costs at most one ttl.
    """

    token: int | None
    retry_after: float | None = None

    def __init__(self, token: int | None, retry_after: float | None = None) -> None:
        # The slots' own setters: what the generated frozen __init__ does through object.__setattr__,
        # at about two thirds of its cost (one Attempt per acquire attempt).
        _set_token(self, token)
        _set_retry_after(self, retry_after)

    @property
    def granted(self) -> bool:
        return self.token is not None


_set_token = vars(Attempt)["token"].__set__
_set_retry_after = vars(Attempt)["retry_after"].__set__


@dataclass(frozen=True, slots=True)
class LockInfo:
    """What ``inspect`` knows about a held lock: holder id, fencing token and seconds left."""

    name: str
    holder: str
    token: int
    ttl_remaining: float


Wake = Callable[[], None]
"""A callback a backend calls (from any thread) when a watched name may have become free."""

K = TypeVar("K", bound=Hashable)


class Watchers(Generic[K]):
    """Wake callbacks registered per key, thread-safe: the routing table behind a ``watch``.

    ``register`` is a context manager. ``wake(key)`` calls every callback of ``key``;
    ``wake(key, holder)`` only those registered for that holder (a fair waiter) or for no holder. Callbacks
    run outside the internal lock (so a callback may do anything but block for long), and a callback
    that raises is ignored.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wakes: dict[K, list[tuple[Wake, str | None]]] = {}
        self.watched: Mapping[K, object] = self._wakes
        """The keys that have callbacks now (the live table: read without the lock, like :meth:`wake`'s
        fast path; empty means a wake-up has nobody to call)."""

    @contextlib.contextmanager
    def register(self, key: K, wake: Wake, holder: str | None = None) -> Iterator[None]:
        entry = (wake, holder)
        with self._lock:
            self._wakes.setdefault(key, []).append(entry)
        try:
            yield
        finally:
            with self._lock:
                entries = self._wakes[key]
                entries.remove(entry)
                if not entries:
                    del self._wakes[key]

    def wake(self, key: K, holder: str | None = None) -> None:
        # Lock-free fast path: a watcher registers before it re-checks the lock, so one that is not
        # registered yet when this reads the table will see the state this wake-up announces.
        if key not in self._wakes:
            return
        with self._lock:
            entries = list(self._wakes.get(key, ()))
        self._call([w for w, h in entries if holder is None or h is None or h == holder])

    def wake_all(self) -> None:
        """Wake every registered callback (e.g. after notifications may have been lost)."""
        with self._lock:
            wakes = [wake for entries in self._wakes.values() for wake, _ in entries]
        self._call(wakes)

    @staticmethod
    def _call(wakes: list[Wake]) -> None:
        for wake in wakes:
            with contextlib.suppress(Exception):
                wake()


PAUSE_OPERATIONS = (
    "acquire", "acquire_fair", "cancel_wait", "release", "extend", "acquire_many",
    "permit_acquire", "permit_release", "permit_extend", "mark_done", "done",
)
"""The operations a pause point may belong to: a point is named ``"<operation>:<what was just done>"``."""

S = TypeVar("S")
Result = TypeVar("Result")
Plan = Generator[S, Any, Result]
"""An operation written without I/O (a generator): it yields the steps it needs (a script to run, map
calls to send), is sent each step's answer or thrown its error, and returns the operation's result.
A backend that serves both APIs writes each operation once as a plan and runs it with :func:`drive`
(blocking) and :func:`lockapi.aio.spi.drive_async` (asyncio)."""


def drive(plan: Generator[S, Any, Result], run: Callable[[S], Any]) -> Result:
    """Run ``plan`` to its end with a blocking step runner; an error ``run`` raises is thrown into the
    plan (which may handle it: withdraw a grant, unlock) and propagates if it does not."""
    answer: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = plan.send(answer) if error is None else plan.throw(error)
        except StopIteration as stop:
            result: Result = stop.value
            return result
        try:
            answer, error = run(step), None
        except BaseException as exc:
            answer, error = None, exc


_pause_hook: Callable[[str], None] | None = None


def pause_point(point: str) -> None:
    """Mark the boundary between two backend round trips of one operation (``"extend:read"``).

    A backend calls this between every pair of consecutive round trips of a multi-step operation and
    lists each point in :attr:`Backend.pause_points`. It costs one global read unless a test harness
    (:mod:`lockapi.testing.pauses`) is installed; the harness may then stop the calling thread here while
    another holder proceeds, to prove the operation keeps the contract whatever happens in between.
    """
    hook = _pause_hook
    if hook is not None:
        hook(point)


def set_pause_hook(hook: Callable[[str], None] | None) -> None:
    """Install (or with None remove) the function :func:`pause_point` calls. For test harnesses only."""
    global _pause_hook
    _pause_hook = hook


class Step:
    """What :func:`step` yields: set ``outcome`` (a short word such as ``granted``) before the block ends
    to report how the step went; an exception leaving the block reports ``error`` by itself."""

    __slots__ = ("outcome",)

    def __init__(self) -> None:
        self.outcome: str | None = None


class _UnobservedStep(contextlib.AbstractContextManager[Step]):
    """The step context while nobody observes: one shared object, nothing recorded."""

    def __enter__(self) -> Step:
        return Step()

    def __exit__(self, *exc: object) -> None:
        return None


_UNOBSERVED = _UnobservedStep()
_observer_hook: Any = None


def step(op: str, name: str, *, backend: str = "", parent: object = None,
         **attributes: builtins.str | builtins.int | builtins.float | builtins.bool
         ) -> contextlib.AbstractContextManager[Step]:
    """Report a plugin's own step (``"migration.shadow"``) on ``name`` to the process-wide observers.

    Use it as ``with step("migration.dual", name, backend="migration", side="r") as s: ...; s.outcome =
    "granted"``. A tracing observer opens a span for the block, a child of the operation running on this
    thread, or of ``parent`` (a :func:`trace_context` captured on the thread that queued this work).
    Costs one global read while nobody observes. ``attributes`` must be low-cardinality.
    """
    hook = _observer_hook
    if hook is None:
        return _UNOBSERVED
    return hook.step(op, name, backend, parent, attributes)  # type: ignore[no-any-return]


def signal(kind: str, name: str, **attributes: builtins.str | builtins.int | builtins.float | builtins.bool
           ) -> None:
    """Report a one-off fact about ``name`` to the process-wide observers, e.g.
    ``signal("migration_mismatch", name, verdict="false_grant", op="acquire", phase="shadow")``.
    A metrics observer counts it (kinds and attributes it knows; see docs/observability.md)."""
    hook = _observer_hook
    if hook is not None:
        hook.signal(kind, name, attributes)


def trace_context() -> object:
    """The observers' view of the operation running on this thread (e.g. its span), to pass as
    ``step(..., parent=...)`` from another thread; None while nobody observes."""
    hook = _observer_hook
    return None if hook is None else hook.context()


def set_observer_hook(hook: Any) -> None:
    """Install (None: remove) what :func:`step`, :func:`signal` and :func:`trace_context` call. Core only
    (:mod:`lockapi.observers` installs it while process-wide observers exist)."""
    global _observer_hook
    _observer_hook = hook


def redact_url(url: str) -> str:
    """Return ``url`` with any password or secret query value replaced by ``***``.

    Use it in every message, log line and report that shows a URL. It works on the text, so a URL no
    parser accepts (an empty scheme, a doubled ``?``) is redacted all the same.
    """
    text = str(url)
    head, sep, rest = text.partition("://")
    if sep:
        end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
        authority = rest[:end]
        if "@" in authority:
            userinfo, _, hostinfo = authority.rpartition("@")
            # "user:password@" keeps the user; a lone "secret@" may be a password (redis://secret@host).
            user, has_password, _ = userinfo.partition(":")
            authority = f"{user}:***@{hostinfo}" if has_password else f"***@{hostinfo}"
        text = f"{head}{sep}{authority}{rest[end:]}"
    base, qmark, tail = text.partition("?")
    if not qmark:
        return text
    query, hash_, fragment = tail.partition("#")
    fields = []
    for field in query.split("&"):
        key, eq, _ = field.partition("=")
        fields.append(f"{key}=***" if eq and _is_secret(unquote(key)) else field)
    return f"{base}?{'&'.join(fields)}{hash_}{fragment}"


def _is_secret(key: str) -> bool:
    key = key.lower()
    return any(word in key for word in ("password", "secret", "token", "key")) and key != "keyfile"


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class Options:
    """Backend options, merged from the URL query string, the config file and ``connect(**options)``.

    Values from URLs and environment variables arrive as strings; the typed getters convert them and
    raise :class:`ConfigError` naming the option. Call :meth:`finish` after reading every option the
    backend knows, so a misspelt option is an error before any connection is made.
    """

    def __init__(self, values: Mapping[builtins.str, Any], *, source: builtins.str = "options") -> None:
        self._values = dict(values)
        self._used: set[builtins.str] = set()
        self._source = source

    def __contains__(self, key: builtins.str) -> bool:
        return key in self._values

    def raw(self, key: builtins.str, default: Any = None) -> Any:
        self._used.add(key)
        return self._values.get(key, default)

    def str(
        self, key: builtins.str, default: builtins.str | None = None, *,
        choices: Sequence[builtins.str] | None = None,
    ) -> builtins.str | None:
        value = self.raw(key, default)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ConfigError(f"option {key!r} must be a string, got {value!r}")
        if choices is not None and value not in choices:
            raise ConfigError(f"option {key!r} must be one of {', '.join(choices)}; got {value!r}")
        return value

    def float(self, key: builtins.str, default: builtins.float, *, minimum: builtins.float = 0.0,
              strict: builtins.bool = True) -> builtins.float:
        value = self.raw(key, default)
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"option {key!r} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not math.isfinite(number) or number < minimum or (
            strict and number == minimum
        ):
            bound = ">" if strict else ">="
            raise ConfigError(f"option {key!r} must be a finite number {bound} {minimum}, got {value!r}")
        return number

    def int(self, key: builtins.str, default: builtins.int, *, minimum: builtins.int = 0) -> builtins.int:
        value = self.raw(key, default)
        if isinstance(value, bool):
            raise ConfigError(f"option {key!r} must be an integer, got {value!r}")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"option {key!r} must be an integer, got {value!r}") from None
        if number < minimum:
            raise ConfigError(f"option {key!r} must be >= {minimum}, got {value!r}")
        return number

    def bool(self, key: builtins.str, default: builtins.bool) -> builtins.bool:
        value = self.raw(key, default)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ConfigError(f"option {key!r} must be true or false, got {value!r}")

    def list(self, key: builtins.str) -> builtins.list[builtins.str]:
        """A list option: a TOML array, or a comma-separated string."""
        value = self.raw(key, None)
        if value is None:
            return []
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return list(value)
        raise ConfigError(f"option {key!r} must be a list of strings, got {value!r}")

    def finish(self, known: Sequence[builtins.str] = ()) -> None:
        """Raise :class:`ConfigError` if any option was never read."""
        unknown = sorted(set(self._values) - self._used - set(known))
        if unknown:
            raise ConfigError(
                f"unknown {self._source} {', '.join(map(repr, unknown))}; "
                f"this backend accepts: {', '.join(sorted(self._used | set(known)))}"
            )


DEFAULT_TIMEOUT = 5.0


@dataclass
class BackendConfig:
    """What a backend is constructed from.

    ``scheme`` is the entry-point name the URL resolved to (``redis+cluster``; ``postgresql`` for
    ``postgresql+psycopg``). ``url`` is the connection URL without its query string, with the scheme as
    written (drivers may need it); ``options`` holds the query parameters and every other option.
    ``timeout`` (seconds) bounds every single backend operation, including connecting.
    """

    url: str
    scheme: str
    options: Options
    timeout: float = DEFAULT_TIMEOUT

    @property
    def redacted_url(self) -> str:
        return redact_url(self.url)


Call = tuple[str, tuple[Any, ...], dict[str, Any]]
"""One SPI call as data for :meth:`Backend.run_calls`: (method name, positional arguments, keyword
arguments), e.g. ``("release", (name, holder, token), {})``."""

CALLS = frozenset({"try_acquire", "release", "extend", "try_acquire_many", "try_acquire_permit",
                   "release_permit", "extend_permit", "mark_done", "done", "set_fence_floor"})
"""The methods :meth:`Backend.run_calls` runs."""


def run_call(backend: Backend, call: Call) -> Any:
    """Run one :data:`Call` on ``backend``: its result, or the :class:`LockError` it raised (returned)."""
    method, args, kwargs = call
    try:
        return getattr(backend, method)(*args, **kwargs)
    except LockError as exc:
        return exc


def check_calls(calls: Sequence[Call]) -> None:
    """ValueError (before any I/O) for a call :meth:`Backend.run_calls` does not run."""
    for call in calls:
        if call[0] not in CALLS:
            raise ValueError(f"run_calls runs only {', '.join(sorted(CALLS))}, not {call[0]!r}")


class Backend(abc.ABC):
    """A connection to one lock store. Implementations are thread-safe.

    Subclasses set :attr:`capabilities` and implement the abstract methods; the others have working
    defaults built on them.

    Error policy (every backend, and the migration tooling built on the SPI):

    * only lockapi errors leave a backend: a driver's exception is translated in ONE place of the
      backend (a single ``_run``/``_translate`` helper), never method by method;
    * the store unreachable, or slower than ``config.timeout`` for the whole call (connecting included),
      is :class:`BackendUnavailable`; wrong credentials, a missing database or a bad option is
      :class:`ConfigError` (retrying will not help);
    * the message is one line: what failed, where (the URL through :func:`redact_url`), what to do. A
      server's stack trace or a multi-line driver message never goes into it; the driver's exception
      is chained as ``__cause__`` (``raise ... from exc``) for the full story;
    * a failure inside a callback the backend calls (a wake-up, a listener) is logged with
      ``logging.getLogger(__name__).exception`` and never reaches the caller.
    """

    capabilities: frozenset[Capability] = frozenset()
    description: str = ""
    """One line shown by ``lockapi backends``."""
    capabilities_vary: str = ""
    """When an instance's capabilities depend on its URL or options (a dialect, a phase, an option), one
    line saying how: ``lockapi backends`` shows it next to the class's capabilities (the ones every
    instance has), and ``lockapi check URL`` shows an instance's own."""
    pause_points: frozenset[str] = frozenset()
    """Every :func:`pause_point` this backend calls (empty when each operation is one round trip).
    The conformance suite checks the list is complete and stops a holder at each point in turn."""
    contended_pause_points: frozenset[str] = frozenset()
    """The points of :attr:`pause_points` an operation passes only when another holder has the name
    (a fast path that fell back to a slower one); the conformance suite walks them with the name held."""
    max_permits: int = 2**31 - 1
    """The largest ``permits`` a semaphore may have here; more is refused before any I/O."""

    def __init__(self, config: BackendConfig) -> None:
        self.config = config

    # -- locks -------------------------------------------------------------------------------------
    @abc.abstractmethod
    def try_acquire(self, name: str, holder: str, ttl: float, *, queue_ttl: float | None = None) -> Attempt:
        """Grant the lock ``name`` to ``holder`` for ``ttl`` seconds if it is free (or expired).

        With ``queue_ttl`` (only if the backend has :attr:`Capability.FAIR`): join or stay in the name's
        FIFO queue of waiters, valid for ``queue_ttl`` seconds from now unless refreshed by another
        call; waiters whose entry expired are dropped first; the lock is granted only to the head of
        the queue, which then leaves the queue. Without it, the queue is not consulted.
        """

    @abc.abstractmethod
    def release(self, name: str, holder: str, token: int) -> bool:
        """Free the lock if ``holder``/``token`` still hold it; True if it did, False otherwise."""

    @abc.abstractmethod
    def extend(self, name: str, holder: str, token: int, ttl: float) -> bool:
        """Set the lease to expire ``ttl`` seconds from now if ``holder``/``token`` still hold it."""

    @abc.abstractmethod
    def inspect(self, name: str) -> LockInfo | None:
        """The live lease on ``name``, or None if it is free."""

    def holds(self, name: str, holder: str, token: int) -> bool:
        """True if ``holder``/``token`` hold a live lease on ``name``."""
        info = self.inspect(name)
        return info is not None and info.holder == holder and info.token == token

    def cancel_wait(self, name: str, holder: str) -> None:  # noqa: B027 - optional hook
        """Leave the fair queue of ``name`` (a fair waiter gave up). Backends without FAIR ignore it."""

    def try_acquire_many(
        self, names: Sequence[str], holder: str, ttl: float, *, skip_done: bool = False
    ) -> dict[str, int]:
        """Try each name once; return {name: token} for the granted ones.

        With ``skip_done``, a name whose done marker is live is not granted. Backends with
        :attr:`Capability.ATOMIC_BATCH` do all of it in one round trip.
        """
        granted: dict[str, int] = {}
        try:
            for name in names:
                attempt = self.try_acquire(name, holder, ttl)
                if attempt.token is not None:
                    granted[name] = attempt.token
            if skip_done and granted:
                for name in self.done(list(granted)):
                    self.release(name, holder, granted.pop(name))
        except LockError:
            for name, token in granted.items():
                with contextlib.suppress(LockError):
                    self.release(name, holder, token)
            raise
        return granted

    # -- semaphores --------------------------------------------------------------------------------
    @abc.abstractmethod
    def try_acquire_permit(self, name: str, permits: int, holder: str, ttl: float) -> Attempt:
        """Grant one of ``permits`` permits of semaphore ``name`` if fewer than ``permits`` are live.

        ``retry_after`` on denial: seconds until the soonest live permit expires.
        """

    @abc.abstractmethod
    def release_permit(self, name: str, holder: str, token: int) -> bool:
        """Return the permit if it is still live; True if it was."""

    @abc.abstractmethod
    def extend_permit(self, name: str, holder: str, token: int, ttl: float) -> bool:
        """Set the permit to expire ``ttl`` seconds from now if it is still live."""

    @abc.abstractmethod
    def holds_permit(self, name: str, holder: str, token: int) -> bool:
        """True if the permit is live."""

    # -- done markers ------------------------------------------------------------------------------
    @abc.abstractmethod
    def mark_done(self, name: str, ttl: float) -> None:
        """Record that ``name`` was processed; the marker expires after ``ttl`` seconds."""

    @abc.abstractmethod
    def done(self, names: Sequence[str]) -> set[str]:
        """The subset of ``names`` whose done marker is live (one round trip where possible)."""

    def iter_done(self) -> Iterator[tuple[str, float]]:
        """Yield (name, seconds left) for every live done marker. Needs :attr:`Capability.ITER_DONE`."""
        raise UnsupportedFeature(f"{type(self).__name__} cannot list done markers")

    # -- administration (migration, operators) -----------------------------------------------------
    def set_fence_floor(self, name: str, token: int, *, semaphore: bool = False) -> None:
        """Ensure the next token issued for ``name`` is greater than ``token``. Needs ADMIN."""
        raise UnsupportedFeature(f"{type(self).__name__} cannot move fencing counters")

    def force_release(self, name: str) -> bool:
        """Free ``name`` whoever holds it; True if it was held. Needs ADMIN."""
        raise UnsupportedFeature(f"{type(self).__name__} cannot force-release locks")

    # -- several calls at once ---------------------------------------------------------------------
    def run_calls(self, calls: Sequence[Call]) -> list[Any]:
        """Run ``calls`` (:data:`Call`, methods in :data:`CALLS`) in the order given and return, per call,
        its result or the :class:`LockError` it raised (returned, not raised: one call's failure does not
        stop the others). An unknown method is a ValueError before any I/O.

        No call sees another's result before all were sent, so a caller puts in one batch only calls
        whose arguments do not depend on each other's answers: acquires of different names, or a release
        and the next acquire of the same name (the store runs them in this order). The default runs them
        one by one; a backend may send them in one round trip (Redis: one pipeline). Used by the
        migration shadow's replay, which sends each wave of independent replays as one batch.
        """
        check_calls(calls)
        return [run_call(self, call) for call in calls]

    # -- waiting -----------------------------------------------------------------------------------
    def watch(
        self, name: str, wake: Wake, *, semaphore: bool = False, holder: str | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """Call ``wake()`` whenever ``name`` may have become free, while the context is open.

        The subscription is in effect when ``__enter__`` returns (lockapi re-checks the lock only after
        that, so no release is missed). Backends with :attr:`Capability.PUSH_WAKEUP` override this;
        the default delivers nothing and lockapi polls with jittered backoff.

        ``holder`` is given for a waiter in the fair queue (``try_acquire(..., queue_ttl=...)``). A
        backend that knows the head of the queue when the lock becomes free then wakes only the head
        (``Watchers.wake(key, head)``); waking every watcher is also correct, only slower.
        """
        return contextlib.nullcontext()

    # -- lifecycle ---------------------------------------------------------------------------------
    def ping(self) -> None:
        """Raise :class:`BackendUnavailable` unless the store answers within ``timeout``."""
        self.inspect("lockapi:ping")

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections and background threads. Idempotent."""
