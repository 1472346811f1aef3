"""Uncontended acquire+release cycles per second, every subject in one process, runs interleaved.

Run i of every subject is measured in round i, so a load change on the machine hits all of them alike
and ratios are taken run by run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from tests.benchmarks.bench_stats import Figure
from tests.benchmarks.bench_subjects import Env, Locker, Subject

WARMUP = 0.3
"""Longest warm-up per subject, seconds."""


def cycle_rate(locker: Locker, name: str, seconds: float) -> tuple[float, float]:
    """(cycles/s, this process's CPU µs per cycle) of try_acquire+release on ``name`` for about ``seconds``."""
    count = 0
    cpu = time.process_time()
    start = time.perf_counter()
    end = start + seconds
    now = start
    while now < end:
        for _ in range(10):
            handle = locker.try_acquire(name)
            if handle is None:
                raise RuntimeError(f"uncontended try_acquire({name!r}) was refused")
            locker.release(handle)
        count += 10
        now = time.perf_counter()
    return count / (now - start), (time.process_time() - cpu) / count * 1e6


def measure(subjects: Sequence[Subject], env: Env, *, runs: int, seconds: float,
            notes: list[str]) -> tuple[dict[str, Figure], dict[str, Figure]]:
    """({key: cycles/s}, {key: client CPU µs per cycle}).

    The CPU figure is this process's CPU time (all its threads) per cycle: the client's own cost, which
    the load of other processes on the machine barely changes, unlike the rate.
    """
    lockers: dict[str, Locker] = {}
    for s in subjects:
        try:
            locker = s.make(env)
            cycle_rate(locker, f"cycle:{s.key}", min(seconds, WARMUP))
            lockers[s.key] = locker
        except Exception as exc:
            notes.append(f"cycles: {s.label} left out: {type(exc).__name__}: {exc}")
    results: dict[str, list[float]] = {k: [] for k in lockers}
    cpu: dict[str, list[float]] = {k: [] for k in lockers}
    try:
        for _ in range(runs):
            for key, locker in lockers.items():
                rate, used = cycle_rate(locker, f"cycle:{key}", seconds)
                results[key].append(rate)
                cpu[key].append(used)
    finally:
        for locker in lockers.values():
            try:
                locker.close()
            except Exception as exc:
                notes.append(f"cycles: close failed: {exc!r}")
    return {k: Figure.of(v) for k, v in results.items()}, {k: Figure.of(v) for k, v in cpu.items()}
