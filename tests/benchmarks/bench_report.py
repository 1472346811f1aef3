"""Write docs/benchmarks.md (tables, targets) and the SVG plots in docs/img/ from one run's results."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.benchmarks.bench_contention import Contention
from tests.benchmarks.bench_memory import Memory
from tests.benchmarks.bench_migration import LEAD_SECONDS, Migration
from tests.benchmarks.bench_overhead import Overhead, slowdowns
from tests.benchmarks.bench_overhead import rows as overhead_rows
from tests.benchmarks.bench_profile import Profile
from tests.benchmarks.bench_stats import Figure, number, ratio
from tests.benchmarks.bench_subjects import BY_KEY, RAW_OF, raw_of
from tests.benchmarks.bench_svg import Bar, bar_chart

FINDINGS = Path(__file__).with_name("findings.md")
GROUP_ORDER = ("memory", "sqlite", "redis", "postgresql", "mariadb", "hazelcast")


@dataclass
class Results:
    meta: dict[str, Any]
    versions: dict[str, str]
    machine: dict[str, Any]
    notes: list[str]
    cycles: dict[str, Figure] = field(default_factory=dict)
    cycle_cpu: dict[str, Figure] = field(default_factory=dict)
    cycle_server: dict[str, Figure] = field(default_factory=dict)
    handoff: dict[str, tuple[Figure, Figure]] = field(default_factory=dict)
    tasks: dict[str, tuple[Figure, Figure]] = field(default_factory=dict)
    contention: dict[str, dict[str, Contention]] = field(default_factory=dict)
    batch: dict[str, Figure] = field(default_factory=dict)
    memory: dict[str, Memory] = field(default_factory=dict)
    migration: Migration | None = None
    profiles: list[Profile] = field(default_factory=list)
    overhead: Overhead = field(default_factory=lambda: ({}, {}))


def _label(key: str) -> str:
    return BY_KEY[key].label if key in BY_KEY else key


def _kind(key: str) -> str:
    return BY_KEY[key].kind if key in BY_KEY else "raw"


def _ordered(keys: Any) -> list[str]:
    keys = list(keys)
    order = {s: i for i, s in enumerate(BY_KEY)}
    return sorted(keys, key=lambda k: order.get(k, 999))


def _yes(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**MISSED**")


def targets(res: Results) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) rows."""
    rows: list[tuple[str, str, bool | None]] = []
    c = res.cycles
    if "redis" in c and "raw_redis" in c:
        rel = ratio(c["redis"], c["raw_redis"])
        peers = {k: f for k, f in c.items() if _kind(k) == "peer" and BY_KEY[k].group == "redis"}
        best = max(peers, key=lambda k: peers[k].median, default=None)
        rows.append(("Redis cycle no slower than raw redis-py (≥ 1.0x)", f"{rel.fmt(3)}x ({c['redis'].fmt()} vs "
                     f"{c['raw_redis'].fmt()} cycles/s)", rel.median >= 1.0))
        if best is not None:
            rows.append(("Redis cycle ahead of every peer", f"lockapi {number(c['redis'].median)}/s; best peer "
                         f"{_label(best)} {number(peers[best].median)}/s",
                         all(c["redis"].median > f.median for f in peers.values())))
    if "redis_aio" in c and "raw_redis_aio" in c:
        rel = ratio(c["redis_aio"], c["raw_redis_aio"])
        rows.append(("Redis asyncio cycle no slower than raw redis.asyncio (≥ 1.0x)",
                     f"{rel.fmt(3)}x ({c['redis_aio'].fmt()} vs {c['raw_redis_aio'].fmt()} cycles/s)",
                     rel.median >= 1.0))
    for key, limit, label in (("redis", 1.0, "Redis hand-off p50 ≤ 1 ms"),
                              ("postgresql", 5.0, "PostgreSQL hand-off p50 ≤ 5 ms")):
        if key in res.handoff:
            p50 = res.handoff[key][0]
            rows.append((label, f"{p50.fmt()} ms", p50.median <= limit))
    if "redis:acquire_many" in res.batch:
        f = res.batch["redis:acquire_many"]
        rows.append(("acquire_many ≥ 50,000 names/s on Redis", f"{f.fmt()} names/s", f.median >= 50_000))
    if res.migration is not None:
        f = res.migration.vs_off[("back to back", "shadow")]
        g = res.migration.vs_off[("paced", "shadow")]
        rows.append(("shadow p50 ≤ 1.1x off, back to back and paced", f"back to back {f.fmt(3)}x; paced "
                     f"{g.fmt(3)}x (source {res.migration.source})", f.median <= 1.1 and g.median <= 1.1))
    slow = slowdowns(getattr(res, "overhead", ({}, {})))
    if "otel_metrics" in slow:
        f, g = slow["otel_metrics"]
        rows.append(("Redis cycle with OpenTelemetry metrics ≤ 1.05x plain", f"{f.fmt(3)}x slower (client CPU "
                     f"{g.fmt(3)}x)", f.median <= 1.05))
    lockapi_one = {k: v["one"] for k, v in res.contention.items() if _kind(k) == "lockapi"}
    if lockapi_one:
        starved = {k: v for k, v in lockapi_one.items() if v.starved_runs}
        worst = min(lockapi_one, key=lambda k: lockapi_one[k].fairness.median)
        text = (f"starved in some run: {', '.join(_label(k) for k in starved) or 'none'}; lowest min/max "
                f"{number(lockapi_one[worst].fairness.median, 2)} ({_label(worst)})")
        rows.append(("No client starved under contention (lockapi, one name)", text, not starved))
    return rows


def _svg(folder: Path, name: str, text: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return f"img/{name}"


def write(res: Results, out: Path) -> None:
    img = out.parent / "img"
    m = res.meta
    lines: list[str] = []
    add = lines.append
    add("# Benchmarks\n")
    add(f"Generated by `{m['command']}` on {m['started']} ({m['elapsed']:.0f} s"
        f"{', QUICK smoke run: figures are not meaningful' if m['quick'] else ''}). Do not edit by hand: "
        "re-run the command. Hand-written findings come from `tests/benchmarks/findings.md`.\n")
    add("Everything below was measured side by side in one run, against the same local servers started by "
        "the harness (loopback), on the same machine. **Every figure is the median of "
        f"{m['runs']} runs, with the spread (min-max over the runs) in brackets.**\n")
    add("## Machine, load and versions\n")
    mc = res.machine
    add(f"- Machine: {mc['cpu']}, {mc['cores']} cores, {mc['memory']} RAM, Linux {mc['kernel']}")
    add(f"- Load average (1/5/15 min): before {m['load_before']}, after {m['load_after']} — the machine is "
        "shared with other work, so absolute numbers carry that noise; ratios are taken run by run. The "
        "hand-off and contention sections run 2-5 busy processes of their own, which the load includes.")
    if m.get("loads"):
        add("- Load (1 min) at the start of each section: " + "; ".join(
            f"{what} {load.split(' / ')[0]}" for what, load in m["loads"]))
    for k, v in res.versions.items():
        add(f"- {k}: {v}")
    add("")
    add("## Targets\n")
    add("| target | measured | |")
    add("|---|---|---|")
    for target, measured, ok in targets(res):
        add(f"| {target} | {measured} | {_yes(ok)} |")
    add("")
    if FINDINGS.is_file():
        add(FINDINGS.read_text().strip() + "\n")

    # -- cycles
    if res.cycles:
        add("## Uncontended acquire+release cycles\n")
        add(f"One process, one name, `try_acquire` then `release`, for {m['cycle_seconds']} s per run; the runs "
            "of all subjects interleave (round i measures every subject once). `vs raw` is the run-by-run "
            "ratio to the raw client of the same server doing the minimum: Redis `SET NX PX` + Lua "
            "compare-and-delete; SQLite/PostgreSQL/MariaDB one conditional `UPDATE` taking a pre-created row "
            "with the database clock and returning `fence + 1` (issue #14's anchor; MariaDB through "
            "`LAST_INSERT_ID(expr)`), one giving it back (autocommit); Hazelcast `IMap.try_lock`/`unlock`. "
            "`client CPU` is the "
            "benchmark process's CPU time per cycle (all its threads): the client library's own cost, which "
            "the machine's load barely moves, unlike the rate.\n")
        if res.cycle_server:
            add("On Redis, where the server reports it (`INFO commandstats`), `server µs/cycle` is the time "
                "redis-server spent executing the cycle's commands and scripts.\n")
        add("| server | subject | cycles/s | vs raw | client CPU µs/cycle | CPU vs raw | server µs/cycle |")
        add("|---|---|---|---|---|---|---|")
        for key in _ordered(res.cycles):
            s = BY_KEY[key]
            raw = raw_of(key)
            rel = cpu_rel = ""
            if raw in res.cycles and raw != key:
                rel = ratio(res.cycles[key], res.cycles[raw]).fmt(2) + "x"
                cpu_rel = ratio(res.cycle_cpu[key], res.cycle_cpu[raw]).fmt(2) + "x"
            cpu = res.cycle_cpu[key].fmt() if key in res.cycle_cpu else ""
            add(f"| {s.group} | {s.label} | {res.cycles[key].fmt()} | {rel} | {cpu} | {cpu_rel} | "
                f"{res.cycle_server[key].fmt() if key in res.cycle_server else ''} |")
        add("")
        for group in GROUP_ORDER:
            keys = [k for k in _ordered(res.cycles) if BY_KEY[k].group == group]
            if len(keys) > 1:
                raw = RAW_OF.get(group)
                target = res.cycles[raw].median if group == "redis" and raw in res.cycles else None
                path = _svg(img, f"bench_cycles_{group}.svg", bar_chart(
                    f"Uncontended acquire+release, {group}", "cycles/s",
                    [Bar(_label(k), res.cycles[k], _kind(k)) for k in keys], target=target,
                    target_label="raw"))
                add(f"![cycles on {group}]({path})\n")
        if res.cycles:
            others = [k for k in _ordered(res.cycles) if BY_KEY[k].kind == "lockapi"]
            path = _svg(img, "bench_cycles_lockapi.svg", bar_chart(
                "lockapi per backend, uncontended cycles", "cycles/s",
                [Bar(_label(k), res.cycles[k], "lockapi") for k in others], log=True))
            add(f"![lockapi per backend]({path})\n")

    # -- hand-off
    if res.handoff:
        add("## Hand-off latency\n")
        add("A holder in another process releases; the waiter here is blocked in `acquire`. Latency = the "
            "waiter's `time.monotonic_ns()` right after its acquire returns minus the holder's, read just "
            "before its release call (sent through a pipe). The holder releases after a random delay that "
            "spans the waiter's poll period for subjects that poll, so polls are hit at a random phase. "
            f"{m['handoff_rounds']} hand-offs per run ({m['handoff_slow_rounds']} for polling subjects); p50 "
            "and p99 are per run, then the median over runs.\n")
        add("| server | subject | wake-up | p50 ms | p99 ms |")
        add("|---|---|---|---|---|")
        for key in _ordered(res.handoff):
            s = BY_KEY[key]
            how = f"poll {s.poll * 1000:.0f} ms" if s.poll else "push"
            if s.kind == "lockapi" and s.poll:
                how = "poll 2→50 ms backoff"
            if s.key == "tooz_mysql":
                how = "poll, backoff to 1 s"
            if s.key == "tooz_postgresql":
                how = "server-side wait (pg_advisory_lock)"
            if s.key == "raw_hazelcast":
                how = "server-side wait (try_lock timeout)"
            if s.key == "python_redis_lock":
                how = "BLPOP signal list"
            p50, p99 = res.handoff[key]
            add(f"| {s.group} | {s.label} | {how} | {p50.fmt()} | {p99.fmt()} |")
        add("")
        keys = _ordered(res.handoff)
        path = _svg(img, "bench_handoff_p50.svg", bar_chart(
            "Hand-off latency p50 (release in one process -> grant in another)", "milliseconds",
            [Bar(f"{_label(k)}", res.handoff[k][0], _kind(k)) for k in keys], log=True))
        add(f"![hand-off p50]({path})\n")

    # -- hand-off among waiting tasks
    tasks = getattr(res, "tasks", {})  # absent from results saved before this section existed
    if tasks:
        add("## Hand-off among waiting asyncio tasks\n")
        add(f"One process, one event loop: a task holds a name while {m.get('tasks', '?')} tasks wait for it on "
            "the same `lockapi.aio` manager; then each waiter, once granted, releases at once. Latency = a "
            "grant's `time.monotonic_ns()` minus the previous holder's, read just before its release. p50 and "
            "p99 per run (one hand-off per waiter), then the median over runs.\n")
        add("| server | subject | waiting tasks | p50 ms | p99 ms |")
        add("|---|---|---|---|---|")
        for key in _ordered(tasks):
            p50, p99 = tasks[key]
            add(f"| {BY_KEY[key].group} | {_label(key)} | {m.get('tasks', '?')} | {p50.fmt()} | {p99.fmt()} |")
        add("")

    # -- contention
    if res.contention:
        add("## Contention\n")
        add(f"{m['processes']} worker processes loop blocking `acquire` + immediate `release` (no work while "
            f"holding — the harshest case) for {m['contention_seconds']} s per run; **one name** all compete "
            f"for, and **many names** ({m['many']} names, each pick random). Throughput = grants/s over all "
            "workers. Fairness = min/max grants per worker within a run (1.0 even, 0 = a worker got nothing); "
            "`starved` = runs in which some worker got no grant at all. On many names, collisions are rare: "
            "the spread there mostly shows how the two cores were shared between the workers, not the lock.\n")
        add("| server | subject | one name: grants/s | fairness min/max | min grants per worker | starved "
            "runs | many names: grants/s | fairness |")
        add("|---|---|---|---|---|---|---|---|")
        for key in _ordered(res.contention):
            s = BY_KEY[key]
            one, many = res.contention[key]["one"], res.contention[key]["many"]
            errs = one.errors + many.errors
            if errs:
                res.notes.append(f"contention: {s.label}: {errs} acquires raised; first: {one.error or many.error}")
            add(f"| {s.group} | {s.label}{f' ({errs} errors)' if errs else ''} | {one.throughput.fmt()} | "
                f"{one.fairness.fmt(2)} | {one.min_grants.fmt(0)} | {one.starved_runs}/{m['runs']} | "
                f"{many.throughput.fmt()} | {many.fairness.fmt(2)} |")
        add("")
        keys = _ordered(res.contention)
        path = _svg(img, "bench_contention_one.svg", bar_chart(
            f"{m['processes']} processes on one name: grants/s", "grants/s",
            [Bar(_label(k), res.contention[k]["one"].throughput, _kind(k)) for k in keys], log=True))
        add(f"![contention throughput]({path})\n")
        path = _svg(img, "bench_contention_fairness.svg", bar_chart(
            f"{m['processes']} processes on one name: fairness (min/max grants per worker)", "min/max",
            [Bar(_label(k), res.contention[k]["one"].fairness, _kind(k)) for k in keys]))
        add(f"![contention fairness]({path})\n")

    # -- batch
    if res.batch:
        add("## Batch claim\n")
        add(f"Names granted per second, in calls of {m['batch']} fresh names: `mgr.acquire_many(names)` and "
            "the job API's `jobs().lock_many(job, names)` (which also checks done markers). The Redis raw "
            "reference is a non-transactional pipeline of `SET NX PX` (no fencing token, not atomic).\n")
        add("| row | names/s |")
        add("|---|---|")
        for key, f in res.batch.items():
            subject, _, op = key.partition(":")
            label = f"{_label(subject)} `{op}`" if op else "raw redis-py pipeline of SET NX PX"
            add(f"| {label} | {f.fmt()} |")
        add("")
        path = _svg(img, "bench_batch.svg", bar_chart(
            f"Batch claim ({m['batch']} names per call)", "names/s",
            [Bar(k.replace(":", " "), f, "raw" if k == "raw_redis" else "lockapi") for k, f in res.batch.items()],
            log=True, target=50_000 if "redis:acquire_many" in res.batch else None,
            target_label="50k target (redis)"))
        add(f"![batch]({path})\n")

    # -- migration
    add("## Migration phases\n")
    if res.migration is None:
        add("Not measured in this run (see the notes at the end).\n")
    else:
        mg = res.migration
        blocks = getattr(mg, "blocks", 0)
        per_run = (f"{blocks} blocks of {m['migration_ops'] // max(blocks, 1)} timed acquires per pace, phase and "
                   f"run, the blocks of the three phases interleaved (their order rotating) so that drift hits "
                   f"them alike; each block starts with {LEAD_SECONDS * 1000:g} ms of untimed acquires, which bring "
                   "the shadow's background replay to its steady state, and ends with a flush of its phase's "
                   "background work outside the timed calls (queued replays run, records and lag written), so no "
                   "phase's replays or records ever run during another phase's timed calls (the one batch of records "
                   "a flush writes per block is thus in no timed window; in steady state a writer thread writes "
                   "them every 0.2 s). A run's p50 and p99 "
                   "are those of its pooled samples; `vs off` is each run's ratio of p50s"
                   if blocks else f"{m['migration_ops']} acquires per phase and run, phases interleaved; `vs off` "
                   "is the run-by-run ratio of p50s")
        add(f"`try_acquire` latency through `migration://` with source H = {mg.source} and target R = "
            f"{mg.target} (decision records on the same Redis), {per_run}; figures are medians over runs. "
            "*Back to back*: the next acquire right after the release, so the shadow's queued work competes "
            "with it for the cores and the GIL; *paced*: a 2 ms pause after each release (an application "
            "doing work between locks).\n")
        add("| pace | phase | p50 µs | p99 µs | p50 vs off |")
        add("|---|---|---|---|---|")
        for pace, p in mg.p50_us:
            rel = mg.vs_off[(pace, p)].fmt(2) + "x" if (pace, p) in mg.vs_off else ""
            add(f"| {pace} | {p} | {mg.p50_us[(pace, p)].fmt()} | {mg.p99_us[(pace, p)].fmt()} | {rel} |")
        add("")
        path = _svg(img, "bench_migration.svg", bar_chart(
            f"Acquire latency p50 per migration phase ({mg.source} -> {mg.target})", "microseconds",
            [Bar(f"{p} ({pace})", f) for (pace, p), f in mg.p50_us.items()],
            target=mg.p50_us[("back to back", "off")].median * 1.1, target_label="1.1x off (back to back)"))
        add(f"![migration]({path})\n")

    # -- memory
    if res.memory:
        add("## Redis memory per held lock\n")
        add(f"`INFO memory` `used_memory` before and after taking {m['memory_count']} distinct locks (held), over "
            "the count; and after releasing them all (what stays per name). The database is flushed before "
            "each run.\n")
        add("| subject | bytes per held lock | bytes left per released name |")
        add("|---|---|---|")
        for key in _ordered(res.memory):
            mm = res.memory[key]
            add(f"| {_label(key)} | {mm.held.fmt(0)} | {mm.left.fmt(0)} |")
        add("")
        path = _svg(img, "bench_memory.svg", bar_chart(
            "Redis memory per held lock", "bytes",
            [Bar(_label(k), res.memory[k].held, _kind(k)) for k in _ordered(res.memory)]))
        add(f"![memory]({path})\n")

    # -- instrumentation overhead
    overhead = getattr(res, "overhead", ({}, {}))
    if overhead[0]:
        add("## Instrumentation overhead\n")
        add(f"The uncontended Redis cycle ({m['cycle_seconds']} s per run, runs interleaved as above), plain and "
            "with each observability adapter installed on its manager (`lockapi.instrument(..., manager=)`). "
            "`slower` is the run-by-run ratio plain cycles/s ÷ instrumented cycles/s (1.05x = 5 % slower); "
            "`CPU` is the instrumented client's CPU per cycle over the plain one's. Each slice ends by settling "
            "its adapter's background work (the metrics queue, the span processor) and counts it, so the "
            "figures are the whole cost, as on a machine without an idle core. OpenTelemetry runs on its "
            "SDK (in-memory metric reader; traces: batch processor, every span sampled, exporter dropping "
            "them).\n")
        add("| subject | cycles/s | slower | client CPU µs/cycle | CPU vs plain |")
        add("|---|---|---|---|---|")
        for label, rate, slower, cpu, cpu_rel in overhead_rows(overhead):
            add(f"| {label} | {rate} | {slower} | {cpu} | {cpu_rel} |")
        add("")

    # -- profiles
    if res.profiles:
        add("## Profiles of one uncontended cycle\n")
        add("cProfile over the same try_acquire+release loop; times per cycle (the profiler itself inflates "
            "them: compare rows, not totals). Top functions by own time.\n")
        for p in res.profiles:
            add(f"### {p.label}\n")
            add(f"{number(p.plain_us)} µs per cycle without the profiler, {number(p.profiled_us)} µs with it "
                f"({p.cycles} cycles).\n")
            add("| function | calls/cycle | own µs/cycle | cumulative µs/cycle |")
            add("|---|---|---|---|")
            for r in p.rows:
                add(f"| `{r.where}` | {number(r.calls)} | {number(r.own_us)} | {number(r.cum_us)} |")
            add("")

    add("## Notes, left-out rows and parameters\n")
    for note in res.notes or ["nothing was left out."]:
        add(f"- {note}")
    params = ", ".join(f"{k}={v}" for k, v in m.items() if k not in ("command", "started", "elapsed",
                                                                        "load_before", "load_after", "loads"))
    add(f"- Parameters: {params}")
    add("")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


def finite(value: float) -> bool:
    return not math.isnan(value) and not math.isinf(value)
