"""Redis memory per held lock: ``used_memory`` before and after taking ``count`` distinct locks, over the
count; and what stays per name once they are all released (lockapi keeps a fencing counter per name)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tests.benchmarks.bench_stats import Figure
from tests.benchmarks.bench_subjects import Env, Subject, redis_client


@dataclass(frozen=True)
class Memory:
    held: Figure
    """Bytes per held lock."""
    left: Figure
    """Bytes per name left after every lock was released."""


def _used(r: object) -> int:
    return int(r.info("memory")["used_memory"])  # type: ignore[attr-defined]


def measure(subjects: Sequence[Subject], env: Env, *, runs: int, count: int, notes: list[str]) -> dict[str, Memory]:
    r = redis_client(env)
    out: dict[str, Memory] = {}
    try:
        for s in subjects:
            if s.group != "redis" or s.key.endswith("_fair") or s.aio:
                continue
            held: list[float] = []
            left: list[float] = []
            try:
                locker = s.make(env)
                try:
                    for run in range(runs):
                        r.flushall()
                        before = _used(r)
                        handles = [locker.try_acquire(f"mem:{run}:{i}") for i in range(count)]
                        if any(h is None for h in handles):
                            raise RuntimeError("a fresh name was refused")
                        during = _used(r)
                        for h in handles:
                            locker.release(h)
                        after = _used(r)
                        held.append((during - before) / count)
                        left.append((after - before) / count)
                finally:
                    locker.close()
            except Exception as exc:
                notes.append(f"memory: {s.label} left out: {type(exc).__name__}: {exc}")
                continue
            out[s.key] = Memory(Figure.of(held), Figure.of(left))
        r.flushall()
    finally:
        r.close()
    return out
