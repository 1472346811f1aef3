"""``python -m tests.benchmarks [--quick] [--groups redis,postgresql,...] [--out docs/benchmarks.md]``

Starts the local servers, runs every benchmark side by side and writes the report and its SVG plots.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.benchmarks import (
    bench_batch,
    bench_contention,
    bench_cycles,
    bench_handoff,
    bench_memory,
    bench_migration,
    bench_overhead,
    bench_profile,
    bench_report,
    bench_servers,
    bench_tasks,
)
from tests.benchmarks.bench_subjects import BY_KEY, Env, Subject, available
from tests.benchmarks.bench_workers import workers

SAVED = Path(os.environ.get("LOCKAPI_CACHE", Path.home() / ".cache" / "lockapi")) / "bench-results.pickle"
"""The last full run's results, for ``--render``."""

SECTIONS = ("cycles", "handoff", "tasks", "contention", "batch", "migration", "memory", "overhead", "profile")

FULL = {"runs": 5, "cycle_seconds": 0.6, "handoff_rounds": 40, "handoff_slow_rounds": 12, "processes": 4,
        "contention_seconds": 1.0, "many": 1000, "batch": 1000, "batch_seconds": 0.5, "migration_ops": 450,
        "memory_count": 2000, "profile_cycles": 3000, "tasks": 1000}
QUICK = {"runs": 3, "cycle_seconds": 0.05, "handoff_rounds": 3, "handoff_slow_rounds": 2, "processes": 2,
         "contention_seconds": 0.1, "many": 50, "batch": 100, "batch_seconds": 0.02, "migration_ops": 20,
         "memory_count": 100, "profile_cycles": 100, "tasks": 50}


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def _multi_process(subjects: list[Subject], env: Env, sections: set[str], params: dict[str, Any],
                   res: bench_report.Results, say: Callable[[str], None]) -> None:
    """Hand-off and contention, per subject on one pool of worker processes (spawning is the slow part)."""
    for s in subjects:
        if not (s.multi_process and s.blocking):
            continue
        contend = "contention" in sections and s.kind != "raw"
        say(f"hand-off / contention: {s.label}")
        try:
            with workers(s.key, env, params["processes"] if contend else 1) as pool:
                if "handoff" in sections:
                    res.handoff[s.key] = bench_handoff.measure_one(
                        s, env, pool[0], runs=params["runs"], rounds=params["handoff_rounds"],
                        slow_rounds=params["handoff_slow_rounds"], warmup=not params["quick"])
                if contend:
                    res.contention[s.key] = bench_contention.measure_one(
                        s, pool, runs=params["runs"], seconds=params["contention_seconds"], many=params["many"],
                        warmup=not params["quick"])
        except Exception as exc:
            res.notes.append(f"hand-off/contention: {s.label} left out: {type(exc).__name__}: {exc}")


def run(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny durations (< 1 minute)")
    parser.add_argument("--groups", default=",".join(bench_servers.ALL_GROUPS),
                        help="servers to measure (default: all): " + ",".join(bench_servers.ALL_GROUPS))
    parser.add_argument("--sections", default=",".join(SECTIONS), help="default: all: " + ",".join(SECTIONS))
    parser.add_argument("--subjects", default="", help="only these subject keys (default: all of the groups)")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (default 5)")
    parser.add_argument("--out", default="docs/benchmarks.md", help="report path (plots go to its img/ folder)")
    parser.add_argument("--render", action="store_true",
                        help=f"measure nothing: re-write the report from the last run's saved results ({SAVED}), "
                             "e.g. after editing findings.md")
    args = parser.parse_args(argv)
    if args.render:
        with SAVED.open("rb") as f:
            saved = pickle.load(f)  # written by this harness, never downloaded
        out = Path(args.out)
        bench_report.write(saved, out)
        print(f"re-wrote {out} from {SAVED}")
        return out
    params: dict[str, Any] = dict(QUICK if args.quick else FULL, quick=args.quick)
    if args.runs:
        params["runs"] = args.runs
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    wanted = {s.strip() for s in args.subjects.split(",") if s.strip()}
    unknown = (set(groups) - set(bench_servers.ALL_GROUPS)) | (sections - set(SECTIONS)) | (wanted - set(BY_KEY))
    if unknown:
        parser.error(f"unknown groups/sections/subjects: {sorted(unknown)}")
    started = time.monotonic()
    meta = {"command": "python -m tests.benchmarks" + (" " + " ".join(argv if argv is not None else sys.argv[1:])
                                                        if (argv or sys.argv[1:]) else ""),
            "started": time.strftime("%Y-%m-%d %H:%M %Z"), "load_before": _load(), **params}
    runs = params["runs"]

    loads: list[tuple[str, str]] = []
    meta["loads"] = loads

    def say(what: str) -> None:
        loads.append((what, _load()))
        print(f"[{time.monotonic() - started:6.1f}s load {_load()}] {what}", flush=True)

    with bench_servers.servers(groups) as (env, notes):
        say(f"servers up: {', '.join(env['groups'])}")
        subjects = [s for s in available(env) if not wanted or s.key in wanted]
        res = bench_report.Results(meta, bench_servers.versions(env), bench_servers.machine(), notes)
        if "cycles" in sections:
            say("cycles")
            res.cycles, res.cycle_cpu, res.cycle_server = bench_cycles.measure(subjects, env, runs=runs,
                                                                               seconds=params["cycle_seconds"],
                                                                               notes=notes)
        if sections & {"handoff", "contention"}:
            _multi_process(subjects, env, sections, params, res, say)
        if "tasks" in sections:
            say("hand-off among waiting tasks")
            res.tasks = bench_tasks.measure(subjects, env, runs=runs, tasks=params["tasks"], notes=notes)
        if "batch" in sections:
            say("batch")
            res.batch = bench_batch.measure(subjects, env, runs=runs, seconds=params["batch_seconds"],
                                            batch=params["batch"], notes=notes)
        if "migration" in sections and not wanted:
            say("migration")
            res.migration = bench_migration.measure(env, runs=runs, ops=params["migration_ops"], notes=notes)
        if "memory" in sections and "redis" in env["groups"]:
            say("memory")
            res.memory = bench_memory.measure(subjects, env, runs=runs, count=params["memory_count"], notes=notes)
        if "overhead" in sections and "redis" in env["groups"]:
            say("instrumentation overhead")
            res.overhead = bench_overhead.measure(env, runs=runs, seconds=params["cycle_seconds"], notes=notes)
        if "profile" in sections:
            say("profiles")
            for key in ("redis", "raw_redis", "postgresql"):
                s = BY_KEY[key]
                if s in subjects:
                    try:
                        res.profiles.append(bench_profile.profile(s, env, params["profile_cycles"]))
                    except Exception as exc:
                        notes.append(f"profile: {s.label} failed: {exc!r}")
    meta["load_after"] = _load()
    meta["elapsed"] = time.monotonic() - started
    out = Path(args.out)
    bench_report.write(res, out)
    if not args.quick:
        SAVED.parent.mkdir(parents=True, exist_ok=True)
        with SAVED.open("wb") as f:
            pickle.dump(res, f)
    say(f"wrote {out}")
    return out


if __name__ == "__main__":
    run()
