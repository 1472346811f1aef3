"""Dual mode: a lease needs BOTH backends, taken in a fixed order (H, then R).

* acquire: H first; if H grants, R is asked as it is. The caller gets R's token and it must be >= H's
  (then it is above every token issued before: H's to shadow nodes are below H's token, R's below R's):
  a lower R grant (R's counter behind H's: names shadow nodes took since R was last floored, or an H
  that seeds tokens from its clock) is given back, R's counter floored :data:`R_MARGIN` above H's token
  and R asked again. If R denies (or fails), the H grant is released and the caller is denied (or gets
  the error). When R's token is above H's, H's counter is then floored to it (when H supports it), so
  nodes still in shadow (which return H tokens) never see a token below one issued here; when they are
  equal H's next token is above it already. Steady state: one call to H, one to R. H's token is kept in
  a holder map for release/extend. ``acquire_many`` floors R to H's tokens first, as before.
* release/extend/holds: both; the lease stands only if both do ("losing either loses the lease").
* done markers: written to both; a name is done if either backend says so.
* any backend error fails the operation (closed): no lease is granted on one backend alone.

Every operation is recorded with both sides (no shadow delay: both are synchronous). Each side's call of
an acquire, release, extend, ``mark_done`` or ``done`` is reported as the step ``migration.dual``
(``lockapi.spi.step``; a span ``lockapi.migration.dual`` under the caller's operation span, attribute
``lockapi.side`` ``h`` or ``r``, outcome the side's decision or ``error``).

Pause points (``lockapi.spi.pause_point``) between the round trips: ``<acquire>:h-granted`` (H granted,
R not asked yet), ``<acquire>:r-behind`` (R's grant below H's token given back, R's counter not floored
yet; not in ``acquire_many``), ``<acquire>:r-floored`` (R's counter floored, R not asked (again) yet),
``<acquire>:r-granted`` (both granted, R's token above H's, H's counter not yet floored above it)
for ``acquire``, ``permit_acquire`` and ``acquire_many``; ``<release>:h-released`` and
``<extend>:h-extended`` (H done, R not yet) for locks and permits; ``mark_done:h-marked`` and
``done:h-read``. An extend that lands on one backend only gives the other side back at once (the lease
is lost; a half-extended lease must not keep other nodes out until its longer ttl).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from lockapi.spi import Attempt, Backend, BackendConfig, Capability, LockError, LockInfo, Wake, pause_point, step
from lockapi_migration.phases import H, R
from lockapi_migration.records.model import (
    DENIED,
    GRANTED,
    NOT_ASKED,
    Side,
    T,
    attempt_side,
    bool_side,
    clean_error,
    done_side,
    granted_side,
    ok_side,
    timed,
)
from lockapi_migration.replay.replayer import done_rows
from lockapi_migration.strategies.operations import LOCK, SEMAPHORE, Kind, Recorder
from lockapi_migration.strategies.tokens import TokenMap

NOT_COMBINABLE = frozenset({Capability.FAIR, Capability.ATOMIC_BATCH})
"""Capabilities two backends cannot offer together: two FIFO queues, two round trips."""
ACQUIRES = ("acquire", "permit_acquire", "acquire_many")
POINTS = frozenset({
    *(f"{op}:{step}" for op in ACQUIRES for step in ("h-granted", "r-floored", "r-granted")),
    "acquire:r-behind", "permit_acquire:r-behind",
    "release:h-released", "extend:h-extended", "permit_release:h-released", "permit_extend:h-extended",
    "mark_done:h-marked", "done:h-read",
})
"""Every pause point of the dual strategy (see the module docstring)."""
R_MARGIN = 1_000_000
"""How far above H's token R's counter is floored when R turned out to be behind H. Tokens only have to
go up; the margin keeps a counter that H seeds from its clock (SQLite: microseconds) below R's for about a
second, so the steady state stays one R call per acquire instead of re-flooring on every one."""


class DualStrategy(Backend):
    """The dual phase: every lease is taken on H, then on R, and stands only while both hold it."""

    def __init__(self, config: BackendConfig, h: Backend, r: Backend, recorder: Recorder) -> None:
        super().__init__(config)
        self.capabilities = (h.capabilities & r.capabilities) - NOT_COMBINABLE
        self._h = h
        self._r = r
        self._recorder = recorder
        self._floor_h = Capability.ADMIN in h.capabilities
        self._h_tokens = TokenMap()
        own = POINTS if self._floor_h else frozenset(p for p in POINTS if not p.endswith(":r-granted"))
        sides = h.pause_points | r.pause_points
        if Capability.FAIR not in self.capabilities:  # dual offers no fair mode: its sides' fair paths never run
            sides = frozenset(p for p in sides if p.split(":", 1)[0] not in ("acquire_fair", "cancel_wait"))
        self.pause_points = own | sides
        self.contended_pause_points = (h.contended_pause_points | r.contended_pause_points) & sides

    def _record(self, op: str, name: str, holder: str, ttl: float | None, h: Side, r: Side, ts: float,
                detail: str = "") -> None:
        self._recorder.record(op, name, holder, ttl, h, r, detail=detail, ts=ts)

    @staticmethod
    def _side(label: str, name: str, call: Callable[[], T], decide: Callable[[Any, float], Side], **attributes: int
              ) -> tuple[Side, T | None, LockError | None]:
        """One side's call (``timed``), reported as the step ``migration.dual`` on ``label`` (h or r); a
        batch (``acquire_many``, ``done``) is reported on its first name with ``count`` names."""
        with step("migration.dual", name, backend="migration", side=label, **attributes) as span:
            side, result, exc = timed(call, decide)
            span.outcome = "error" if exc is not None else side.decision
        return side, result, exc

    @staticmethod
    def _raise_first(*errors: LockError | None) -> None:
        for exc in errors:
            if exc is not None:
                raise exc

    # -- lease operations --------------------------------------------------------------------------
    def _acquire(self, kind: Kind, name: str, holder: str, ttl: float, permits: int) -> Attempt:
        op, ts = kind.op("acquire"), time.time()
        h_side, h_attempt, h_exc = self._side(
            H, name, lambda: kind.acquire(self._h, name, holder, ttl, permits), attempt_side)
        if h_attempt is None or h_attempt.token is None:
            self._record(op, name, holder, ttl, h_side, NOT_ASKED, ts)
            self._raise_first(h_exc)
            return h_attempt or Attempt(None)
        h_token = h_attempt.token
        pause_point(f"{op}:h-granted")
        r_side, r_attempt, r_exc = self._side(
            R, name, lambda: self._r_above(kind, name, holder, ttl, permits, h_token), attempt_side)
        if r_attempt is None or r_attempt.token is None:
            kind.undo(self._h, name, holder, h_token)
            self._record(op, name, holder, ttl, h_side, r_side, ts)
            self._raise_first(r_exc)
            return Attempt(None, r_attempt.retry_after if r_attempt else None)
        r_token = r_attempt.token
        if self._floor_h and r_token > h_token:  # r == h: H's next token is above R's already
            pause_point(f"{op}:r-granted")
            try:
                kind.floor(self._h, name, r_token)
            except LockError as exc:
                kind.undo(self._h, name, holder, h_token)
                kind.undo(self._r, name, holder, r_token)
                self._record(op, name, holder, ttl, h_side, r_side, ts, detail=f"h floor: {clean_error(exc)}")
                raise
        self._h_tokens.put((kind.label, name, holder), h_token, ttl)
        self._record(op, name, holder, ttl, h_side, r_side, ts)
        return r_attempt

    def _r_above(self, kind: Kind, name: str, holder: str, ttl: float, permits: int, h_token: int) -> Attempt:
        """R's grant with a token >= ``h_token``: asked as it is first (one round trip while R's counter is
        not behind H's, the steady state); a grant below ``h_token`` is given back, R's counter floored
        :data:`R_MARGIN` above ``h_token`` and R asked again."""
        attempt = kind.acquire(self._r, name, holder, ttl, permits)
        if attempt.token is None or attempt.token >= h_token:
            return attempt
        kind.undo(self._r, name, holder, attempt.token)
        pause_point(f"{kind.op('acquire')}:r-behind")
        kind.floor(self._r, name, h_token + R_MARGIN)
        pause_point(f"{kind.op('acquire')}:r-floored")
        return kind.acquire(self._r, name, holder, ttl, permits)

    def _both(self, kind: Kind, verb: str, name: str, holder: str, token: int, ttl: float | None,
              call: Callable[[Backend, int], bool]) -> bool:
        """Release or extend (``ttl`` given) on both; True only if both still held the lease."""
        op, ts, key = kind.op(verb), time.time(), (kind.label, name, holder)
        h_token = self._h_tokens.get(key) if ttl is not None else self._h_tokens.pop(key)
        h_side, h_ok, h_exc = (self._side(H, name, lambda: call(self._h, h_token), bool_side) if h_token is not None
                               else (bool_side(False), False, None))
        pause_point(f"{op}:h-{'released' if ttl is None else 'extended'}")
        r_side, r_ok, r_exc = self._side(R, name, lambda: call(self._r, token), bool_side)
        self._record(op, name, holder, ttl, h_side, r_side, ts,
                     detail="" if h_token is not None else "h token unknown")
        if ttl is not None and bool(h_ok) != bool(r_ok):  # extended on one side only: the lease is lost
            if h_ok and h_token is not None:
                kind.undo(self._h, name, holder, h_token)
            if r_ok:
                kind.undo(self._r, name, holder, token)
            self._h_tokens.pop(key)
        self._raise_first(h_exc, r_exc)
        if h_ok and r_ok and ttl is not None and h_token is not None:
            self._h_tokens.put(key, h_token, ttl)
        return bool(h_ok and r_ok)

    def _holds(self, kind: Kind, name: str, holder: str, token: int) -> bool:
        h_token = self._h_tokens.get((kind.label, name, holder))
        return (h_token is not None and kind.holds(self._h, name, holder, h_token)
                and kind.holds(self._r, name, holder, token))

    def try_acquire(self, name: str, holder: str, ttl: float, *, queue_ttl: float | None = None) -> Attempt:
        return self._acquire(LOCK, name, holder, ttl, 1)

    def release(self, name: str, holder: str, token: int) -> bool:
        return self._both(LOCK, "release", name, holder, token, None, lambda b, t: b.release(name, holder, t))

    def extend(self, name: str, holder: str, token: int, ttl: float) -> bool:
        return self._both(LOCK, "extend", name, holder, token, ttl, lambda b, t: b.extend(name, holder, t, ttl))

    def holds(self, name: str, holder: str, token: int) -> bool:
        return self._holds(LOCK, name, holder, token)

    def inspect(self, name: str) -> LockInfo | None:
        return self._r.inspect(name) or self._h.inspect(name)

    def try_acquire_permit(self, name: str, permits: int, holder: str, ttl: float) -> Attempt:
        return self._acquire(SEMAPHORE, name, holder, ttl, permits)

    def release_permit(self, name: str, holder: str, token: int) -> bool:
        return self._both(SEMAPHORE, "release", name, holder, token, None,
                          lambda b, t: b.release_permit(name, holder, t))

    def extend_permit(self, name: str, holder: str, token: int, ttl: float) -> bool:
        return self._both(SEMAPHORE, "extend", name, holder, token, ttl,
                          lambda b, t: b.extend_permit(name, holder, t, ttl))

    def holds_permit(self, name: str, holder: str, token: int) -> bool:
        return self._holds(SEMAPHORE, name, holder, token)

    # -- batches -----------------------------------------------------------------------------------
    def try_acquire_many(
        self, names: Sequence[str], holder: str, ttl: float, *, skip_done: bool = False
    ) -> dict[str, int]:
        ts = time.time()
        first = names[0] if names else ""
        h_side, h_granted, h_exc = self._side(
            H, first, lambda: self._h.try_acquire_many(names, holder, ttl, skip_done=skip_done),
            granted_side, count=len(names))
        if h_granted is None or not h_granted:
            for name in names:
                self._record("acquire_many", name, holder, ttl, _batch_side(h_side, h_granted, name),
                             NOT_ASKED, ts)
            self._raise_first(h_exc)
            return {}
        wanted = list(h_granted)
        pause_point("acquire_many:h-granted")
        r_side, r_granted, r_exc = self._side(
            R, wanted[0], lambda: self._floored_many(wanted, h_granted, holder, ttl, skip_done),
            granted_side, count=len(wanted))
        r_granted = r_granted or {}
        for name, token in h_granted.items():
            if name not in r_granted:
                LOCK.undo(self._h, name, holder, token)
        floor_exc: LockError | None = None
        if self._floor_h and r_granted:
            pause_point("acquire_many:r-granted")
            try:
                for name, token in r_granted.items():
                    LOCK.floor(self._h, name, token)
            except LockError as exc:
                floor_exc = exc
                for name, token in r_granted.items():
                    LOCK.undo(self._h, name, holder, h_granted[name])
                    LOCK.undo(self._r, name, holder, token)
        for name in names:
            r_row = _batch_side(r_side, r_granted if r_exc is None else None, name) if name in h_granted \
                else NOT_ASKED
            self._record("acquire_many", name, holder, ttl, _batch_side(h_side, h_granted, name), r_row, ts)
        self._raise_first(r_exc, floor_exc)
        for name in r_granted:
            self._h_tokens.put((LOCK.label, name, holder), h_granted[name], ttl)
        return r_granted

    def _floored_many(self, names: list[str], h_granted: dict[str, int], holder: str, ttl: float,
                      skip_done: bool) -> dict[str, int]:
        for name in names:
            LOCK.floor(self._r, name, h_granted[name])
        pause_point("acquire_many:r-floored")
        return self._r.try_acquire_many(names, holder, ttl, skip_done=skip_done)

    # -- done markers ------------------------------------------------------------------------------
    def mark_done(self, name: str, ttl: float) -> None:
        ts = time.time()
        h_side, _, h_exc = self._side(H, name, lambda: self._h.mark_done(name, ttl), ok_side)
        pause_point("mark_done:h-marked")
        r_side, _, r_exc = self._side(R, name, lambda: self._r.mark_done(name, ttl), ok_side)
        self._record("mark_done", name, "", ttl, h_side, r_side, ts)
        self._raise_first(h_exc, r_exc)

    def done(self, names: Sequence[str]) -> set[str]:
        ts = time.time()
        first = names[0] if names else ""
        h_side, h_done, h_exc = self._side(H, first, lambda: self._h.done(names), done_side,
                                           count=len(names))
        pause_point("done:h-read")
        r_side, r_done, r_exc = self._side(R, first, lambda: self._r.done(names), done_side,
                                           count=len(names))
        for name, h, r, _ in done_rows(names, h_side, h_done, r_side, r_done):
            self._record("done", name, "", None, h, r, ts)
        self._raise_first(h_exc, r_exc)
        return (h_done or set()) | (r_done or set())

    def iter_done(self) -> Iterator[tuple[str, float]]:
        merged: dict[str, float] = {}
        for backend in (self._h, self._r):
            for name, left in backend.iter_done():
                merged[name] = max(left, merged.get(name, 0.0))
        return iter(merged.items())

    # -- administration and waiting ----------------------------------------------------------------
    def set_fence_floor(self, name: str, token: int, *, semaphore: bool = False) -> None:
        self._h.set_fence_floor(name, token, semaphore=semaphore)
        self._r.set_fence_floor(name, token, semaphore=semaphore)

    def force_release(self, name: str) -> bool:
        h_held = self._h.force_release(name)
        return self._r.force_release(name) or h_held

    @contextlib.contextmanager
    def watch(self, name: str, wake: Wake, *, semaphore: bool = False, holder: str | None = None
              ) -> Iterator[None]:
        with self._h.watch(name, wake, semaphore=semaphore, holder=holder), \
                self._r.watch(name, wake, semaphore=semaphore, holder=holder):
            yield

    def ping(self) -> None:
        self._h.ping()
        self._r.ping()

    def close(self) -> None:
        """Nothing of its own: :class:`MigrationBackend` closes both backends."""


def _batch_side(side: Side, granted: dict[str, int] | None, name: str) -> Side:
    if granted is None:
        return side
    if name in granted:
        return Side(GRANTED, granted[name], side.latency)
    return Side(DENIED, latency=side.latency)


