"""Batch claim: names granted per second by ``acquire_many`` and by the job API's ``lock_many``, with
fresh (free) names each call; on Redis next to a raw pipeline of SET NX PX (no fencing, no atomicity)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence

from tests.benchmarks.bench_stats import Figure
from tests.benchmarks.bench_subjects import TTL, URL_KEY, Env, Subject, redis_client

_serial = itertools.count()


def _rate(call: Callable[[list[str]], int], batch: int, seconds: float, tag: str) -> float:
    """Names granted per second by ``call`` on fresh batches of ``batch`` names, for about ``seconds``."""
    granted = 0
    spent = 0.0
    while spent < seconds or not granted:
        names = [f"batch:{tag}:{next(_serial)}:{i}" for i in range(batch)]
        start = time.perf_counter()
        got = call(names)
        spent += time.perf_counter() - start
        if got != batch:
            raise RuntimeError(f"{tag}: {got} of {batch} fresh names granted")
        granted += got
    return granted / spent


def measure(subjects: Sequence[Subject], env: Env, *, runs: int, seconds: float, batch: int,
            notes: list[str]) -> dict[str, Figure]:
    """{row label: names/s}; rows are ``<subject key>:acquire_many``, ``<key>:lock_many`` and ``raw_redis``."""
    import lockapi

    calls: dict[str, Callable[[list[str]], int]] = {}
    closers = []
    for s in subjects:
        if s.kind != "lockapi" or s.key.endswith("_fair") or s.aio:
            continue
        try:
            mgr = lockapi.connect(env[URL_KEY[s.group]])
        except Exception as exc:
            notes.append(f"batch: {s.label} left out: {exc!r}")
            continue
        closers.append(mgr.close)
        job = lockapi.Job(f"bench-batch-{s.key}", ttl=60.0)

        def many(names: list[str], mgr: lockapi.LockManager = mgr) -> int:
            return len(mgr.acquire_many(names, ttl=60.0))

        def lock_many(names: list[str], mgr: lockapi.LockManager = mgr, job: lockapi.Job = job) -> int:
            return len(mgr.jobs().lock_many(job, names))

        calls[f"{s.key}:acquire_many"] = many
        calls[f"{s.key}:lock_many"] = lock_many
    if "redis" in env.get("groups", ()):
        r = redis_client(env)
        closers.append(r.close)
        px = int(TTL * 1000) * 6

        def raw(names: list[str]) -> int:
            pipe = r.pipeline(transaction=False)
            for n in names:
                pipe.set("rawb:" + n, "1", nx=True, px=px)
            return sum(1 for ok in pipe.execute() if ok)

        calls["raw_redis"] = raw
    results: dict[str, list[float]] = {k: [] for k in calls}
    try:
        for key, call in list(calls.items()):  # warm-up, and drop what fails
            try:
                _rate(call, batch, 0.0, key)
            except Exception as exc:
                notes.append(f"batch: {key} left out: {type(exc).__name__}: {exc}")
                del calls[key], results[key]
        for _ in range(runs):
            for key, call in calls.items():
                results[key].append(_rate(call, batch, seconds, key))
    finally:
        for close in closers:
            close()
    return {k: Figure.of(v) for k, v in results.items()}
