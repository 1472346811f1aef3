"""Contention: N worker processes loop blocking acquire+release (no work in between, the harshest case)
on ONE name, and on MANY names (each pick random among ``names``). Throughput is grants/s over all
workers; fairness is min/max grants per worker in a run (1.0 = perfectly even; 0 = a worker starved).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from tests.benchmarks.bench_stats import Figure
from tests.benchmarks.bench_subjects import Subject
from tests.benchmarks.bench_workers import Worker


@dataclass(frozen=True)
class Contention:
    throughput: Figure
    fairness: Figure
    min_grants: Figure
    starved_runs: int
    errors: int
    error: str = ""
    """The first error a worker met (acquire raised), if any."""


def measure_one(s: Subject, pool: list[Worker], *, runs: int, seconds: float, many: int,
                warmup: bool = True) -> dict[str, Contention]:
    """{"one": Contention, "many": Contention} of subject ``s`` on ``pool`` (its worker processes)."""
    result = {}
    for mode, names in (("one", [f"contend:{s.key}"]), ("many", [f"contend:{s.key}:{i}" for i in range(many)])):
        thr: list[float] = []
        fair: list[float] = []
        low: list[float] = []
        starved = errors = 0
        first = ""
        for run in range(0 if warmup else 1, runs + 1):  # run 0 (short) warms up
            length = seconds if run else min(seconds, 0.3)
            start = time.monotonic_ns() + 100_000_000
            for w in pool:
                w.send(("contend", names, start, length))
            replies = [w.recv(length + 70) for w in pool]
            if not run:
                continue
            grants = [g for g, _, _ in replies]
            errors += sum(e for _, e, _ in replies)
            first = first or next((f for _, _, f in replies if f), "")
            thr.append(sum(grants) / length)
            fair.append(min(grants) / max(grants) if max(grants) else 0.0)
            low.append(float(min(grants)))
            starved += min(grants) == 0
        result[mode] = Contention(Figure.of(thr), Figure.of(fair), Figure.of(low), starved, errors, first)
    return result
