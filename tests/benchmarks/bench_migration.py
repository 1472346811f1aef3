"""Migration phases: try_acquire latency through ``migration://`` in off, shadow and dual, on the same
source (H) and target (R) servers; p50 per run, and the run-by-run ratio to off."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tests.benchmarks.bench_stats import Figure, percentile, ratio
from tests.benchmarks.bench_subjects import TTL, URL_KEY, Env

PHASES = ("off", "shadow", "dual")


@dataclass(frozen=True)
class Migration:
    source: str
    target: str
    p50_us: dict[str, Figure]
    p99_us: dict[str, Figure]
    vs_off: dict[str, Figure]


def _manager(env: Env, source: str, phase: str) -> Any:
    import lockapi

    options: dict[str, Any] = {"source": env[URL_KEY[source]], "target": env["redis_url"], "phase": phase,
                               "node": f"bench-{phase}"}
    if phase != "off":
        options["record"] = env["redis_url"]
    backend = lockapi.open_backend("migration://", options)
    return lockapi.LockManager(backend, url=f"migration({source} -> redis, {phase})")


def _latencies(mgr: Any, name: str, ops: int) -> list[float]:
    out = []
    for _ in range(ops):
        start = time.perf_counter_ns()
        lease = mgr.try_acquire(name, ttl=TTL)
        out.append((time.perf_counter_ns() - start) / 1000)
        if lease is None:
            raise RuntimeError(f"uncontended try_acquire({name!r}) refused")
        lease.release()
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
    p50: dict[str, list[float]] = {p: [] for p in PHASES}
    p99: dict[str, list[float]] = {p: [] for p in PHASES}
    try:
        for phase in PHASES:
            managers[phase] = _manager(env, source, phase)
            _latencies(managers[phase], f"migr:{phase}", max(ops // 5, 20))  # warm-up
        for _ in range(runs):
            for phase in PHASES:
                lat = _latencies(managers[phase], f"migr:{phase}", ops)
                p50[phase].append(percentile(lat, 0.5))
                p99[phase].append(percentile(lat, 0.99))
    except Exception as exc:
        notes.append(f"migration: left out, it failed: {type(exc).__name__}: {exc}")
        return None
    finally:
        for mgr in managers.values():
            try:
                mgr.close()
            except Exception as exc:
                notes.append(f"migration: close failed: {exc!r}")
    f50 = {p: Figure.of(v) for p, v in p50.items()}
    return Migration(source, "redis", f50, {p: Figure.of(v) for p, v in p99.items()},
                     {p: ratio(f50[p], f50["off"]) for p in ("shadow", "dual")})
