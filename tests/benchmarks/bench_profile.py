"""cProfile of uncontended acquire+release cycles: where the time of one cycle goes, per function."""

from __future__ import annotations

import cProfile
import pstats
import time
from dataclasses import dataclass

from tests.benchmarks.bench_subjects import Env, Subject


@dataclass(frozen=True)
class Row:
    where: str
    calls: float
    """Calls per cycle."""
    own_us: float
    """Own time per cycle (tottime), microseconds."""
    cum_us: float
    """Cumulative time per cycle, microseconds."""


@dataclass(frozen=True)
class Profile:
    label: str
    cycles: int
    plain_us: float
    """Microseconds per cycle without the profiler."""
    profiled_us: float
    rows: list[Row]


def _short(path: str) -> str:
    for marker in ("site-packages/", "/backends/", "/lockapi/", "/migration/"):
        if marker in path:
            return path.split(marker, 1)[1] if marker == "site-packages/" else marker.strip("/") + "/" + \
                path.split(marker, 1)[1]
    return path.rsplit("/", 1)[-1]


def profile(subject: Subject, env: Env, cycles: int, top: int = 14) -> Profile:
    locker = subject.make(env)
    name = f"profile:{subject.key}"
    try:
        for _ in range(min(200, cycles)):
            locker.release(locker.try_acquire(name))
        start = time.perf_counter()
        for _ in range(cycles):
            locker.release(locker.try_acquire(name))
        plain = (time.perf_counter() - start) / cycles * 1e6
        prof = cProfile.Profile()
        start = time.perf_counter()
        prof.enable()
        for _ in range(cycles):
            locker.release(locker.try_acquire(name))
        prof.disable()
        profiled = (time.perf_counter() - start) / cycles * 1e6
    finally:
        locker.close()
    stats = pstats.Stats(prof)
    raw = stats.stats  # type: ignore[attr-defined]
    rows = []
    for (path, line, func), (_cc, nc, tt, ct, _callers) in raw.items():
        where = f"{_short(path)}:{line}({func})" if line else func
        rows.append(Row(where, nc / cycles, tt / cycles * 1e6, ct / cycles * 1e6))
    rows.sort(key=lambda r: r.own_us, reverse=True)
    return Profile(subject.label, cycles, plain, profiled, rows[:top])
