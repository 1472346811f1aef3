"""Shadow mode (and cutover, with the roles swapped): the primary decides, the shadow follows behind.

Every operation runs on the primary and its result goes back to the caller at once; the same operation
is queued for the shadow backend (:class:`ReplayQueue`: bounded, sharded by name, never blocking)
and both decisions are recorded. The shadow's operation is derived from the primary's decision:

* primary granted: floor the shadow's fencing counter to the primary's token, then try the shadow; a
  shadow grant is remembered (holder -> shadow token) so the shadow release/extend use its own token;
* primary denied: try the shadow anyway; if the shadow grants, release it there at once (the shadow
  never holds what the primary does not) - that is the mismatch the record shows.

The caller only pays for building the task and a non-blocking queue put, whatever the shadow does.
With ``union_done`` (cutover) done-marker reads consult both backends synchronously and treat a name as
done if either says so; a failing shadow then falls back to the primary alone (and is recorded).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Sequence

from lockapi.spi import Attempt, Backend, BackendConfig, Capability, LockError, LockInfo, Wake
from lockapi_migration.records.model import (
    ABSENT,
    DENIED,
    DONE,
    DROPPED,
    GRANTED,
    NOT_ASKED,
    Side,
    T,
    attempt_side,
    bool_side,
    ok_side,
    timed,
)
from lockapi_migration.replay.queue import ReplayQueue
from lockapi_migration.strategies.operations import LOCK, SEMAPHORE, Kind, Recorder
from lockapi_migration.strategies.tokens import TokenMap

Row = tuple[str, Side, Side, str]
"""One recorded name: (name, primary side, shadow side, detail)."""


def done_rows(names: Sequence[str], p_side: Side, p_done: set[str] | None, s_side: Side,
              s_done: set[str] | None) -> list[Row]:
    """Per-name rows for a done-marker read on both sides (a side whose read failed keeps its error)."""
    def side(base: Side, found: set[str] | None, name: str) -> Side:
        if found is None:
            return base
        return Side(DONE if name in found else ABSENT, latency=base.latency)

    return [(n, side(p_side, p_done, n), side(s_side, s_done, n), "") for n in names]


class ShadowStrategy(Backend):
    def __init__(self, config: BackendConfig, primary: Backend, shadow: Backend, primary_label: str,
                 shadow_label: str, recorder: Recorder, executor: ReplayQueue, *,
                 union_done: bool) -> None:
        super().__init__(config)
        self.capabilities = primary.capabilities
        self._p = primary
        self._s = shadow
        self._plabel = primary_label
        self._slabel = shadow_label
        self._recorder = recorder
        self._executor = executor
        self._union_done = union_done
        self._floor_shadow = Capability.ADMIN in shadow.capabilities
        self._tokens = TokenMap()

    # -- plumbing ----------------------------------------------------------------------------------
    def _record(self, op: str, holder: str, ttl: float | None, rows: Sequence[Row], ts: float,
                delay: float | None = None) -> None:
        for name, p, s, detail in rows:
            self._recorder.record_sides(self._plabel, op, name, holder, ttl, p, s, delay=delay,
                                        detail=detail, ts=ts)

    def _primary(self, op: str, names: Sequence[str], holder: str, ttl: float | None,
                 call: Callable[[], T], decide: Callable[[T], Side]) -> tuple[Side, T, float]:
        """Run the primary side; on error record it (shadow not asked) and re-raise."""
        ts = time.time()
        side, result, exc = timed(call, decide)
        if exc is not None:
            self._record(op, holder, ttl, [(n, side, NOT_ASKED, "") for n in names], ts)
            raise exc
        return side, result, ts  # type: ignore[return-value]

    def _mirror(self, op: str, key: str, holder: str, ttl: float | None, ts: float,
                dropped: Sequence[tuple[str, Side]], task: Callable[[], list[Row]]) -> None:
        """Queue ``task`` (the shadow side) on ``key``'s shard and record its rows when it has run."""
        def run(submitted: float) -> None:
            delay = time.monotonic() - submitted
            self._record(op, holder, ttl, task(), ts, delay)

        if not self._executor.submit(key, run):
            self._record(op, holder, ttl, [(n, p, Side(error=DROPPED), "") for n, p in dropped], ts)

    # -- lease operations (locks and semaphores) ---------------------------------------------------
    def _acquire(self, kind: Kind, name: str, holder: str, ttl: float, permits: int,
                 queue_ttl: float | None = None) -> Attempt:
        op = kind.op("acquire")
        p_side, attempt, ts = self._primary(
            op, [name], holder, ttl, lambda: kind.acquire(self._p, name, holder, ttl, permits, queue_ttl),
            attempt_side)

        def shadow() -> list[Row]:
            return [(name, p_side, self._shadow_acquire(kind, name, holder, ttl, permits, p_side.token), "")]

        self._mirror(op, name, holder, ttl, ts, [(name, p_side)], shadow)
        return attempt

    def _shadow_acquire(self, kind: Kind, name: str, holder: str, ttl: float, permits: int,
                        p_token: int | None) -> Side:
        if p_token is not None and self._floor_shadow:
            with contextlib.suppress(LockError):  # the acquire below records the shadow's trouble
                kind.floor(self._s, name, p_token)
        side, attempt, _ = timed(lambda: kind.acquire(self._s, name, holder, ttl, permits), attempt_side)
        if attempt is not None and attempt.token is not None:
            if p_token is None:
                kind.undo(self._s, name, holder, attempt.token)
            else:
                self._tokens.put((kind.label, name, holder), attempt.token, ttl)
        return side

    def _lease_op(self, kind: Kind, verb: str, name: str, holder: str, token: int, ttl: float | None,
                  call: Callable[[Backend, int], bool]) -> bool:
        """Release or extend (``ttl`` given): primary with ``token``, shadow with its own token."""
        op = kind.op(verb)
        p_side, ok, ts = self._primary(op, [name], holder, ttl, lambda: call(self._p, token), bool_side)
        key = (kind.label, name, holder)

        def shadow() -> list[Row]:
            s_token = self._tokens.get(key) if ttl is not None else self._tokens.pop(key)
            if s_token is None:
                return [(name, p_side, NOT_ASKED, "shadow not held")]
            side, s_ok, _ = timed(lambda: call(self._s, s_token), bool_side)
            if s_ok and ttl is not None:
                self._tokens.put(key, s_token, ttl)
            return [(name, p_side, side, "")]

        self._mirror(op, name, holder, ttl, ts, [(name, p_side)], shadow)
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
            lambda: self._p.try_acquire_many(names, holder, ttl, skip_done=skip_done), lambda _: Side(GRANTED))
        if skip_done and self._union_done and granted:
            for name in self._union_read(list(granted), set(), Side(DONE), ts):
                LOCK.undo(self._p, name, holder, granted.pop(name))
        p_rows = {n: Side(GRANTED, granted[n], p_side.latency) if n in granted
                  else Side(DENIED, latency=p_side.latency) for n in names}
        self._mirror_many("acquire_many", holder, ttl, ts, p_rows,
                          lambda group: self._shadow_many(group, holder, ttl, skip_done, p_rows))
        return granted

    def _mirror_many(self, op: str, holder: str, ttl: float | None, ts: float, p_rows: dict[str, Side],
                     task: Callable[[list[str]], list[Row]]) -> None:
        """Mirror a multi-name operation as one shadow task per shard, so per-name order holds."""
        for group in self._executor.group(list(p_rows)):
            self._mirror(op, group[0], holder, ttl, ts, [(n, p_rows[n]) for n in group],
                         functools.partial(task, group))

    def _shadow_many(self, names: list[str], holder: str, ttl: float, skip_done: bool,
                     p_rows: dict[str, Side]) -> list[Row]:
        if self._floor_shadow:
            with contextlib.suppress(LockError):
                for name in names:
                    token = p_rows[name].token
                    if token is not None:
                        LOCK.floor(self._s, name, token)
        s_side, s_granted, _ = timed(
            lambda: self._s.try_acquire_many(names, holder, ttl, skip_done=skip_done), lambda _: Side(GRANTED))
        if s_granted is None:
            return [(n, p_rows[n], s_side, "") for n in names]
        for name, token in s_granted.items():
            if p_rows[name].token is None:
                LOCK.undo(self._s, name, holder, token)
            else:
                self._tokens.put((LOCK.label, name, holder), token, ttl)
        differ = [n for n in names if (n in s_granted) != (p_rows[n].token is not None)]
        details = self._marker_details(differ) if skip_done and differ else {}
        return [(n, p_rows[n], Side(GRANTED, s_granted[n], s_side.latency) if n in s_granted
                 else Side(DENIED, latency=s_side.latency), details.get(n, "")) for n in names]

    def _marker_details(self, names: list[str]) -> dict[str, str]:
        """For names the two sides decided differently with ``skip_done``: which side has a done marker."""
        found: dict[str, str] = {}
        for label, backend in ((self._plabel, self._p), (self._slabel, self._s)):
            with contextlib.suppress(LockError):
                for name in backend.done(names):
                    found[name] = found.get(name, "") + label
        return {name: f"done:{''.join(sorted(labels))}" for name, labels in found.items()}

    # -- done markers ------------------------------------------------------------------------------
    def mark_done(self, name: str, ttl: float) -> None:
        p_side, _, ts = self._primary("mark_done", [name], "", ttl, lambda: self._p.mark_done(name, ttl), ok_side)

        def shadow() -> list[Row]:
            side, _, _ = timed(lambda: self._s.mark_done(name, ttl), ok_side)
            return [(name, p_side, side, "")]

        self._mirror("mark_done", name, "", ttl, ts, [(name, p_side)], shadow)

    def done(self, names: Sequence[str]) -> set[str]:
        p_side, p_done, ts = self._primary("done", names, "", None, lambda: self._p.done(names),
                                           lambda _: Side(DONE))
        if self._union_done:
            return p_done | self._union_read(names, p_done, p_side, ts)

        def shadow(group: list[str]) -> list[Row]:
            s_side, s_done, _ = timed(lambda: self._s.done(group), lambda _: Side(DONE))
            return done_rows(group, p_side, p_done, s_side, s_done)

        p_rows = {n: Side(DONE if n in p_done else ABSENT, latency=p_side.latency) for n in names}
        self._mirror_many("done", "", None, ts, p_rows, shadow)
        return p_done

    def _union_read(self, names: Sequence[str], p_done: set[str], p_side: Side, ts: float) -> set[str]:
        """Cutover: the shadow's done markers for ``names``, read synchronously and recorded; a failing
        shadow counts as "no markers" (migrate check required the backfill before cutover)."""
        s_side, s_done, _ = timed(lambda: self._s.done(names), lambda _: Side(DONE))
        self._record("done", "", None, done_rows(names, p_side, p_done, s_side, s_done), ts)
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
        """Nothing of its own: :class:`MigrationBackend` closes the executor and both backends."""
