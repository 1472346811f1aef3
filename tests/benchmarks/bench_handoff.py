"""Hand-off latency: a holder in another process releases; how long until the waiter here is granted.

Per round: the worker acquires and says "held"; this process starts a blocking acquire; the worker
sleeps a random delay (covering the waiter's poll period, for subjects that poll, so the release falls
at a random phase of it), reads ``time.monotonic_ns()`` (system-wide on Linux), releases, and sends
that time through the pipe; the latency is the time this process reads right after its acquire returns
minus the release time. p50 and p99 are computed per run; each figure is the median over runs.
"""

from __future__ import annotations

import random
import time

from tests.benchmarks.bench_stats import Figure, percentile
from tests.benchmarks.bench_subjects import Env, Subject
from tests.benchmarks.bench_workers import Worker

WAIT = 10.0


def measure_one(s: Subject, env: Env, holder: Worker, *, runs: int, rounds: int, slow_rounds: int,
                warmup: bool = True) -> tuple[Figure, Figure]:
    """(p50 ms, p99 ms) of subject ``s``; ``holder`` is a worker process of the same subject."""
    p50s: list[float] = []
    p99s: list[float] = []
    name = f"handoff:{s.key}"
    if not s.poll:
        n = rounds
    elif s.poll <= 0.2:
        n = slow_rounds
    else:  # a poll of a second or more: fewer rounds, or the run takes minutes
        n = max(1, slow_rounds // 3)
    waiter = s.make(env)
    try:
        for run in range(0 if warmup else 1, runs + 1):  # run 0 warms up
            samples: list[float] = []
            for _ in range(n if run else 2):
                delay = 0.005 + random.uniform(0, s.poll or 0.01)
                holder.send(("handoff", name, delay))
                if holder.recv(WAIT + 5) != "held":
                    raise RuntimeError("holder out of step")
                handle = waiter.acquire(name, WAIT)
                t1 = time.monotonic_ns()
                t0 = holder.recv(WAIT + 5)
                waiter.release(handle)
                samples.append((t1 - t0) / 1e6)
            if run:
                p50s.append(percentile(samples, 0.5))
                p99s.append(percentile(samples, 0.99))
    finally:
        waiter.close()
    return Figure.of(p50s), Figure.of(p99s)
