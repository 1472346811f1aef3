"""Migration phases: try_acquire latency through ``migration://`` in off, shadow and dual, on the same
source (H) and target (R) servers; p50 per run, and the run-by-run ratio to off.

Two paces: back to back (the next acquire right after the release: shadow work queued in the background
competes for the two cores and the GIL with the measured call) and paced (a pause of ``GAP`` seconds after
each release, as an application doing work between locks would leave).

Between rows (outside the timed calls) each node's replay queue is drained (the records are still written
by their background writer, as in steady state), so a row's figures include the background work of its
own acquires and never that of another phase's."""

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


@dataclass(frozen=True)
class Migration:
    source: str
    target: str
    p50_us: dict[tuple[str, str], Figure]
    """(pace, phase) -> p50 microseconds."""
    p99_us: dict[tuple[str, str], Figure]
    vs_off: dict[tuple[str, str], Figure]
    """(pace, shadow|dual) -> run-by-run ratio of p50 to off's."""


def _manager(env: Env, source: str, phase: str) -> Any:
    import lockapi

    options: dict[str, Any] = {"source": env[URL_KEY[source]], "target": env["redis_url"], "phase": phase,
                               "node": f"bench-{phase}"}
    if phase != "off":
        options["record"] = env["redis_url"]
    backend = lockapi.open_backend("migration://", options)
    return lockapi.LockManager(backend, url=f"migration({source} -> redis, {phase})")


def _drain(mgr: Any) -> None:
    """Wait until ``mgr``'s replays have run (records are still written by their own background writer)."""
    queue = getattr(mgr.backend, "queue", None)
    if queue is not None:
        queue.drain(10.0)


def _latencies(mgr: Any, name: str, ops: int, gap: float = 0.0) -> list[float]:
    out = []
    for _ in range(ops):
        start = time.perf_counter_ns()
        lease = mgr.try_acquire(name, ttl=TTL)
        out.append((time.perf_counter_ns() - start) / 1000)
        if lease is None:
            raise RuntimeError(f"uncontended try_acquire({name!r}) refused")
        lease.release()
        if gap:
            time.sleep(gap)
    return out


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
    p50: dict[tuple[str, str], list[float]] = {(pace, p): [] for pace in PACES for p in PHASES}
    p99: dict[tuple[str, str], list[float]] = {(pace, p): [] for pace in PACES for p in PHASES}
    try:
        for phase in PHASES:
            managers[phase] = _manager(env, source, phase)
            _latencies(managers[phase], f"migr:{phase}", max(ops // 5, 20))  # warm-up
        for _ in range(runs):
            for pace in PACES:
                for phase in PHASES:
                    lat = _latencies(managers[phase], f"migr:{phase}", ops, GAP if pace == "paced" else 0.0)
                    p50[(pace, phase)].append(percentile(lat, 0.5))
                    p99[(pace, phase)].append(percentile(lat, 0.99))
                    _drain(managers[phase])  # outside the timed calls: see the module docstring
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
                      for pace in PACES for p in ("shadow", "dual")})
