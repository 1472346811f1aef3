"""Shadow mode (and cutover, with the roles swapped): the primary decides, the shadow follows behind.

Every operation runs on the primary and its result goes back to the caller at once; the same operation
is queued for the shadow backend (:class:`ReplayQueue`: bounded, sharded by name, never blocking) and
replayed there by :class:`~lockapi_migration.replay.replayer.Replayer`, which records both decisions.
The caller only pays for the primary call, a few tuples and a non-blocking queue put, whatever the
shadow does; a full queue drops the replay (recorded as ``dropped``).

With ``union_done`` (cutover) done-marker reads consult both backends synchronously and treat a name as
done if either says so; a failing shadow then falls back to the primary alone (and is recorded). Those
are the strategy's own pause points: ``done:primary-read`` (between the primary's and the shadow's
marker reads) and ``done:batch-granted`` (a ``lock_many`` batch granted on the primary, its markers not
yet read on the shadow).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from lockapi.spi import Attempt, Backend, BackendConfig, Capability, LockError, LockInfo, Wake, pause_point
from lockapi_migration.records.model import (
    DENIED,
    DONE,
    GRANTED,
    NOT_ASKED,
    Side,
    T,
    attempt_side,
    bool_side,
    done_side,
    granted_side,
    ok_side,
    timed,
)
from lockapi_migration.replay.queue import Replay
from lockapi_migration.replay.replayer import Replayer, done_rows
from lockapi_migration.strategies.operations import LOCK, SEMAPHORE, Kind


class ShadowStrategy(Backend):
    """The shadow and cutover phases: the primary decides at once, the shadow is replayed behind it."""

    def __init__(self, config: BackendConfig, primary: Backend, shadow: Backend, replayer: Replayer,
                 queue: Replay, *, union_done: bool) -> None:
        super().__init__(config)
        self.capabilities = primary.capabilities - ({Capability.ATOMIC_BATCH} if union_done else set())
        self.pause_points = (frozenset({"done:batch-granted", "done:primary-read"}) if union_done
                             else frozenset()) | primary.pause_points
        self.contended_pause_points = primary.contended_pause_points
        self._p = primary
        self._s = shadow
        self._replayer = replayer
        self._queue = queue
        self._union_done = union_done
        self._floor_shadow = Capability.ADMIN in shadow.capabilities

    # -- plumbing ----------------------------------------------------------------------------------
    def _primary(self, op: str, names: Sequence[str], holder: str, ttl: float | None,
                 call: Callable[[], T], decide: Callable[[T, float], Side]) -> tuple[Side, T, float]:
        """Run the primary side; on error record it (shadow not asked) and re-raise."""
        ts = time.time()
        side, result, exc = timed(call, decide)
        if exc is not None:
            self._replayer.record(op, holder, ttl, [(n, side, NOT_ASKED, "") for n in names], ts)
            raise exc
        return side, result, ts  # type: ignore[return-value]

    def _replay(self, key: str, method: str, *args: Any) -> None:
        """Queue the replay ``Replayer.<method>`` on ``key``'s shard; if the queue is full, record the drop."""
        if not self._queue.submit(key, method, *args):
            self._replayer.shed(method, args)

    # -- lease operations (locks and semaphores) ---------------------------------------------------
    def _acquire(self, kind: Kind, name: str, holder: str, ttl: float, permits: int,
                 queue_ttl: float | None = None) -> Attempt:
        op = kind.op("acquire")
        p_side, attempt, ts = self._primary(
            op, [name], holder, ttl, lambda: kind.acquire(self._p, name, holder, ttl, permits, queue_ttl),
            attempt_side)
        self._replay(name, "acquire", kind.label, name, holder, ttl, permits, p_side, ts)
        return attempt

    def _lease_op(self, kind: Kind, verb: str, name: str, holder: str, token: int, ttl: float | None,
                  call: Callable[[Backend, int], bool]) -> bool:
        """Release or extend (``ttl`` given): primary with ``token``, shadow with its own token."""
        op = kind.op(verb)
        p_side, ok, ts = self._primary(op, [name], holder, ttl, lambda: call(self._p, token), bool_side)
        self._replay(name, "lease", kind.label, verb, name, holder, ttl, p_side, ts)
        return ok

    def try_acquire(self, name: str, holder: str, ttl: float, *, queue_ttl: float | None = None) -> Attempt:
        return self._acquire(LOCK, name, holder, ttl, 1, queue_ttl)

    def release(self, name: str, holder: str, token: int) -> bool:
        return self._lease_op(LOCK, "release", name, holder, token, None,
                              lambda b, t: b.release(name, holder, t))

    def extend(self, name: str, holder: str, token: int, ttl: float) -> bool:
        return self._lease_op(LOCK, "extend", name, holder, token, ttl,
                              lambda b, t: b.extend(name, holder, t, ttl))

    def holds(self, name: str, holder: str, token: int) -> bool:
        return self._p.holds(name, holder, token)

    def inspect(self, name: str) -> LockInfo | None:
        return self._p.inspect(name)

    def cancel_wait(self, name: str, holder: str) -> None:
        self._p.cancel_wait(name, holder)

    def try_acquire_permit(self, name: str, permits: int, holder: str, ttl: float) -> Attempt:
        return self._acquire(SEMAPHORE, name, holder, ttl, permits)

    def release_permit(self, name: str, holder: str, token: int) -> bool:
        return self._lease_op(SEMAPHORE, "release", name, holder, token, None,
                              lambda b, t: b.release_permit(name, holder, t))

    def extend_permit(self, name: str, holder: str, token: int, ttl: float) -> bool:
        return self._lease_op(SEMAPHORE, "extend", name, holder, token, ttl,
                              lambda b, t: b.extend_permit(name, holder, t, ttl))

    def holds_permit(self, name: str, holder: str, token: int) -> bool:
        return self._p.holds_permit(name, holder, token)

    # -- batches -----------------------------------------------------------------------------------
    def try_acquire_many(
        self, names: Sequence[str], holder: str, ttl: float, *, skip_done: bool = False
    ) -> dict[str, int]:
        p_side, granted, ts = self._primary(
            "acquire_many", names, holder, ttl,
            lambda: self._p.try_acquire_many(names, holder, ttl, skip_done=skip_done), granted_side)
        if skip_done and self._union_done and granted:
            pause_point("done:batch-granted")
            for name in self._union_read(list(granted), set(), Side(DONE), ts):
                LOCK.undo(self._p, name, holder, granted.pop(name))
        p_rows = {n: Side(GRANTED, granted[n], p_side.latency) if n in granted
                  else Side(DENIED, latency=p_side.latency) for n in names}
        for group in self._queue.group(list(p_rows)):
            self._replay(group[0], "acquire_many", group, holder, ttl, skip_done, {n: p_rows[n] for n in group}, ts)
        return granted

    # -- done markers ------------------------------------------------------------------------------
    def mark_done(self, name: str, ttl: float) -> None:
        p_side, _, ts = self._primary("mark_done", [name], "", ttl, lambda: self._p.mark_done(name, ttl), ok_side)
        self._replay(name, "mark_done", name, ttl, p_side, ts)

    def done(self, names: Sequence[str]) -> set[str]:
        p_side, p_done, ts = self._primary("done", names, "", None, lambda: self._p.done(names),
                                           done_side)
        if self._union_done:
            pause_point("done:primary-read")
            return p_done | self._union_read(names, p_done, p_side, ts)
        for group in self._queue.group(list(names)):
            self._replay(group[0], "done", group, p_side, {n for n in group if n in p_done}, ts)
        return p_done

    def _union_read(self, names: Sequence[str], p_done: set[str], p_side: Side, ts: float) -> set[str]:
        """Cutover: the shadow's done markers for ``names``, read synchronously and recorded; a failing
        shadow counts as "no markers" (migrate check required the backfill before cutover)."""
        s_side, s_done, _ = timed(lambda: self._s.done(names), done_side)
        self._replayer.record("done", "", None, done_rows(names, p_side, p_done, s_side, s_done), ts)
        return s_done or set()

    def iter_done(self) -> Iterator[tuple[str, float]]:
        return self._p.iter_done()

    # -- administration and waiting ----------------------------------------------------------------
    def set_fence_floor(self, name: str, token: int, *, semaphore: bool = False) -> None:
        self._p.set_fence_floor(name, token, semaphore=semaphore)
        if self._floor_shadow:
            with contextlib.suppress(LockError):
                self._s.set_fence_floor(name, token, semaphore=semaphore)

    def force_release(self, name: str) -> bool:
        held = self._p.force_release(name)
        with contextlib.suppress(LockError):
            self._s.force_release(name)
        return held

    def watch(
        self, name: str, wake: Wake, *, semaphore: bool = False, holder: str | None = None
    ) -> contextlib.AbstractContextManager[None]:
        return self._p.watch(name, wake, semaphore=semaphore, holder=holder)

    def ping(self) -> None:
        self._p.ping()

    def close(self) -> None:
        """Nothing of its own: :class:`MigrationBackend` closes the replay queue and both backends."""
