"""Uncontended acquire+release cycles per second, every subject in one process, runs interleaved.

Run i of every subject is measured in round i, and each run is made of ``SLICES`` short slices that
alternate between the subjects, so a load change on the shared machine hits all of them alike; ratios
are taken run by run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from tests.benchmarks.bench_stats import Figure
from tests.benchmarks.bench_subjects import BY_KEY, AsyncLocker, Env, Locker, Subject, redis_client

WARMUP = 0.3
"""Longest warm-up per subject, seconds."""
SLICES = 6
"""Slices per run: subjects alternate slice by slice."""


def cycle_rate(locker: Locker, name: str, seconds: float) -> tuple[float, float]:
    """(cycles/s, this process's CPU µs per cycle) of try_acquire+release on ``name`` for about ``seconds``."""
    count, elapsed, cpu = cycles(locker, name, seconds)
    return count / elapsed, cpu / count * 1e6


def cycles(locker: Locker, name: str, seconds: float) -> tuple[int, float, float]:
    """(cycles, wall seconds, CPU seconds of this process) of try_acquire+release on ``name`` for ~``seconds``
    (an asyncio subject runs the same loop on its event loop)."""
    if isinstance(locker, AsyncLocker):
        return locker.cycles(name, seconds)
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
    return count, now - start, time.process_time() - cpu


def _redis_usec(r: Any) -> int:
    """Microseconds redis-server spent executing commands so far (INFO commandstats, INFO itself excluded)."""
    stats = r.info("commandstats")
    return sum(int(v["usec"]) for k, v in stats.items() if k != "cmdstat_info")


Measured = tuple[dict[str, Figure], dict[str, Figure], dict[str, Figure]]


def measure(subjects: Sequence[Subject], env: Env, *, runs: int, seconds: float, notes: list[str]) -> Measured:
    """Each server group in a fresh process of its own (so one library's background threads, e.g. the
    Hazelcast client's, do not slow the others down), and its asyncio subjects in another (an event loop
    shares the process with nobody's threads, as in an asyncio application); subjects of one process
    interleave. Returns what :func:`measure_here` returns, over all groups."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    out: Measured = ({}, {}, {})
    groups = list(dict.fromkeys((s.group, s.aio) for s in subjects))
    ctx = multiprocessing.get_context("spawn")
    for group, aio in groups:
        keys = [s.key for s in subjects if s.group == group and s.aio == aio]
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            try:
                part, part_notes = pool.submit(_measure_keys, keys, env, runs, seconds).result()
            except Exception as exc:
                notes.append(f"cycles: {group}{' (asyncio)' if aio else ''} left out: {type(exc).__name__}: {exc}")
                continue
        notes.extend(part_notes)
        for whole, piece in zip(out, part, strict=True):
            whole.update(piece)
    return out


def _measure_keys(keys: list[str], env: Env, runs: int, seconds: float) -> tuple[Measured, list[str]]:
    notes: list[str] = []
    return measure_here([BY_KEY[k] for k in keys], env, runs=runs, seconds=seconds, notes=notes), notes


def measure_here(subjects: Sequence[Subject], env: Env, *, runs: int, seconds: float,
                 notes: list[str]) -> Measured:
    """({key: cycles/s}, {key: client CPU µs per cycle}, {redis key: server µs per cycle}), in this process.

    The client CPU figure is this process's CPU time (all its threads) per cycle: the client's own cost,
    which the load of other processes on the machine barely changes, unlike the rate. The server figure
    (Redis only) is the command execution time redis-server reports per cycle.
    """
    probe = redis_client(env) if any(s.group == "redis" for s in subjects) else None
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
    server: dict[str, list[float]] = {k: [] for k in lockers if BY_KEY[k].group == "redis"}
    try:
        for _ in range(runs):
            totals = {k: [0, 0.0, 0.0, 0] for k in lockers}  # cycles, wall s, CPU s, server µs
            for _slice in range(SLICES):
                for key, locker in lockers.items():
                    before = _redis_usec(probe) if key in server else 0
                    n, wall, used = cycles(locker, f"cycle:{key}", seconds / SLICES)
                    t = totals[key]
                    t[0] += n
                    t[1] += wall
                    t[2] += used
                    if key in server:
                        t[3] += _redis_usec(probe) - before
            for key, (n, wall, used, usec) in totals.items():
                results[key].append(n / wall)
                cpu[key].append(used / n * 1e6)
                if key in server:
                    server[key].append(usec / n)
    finally:
        for locker in lockers.values():
            try:
                locker.close()
            except Exception as exc:
                notes.append(f"cycles: close failed: {exc!r}")
        if probe is not None:
            probe.close()
    return ({k: Figure.of(v) for k, v in results.items()}, {k: Figure.of(v) for k, v in cpu.items()},
            {k: Figure.of(v) for k, v in server.items()})
