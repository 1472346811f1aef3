"""Hand-off among many waiting asyncio tasks in one process (lockapi.aio subjects).

Per run: a task holds a name; ``tasks`` tasks (1,000 in a full run) wait for it on the same manager;
once all wait, the holder releases. Each waiter, once granted, reads ``time.monotonic_ns()``, reads it
again just before its release call, and releases at once. Grants are sequential (one holder at a time),
so ordered by grant time they form a chain: the latency of a hand-off is a grant's time minus the
previous holder's time just before its release. p50 and p99 per run, then the median over runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from tests.benchmarks.bench_stats import Figure, percentile
from tests.benchmarks.bench_subjects import TTL, Env, LockapiAsyncLocker, Subject

WAIT = 120.0


def measure(subjects: Sequence[Subject], env: Env, *, runs: int, tasks: int,
            notes: list[str]) -> dict[str, tuple[Figure, Figure]]:
    """{subject key: (p50 ms, p99 ms)} for every lockapi asyncio subject."""
    out: dict[str, tuple[Figure, Figure]] = {}
    for s in subjects:
        if not (s.aio and s.kind == "lockapi"):
            continue
        try:
            locker = s.make(env)
            assert isinstance(locker, LockapiAsyncLocker)
            try:
                p50s: list[float] = []
                p99s: list[float] = []
                for run in range(runs + 1):  # run 0 warms up
                    samples = locker.loop.run_until_complete(
                        _chain(locker.mgr, f"tasks:{s.key}:{run}", tasks if run else min(tasks, 50)))
                    if run:
                        p50s.append(percentile(samples, 0.5))
                        p99s.append(percentile(samples, 0.99))
            finally:
                locker.close()
            out[s.key] = (Figure.of(p50s), Figure.of(p99s))
        except Exception as exc:
            notes.append(f"tasks: {s.label} left out: {type(exc).__name__}: {exc}")
    return out


async def _chain(mgr: Any, name: str, tasks: int) -> list[float]:
    """Hand-off latencies (ms) of one run."""
    holder = await mgr.acquire(name, ttl=TTL)
    stamps: list[tuple[int, int]] = []

    async def waiter() -> None:
        lease = await mgr.acquire(name, ttl=TTL, wait=WAIT)
        granted = time.monotonic_ns()
        releasing = time.monotonic_ns()
        await lease.release()
        stamps.append((granted, releasing))

    waiters = [asyncio.create_task(waiter()) for _ in range(tasks)]
    while mgr.waiting < tasks:
        await asyncio.sleep(0.001)
    first_release = time.monotonic_ns()
    await holder.release()
    await asyncio.gather(*waiters)
    stamps.sort()
    previous = [first_release] + [releasing for _, releasing in stamps[:-1]]
    return [(granted - before) / 1e6 for (granted, _), before in zip(stamps, previous, strict=True)]

