"""Migration phases: try_acquire latency through ``migration://`` in off, shadow and dual, on the same
source (H) and target (R) servers; p50 and p99 per run, and each run's ratio of p50s to off's.

Two paces: back to back (the next acquire right after the release: shadow work queued in the background
competes for the two cores and the GIL with the measured call) and paced (a pause of ``GAP`` seconds after
each release, as an application doing work between locks would leave).

The phases are interleaved at a fine grain so that drift (the source's latency moves with its JVM and
with the other processes on the shared machine) hits every phase alike: a run is ``ops // BLOCK`` rounds,
and each round runs one block per pace and phase, the phases' order rotating from round to round. A
block is ``LEAD_SECONDS`` of untimed acquires, then ``BLOCK`` timed ones, then a flush of the phase's
background work (``MigrationBackend.flush``: every queued replay run and every decision record and lag
sample written), outside the timed calls. A run's p50 and p99 are those of its pooled timed samples per
(pace, phase) and its ratio is shadow's (dual's) p50 over off's; the figures are medians over runs.

What the background work counts for: a block starts with nothing queued (the previous block's flush), so
its lead-in brings the replay up to its steady state (the sender gathers for 10 ms before it ships): the
timed calls then run alongside the replays of the acquires just before them, as in steady state, and the
replays of the last timed acquires, still queued at the block's end, are settled by the flush in their
place. The flush makes sure no phase's replays or records are ever run during another phase's timed
calls. Left out of every timed window: the one batch of decision records (and lag sample) the flush
writes per block, which in steady state a writer thread writes every 0.2 s (in the replay worker for
shadow, in the application's process for dual)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tests.benchmarks.bench_stats import Figure, percentile, ratio
from tests.benchmarks.bench_subjects import TTL, URL_KEY, Env

PHASES = ("off", "shadow", "dual")
PACES = ("back to back", "paced")
GAP = 0.002
"""Pause after each release in the paced rows, seconds."""
BLOCK = 30
"""Timed acquires per block (one pace and phase)."""
LEAD_SECONDS = 0.02
"""Untimed acquires before each block's timed ones, seconds (at least 3 calls): twice the replay sender's
gathering interval, so the shadow's background work is in its steady state when timing starts."""


@dataclass(frozen=True)
class Migration:
    source: str
    target: str
    p50_us: dict[tuple[str, str], Figure]
    """(pace, phase) -> p50 microseconds."""
    p99_us: dict[tuple[str, str], Figure]
    vs_off: dict[tuple[str, str], Figure]
    """(pace, shadow|dual) -> run-by-run ratio of p50 to off's."""
    blocks: int = 0
    """Blocks of ``BLOCK`` timed acquires per pace, phase and run."""


def _manager(env: Env, source: str, phase: str) -> Any:
    import lockapi

    options: dict[str, Any] = {"source": env[URL_KEY[source]], "target": env["redis_url"], "phase": phase,
                               "node": f"bench-{phase}"}
    if phase != "off":
        options["record"] = env["redis_url"]
    backend = lockapi.open_backend("migration://", options)
    return lockapi.LockManager(backend, url=f"migration({source} -> redis, {phase})")


def _settle(mgr: Any) -> None:
    """Run ``mgr``'s queued replays and write its queued records and lag (see the module docstring)."""
    flush = getattr(mgr.backend, "flush", None)
    if flush is not None:
        flush(10.0)


def _cycle(mgr: Any, name: str) -> float:
    """One acquire (timed, microseconds) and its release."""
    start = time.perf_counter_ns()
    lease = mgr.try_acquire(name, ttl=TTL)
    elapsed = (time.perf_counter_ns() - start) / 1000
    if lease is None:
        raise RuntimeError(f"uncontended try_acquire({name!r}) refused")
    lease.release()
    return elapsed


def _block(mgr: Any, name: str, ops: int, gap: float, out: list[float]) -> None:
    """Lead-in, ``ops`` timed acquires appended to ``out``, then the flush (untimed)."""
    lead_until, lead = time.perf_counter() + LEAD_SECONDS, 0
    while lead < 3 or time.perf_counter() < lead_until:
        _cycle(mgr, name)
        lead += 1
        if gap:
            time.sleep(gap)
    for _ in range(ops):
        out.append(_cycle(mgr, name))
        if gap:
            time.sleep(gap)
    _settle(mgr)


def measure(env: Env, *, runs: int, ops: int, notes: list[str]) -> Migration | None:
    groups = env.get("groups", ())
    source = next((g for g in ("hazelcast", "postgresql", "sqlite") if g in groups), None)
    if "redis" not in groups or source is None:
        notes.append("migration: left out (needs redis as the target and one other server as the source)")
        return None
    try:
        import lockapi_migration  # noqa: F401
    except ImportError as exc:
        notes.append(f"migration: left out, the migration package is not importable ({exc})")
        return None
    managers: dict[str, Any] = {}
    size = min(BLOCK, ops)
    rounds = max(1, ops // size)
    p50: dict[tuple[str, str], list[float]] = {(pace, p): [] for pace in PACES for p in PHASES}
    p99: dict[tuple[str, str], list[float]] = {(pace, p): [] for pace in PACES for p in PHASES}
    try:
        for phase in PHASES:
            managers[phase] = _manager(env, source, phase)
            _block(managers[phase], f"migr:{phase}", max(ops // 5, 20), 0.0, [])  # warm-up
        for _ in range(runs):
            samples: dict[tuple[str, str], list[float]] = {key: [] for key in p50}
            for r in range(rounds):
                order = PHASES[r % len(PHASES):] + PHASES[:r % len(PHASES)]
                for pace in PACES:
                    for phase in order:
                        _block(managers[phase], f"migr:{phase}", size, GAP if pace == "paced" else 0.0,
                               samples[(pace, phase)])
            for key, lat in samples.items():
                p50[key].append(percentile(lat, 0.5))
                p99[key].append(percentile(lat, 0.99))
    except Exception as exc:
        notes.append(f"migration: left out, it failed: {type(exc).__name__}: {exc}")
        return None
    finally:
        for mgr in managers.values():
            try:
                mgr.close()
            except Exception as exc:
                notes.append(f"migration: close failed: {exc!r}")
    f50 = {k: Figure.of(v) for k, v in p50.items()}
    return Migration(source, "redis", f50, {k: Figure.of(v) for k, v in p99.items()},
                     {(pace, p): ratio(f50[(pace, p)], f50[(pace, "off")])
                      for pace in PACES for p in ("shadow", "dual")}, rounds)
